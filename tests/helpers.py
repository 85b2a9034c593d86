"""Helpers shared by the test modules (import them from here, not from conftest: a package folder may
have its own conftest.py, and `conftest` would then name the wrong module)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ZOO_ARCHS = ("resnet", "mobilenet_v2", "efficientnet", "vit", "bert", "distilbert", "gpt2")
ZOO_EXPORTERS = ("optimum", "torch")
ZOO = [(arch, exporter) for arch in ZOO_ARCHS for exporter in ZOO_EXPORTERS]
# a profile's short bench and tuning, for builds whose latency no test asserts
FAST_PROFILE = """
[recipe.bench]
warmup_runs = 3
min_runs = 10
max_runs = 40
max_seconds = 0.5
offline_max_batch = 2
offline_seconds = 0.05
profile_runs = 2
compare = false

[recipe.tune]
rounds = 1
runs_per_round = 5
warmup_runs = 2
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


PERPLEXITIES = {"teacher": 20.0, "student": 23.0, "onnx_fp32": 23.0, "int8": 24.15, "engine": 24.15}
PERPLEXITY_BUDGETS = {"distill_perplexity_increase_pct": 20.0, "export_perplexity_increase_pct": 0.5,
                      "quantize_perplexity_increase_pct": 10.0, "overall_perplexity_increase_pct": 25.0}


def as_perplexity(report: dict, perplexities: dict[str, float] | None = None, budgets: dict | None = None) -> dict:
    """A copy of `report` (a real build's report.json, or one shaped like it) as a build of a task
    measured by perplexity would write it: report["task"] says causal-lm / perplexity, every
    `<model>.accuracy` stage metric becomes `<model>.perplexity` with the value from `perplexities`,
    report["perplexity"] holds them (report["accuracy"] is empty), the profile gains the perplexity
    budgets (`budgets`, default PERPLEXITY_BUDGETS) and every stage's verdicts are re-checked by
    edgekd.pipeline.budgets for perplexity, as the build's runner checks them."""
    import copy

    from edgekd.config.models import Budgets
    from edgekd.pipeline import budgets as rules
    from edgekd.pipeline.results import Metric
    from edgekd.report.quality import task_json
    from edgekd.tasks.specs import PERPLEXITY

    values = {**PERPLEXITIES, **(perplexities or {})}
    out = copy.deepcopy(report)
    out["task"] = task_json("causal-lm", PERPLEXITY)
    out["profile"]["budgets"] = {**out["profile"]["budgets"], **(PERPLEXITY_BUDGETS if budgets is None else budgets)}
    limits, so_far, rows = Budgets.model_validate(out["profile"]["budgets"]), {}, {}
    for stage in out["stages"]:
        for name in [n for n in stage["metrics"] if n.endswith(".accuracy")]:
            row = name.removesuffix(".accuracy")
            del stage["metrics"][name]
            stage["metrics"][f"{row}.perplexity"] = rows[row] = {
                "value": values[row], "unit": "", "method": "measured", "how": "exp(mean next-token NLL) over 4096 test tokens"}
        so_far.update({k: Metric.from_json(v) for k, v in stage["metrics"].items()})
        if stage["status"] != "not run":
            stage["verdicts"] = [v.to_json() for v in rules.check(stage["name"], so_far, limits, PERPLEXITY)]
    out["accuracy"], out["perplexity"] = {}, rows
    out["failed_budgets"] = [v for s in out["stages"] for v in s["verdicts"] if v["status"] == "fail"]
    out["verdict"] = "fail" if out["failed_budgets"] else "pass"
    return out


def run_cli(argv: list[str], cache_dir: Path) -> tuple[int, str, str]:
    """`edgekd ARGV` in this process with EDGEKD_CACHE_DIR=cache_dir: (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import pytest

    from edgekd.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEKD_CACHE_DIR", str(cache_dir))
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
    finally:
        mp.undo()
    return code, out.getvalue(), err.getvalue()


def train_word_tokenizer(texts: list[str], path: Path) -> Path:
    """A word-level tokenizer ([PAD], [UNK] + the words of `texts`) trained here, saved as `path`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    tok.save(str(path))
    return path


def small_tmpfs(folder: Path, size: str = "1m"):  # noqa: ANN201 - a context manager of Path
    """A context manager: a tmpfs of `size` mounted on `folder` for the block (needs root and
    permission to mount: the test is skipped otherwise)."""
    import shutil
    import subprocess
    from contextlib import contextmanager

    import pytest

    @contextmanager
    def mounted():  # noqa: ANN202
        folder.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=False)

    return mounted()


# ---------------------------------------------------------------- transformer attention masks


def padded_masks(feeds: dict, seed: int = 3) -> dict:
    """`feeds` with right-padded attention masks (a tokenizer's padding: 10 to 100 real tokens)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mask = np.ones_like(feeds["attention_mask"])
    for row in range(len(mask)):
        mask[row, rng.integers(10, 100):] = 0
    return {**feeds, "attention_mask": mask}


def softmax_outputs(model_path: Path, feeds: dict) -> np.ndarray:
    """Every Softmax output of `model_path` (after its Q/DQ pair where it has one), run on the CPU EP:
    [softmax, batch, heads, query, key]."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    consumers = {i: n for n in model.graph.node for i in n.input}
    names = []
    for node in (n for n in model.graph.node if n.op_type == "Softmax"):
        name = node.output[0]
        if consumers.get(name) is not None and consumers[name].op_type == "QuantizeLinear":
            name = consumers[consumers[name].output[0]].output[0]
        names.append(name)
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = len(feeds["input_ids"])
    runs = [session.run(names, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(rows)]
    return np.stack([np.concatenate([run[s] for run in runs]) for s in range(len(names))])
