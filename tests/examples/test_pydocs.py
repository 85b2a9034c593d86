"""The Python-docs language-model example (edgekd/examples/pydocs.py): the reST reader on the real
sources, splits by document, a byte-level BPE tokenizer trained on the train split only, and tiny
builds of the project `prepare --tiny` writes. Needs the Debian package python3.11-doc (.ci/run
installs it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from edgekd.errors import DataError
from edgekd.examples import pydocs
from edgekd.examples.pydocs import clean, prepare, read, split

pytestmark = pytest.mark.skipif(not (pydocs.SOURCES / "library" / "functions.rst.txt").is_file(),
                                reason=f"the Python docs' sources are not installed ({pydocs.SOURCES}): apt-get install python3.11-doc")


def test_markup_is_taken_out_and_prose_kept():
    text = """Built-in Functions
******************

The :func:`len` function returns the length of an object, see :ref:`the table <len-table>`.
Use ``len(x)`` for *any* sequence.

.. function:: abs(x)

   Return the absolute value of a number. This body belongs to the directive.

Here is an example::

   >>> print("code is not prose, it is skipped")

- a list item that is long enough to be kept as its own paragraph here
"""
    assert clean(text) == [  # "Here is an example:" is shorter than MIN_PARAGRAPH_CHARS
        "The len function returns the length of an object, see the table. Use len(x) for any sequence.",
        "a list item that is long enough to be kept as its own paragraph here",
    ]


def test_every_page_is_read_and_split_by_document():
    docs = list(read())
    assert len(docs) > 400 and len({d.name for d in docs}) == len(docs)
    functions = next(d for d in docs if d.name == "library/functions.rst.txt")
    assert any("built into it that are always available" in p for p in functions.paragraphs)
    assert not any(":func:" in p or "``" in p or p.startswith(">>>") for d in docs for p in d.paragraphs)
    parts = split(docs, seed=0)
    names = {k: {d.name for d in v} for k, v in parts.items()}
    assert sum(map(len, names.values())) == len(docs)
    assert not names["train"] & names["test"] and not names["calib"] & names["test"] and not names["train"] & names["calib"]
    assert 0.8 < len(names["train"]) / len(docs) < 0.9
    assert {k: {d.name for d in v} for k, v in split(reversed(docs), seed=0).items()} == names  # order-free
    assert {d.name for d in split(docs, seed=1)["test"]} != names["test"]


def test_prepare_writes_the_splits_a_tokenizer_from_train_and_a_project(tmp_path):
    from transformers import AutoTokenizer

    paths = prepare(tmp_path, tiny=True)
    train = paths["train"].read_text().splitlines()
    assert 25_000 <= sum(map(len, train)) <= 32_000 and all(train)
    assert not set(train) & set(paths["test"].read_text().splitlines())
    tok = AutoTokenizer.from_pretrained(str(paths["tokenizer"]), local_files_only=True)
    assert len(tok) == pydocs.TINY.vocab_size and tok.eos_token == tok.pad_token == pydocs.END_OF_TEXT
    sample = "The len function returns the length of an object."
    assert tok.decode(tok(sample)["input_ids"]) == sample  # byte-level: no unknown tokens, exact round trip
    project = paths["project"].read_text()
    assert 'model_type = "llama"' in project and 'base = "teacher"' in project and 'kind = "causal-lm"' in project
    with pytest.raises(DataError, match="too little text"):
        prepare(tmp_path / "x", max_chars=10)
    with pytest.raises(DataError, match="holds no .*rst.txt files"):
        prepare(tmp_path / "y", source=tmp_path / "nothing")


def test_the_student_has_at_least_4x_fewer_parameters():
    from transformers import LlamaConfig, LlamaForCausalLM

    for recipe in (pydocs.FULL, pydocs.TINY):
        sizes = [LlamaForCausalLM(LlamaConfig(vocab_size=recipe.vocab_size, max_position_embeddings=recipe.max_length,
                                              tie_word_embeddings=True, **vars(m))).num_parameters()
                 for m in (recipe.teacher, recipe.student)]
        assert sizes[0] >= 4 * sizes[1], sizes


PROFILE = """description = "pydocs tiny builds: the project's one-epoch training, a short bench, loose LM budgets"
[budgets]
export_parity_max_abs_diff = 1e-3
overall_perplexity_increase_pct = 100.0
[recipe.bench]
warmup_runs = 5
min_runs = 20
max_runs = 200
max_seconds = 0.5
offline_max_batch = 4
offline_seconds = 0.05
profile_runs = 5
prompt_tokens = 16
decode_tokens = 8
[recipe.tune]
rounds = 2
runs_per_round = 20
"""


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86", "mobile-npu", "jetson-orin"])
def test_the_tiny_project_builds(tmp_path_factory, cache_dir: Path, target: str):
    folder = tmp_path_factory.getbasetemp() / "pydocs-tiny"
    if not (folder / "edgekd.toml").is_file():
        prepare(folder, tiny=True)
        (folder / "profile.toml").write_text(PROFILE)
    out = tmp_path_factory.mktemp(f"pydocs-{target}")
    code, stdout, err = run_cli(["build", "--project", str(folder / "edgekd.toml"), "--target", target,
                                 "--profile", str(folder / "profile.toml"), "--out", str(out)], cache_dir)
    assert code == 0, err[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["task"]["name"] == "causal-lm" and report["task"]["metric"]["name"] == "perplexity"
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    assert metrics["teacher.params"]["value"] >= 4 * metrics["student.params"]["value"]
    for model in ("teacher", "student", "engine"):  # learned something: far below a uniform guess over the vocabulary
        assert 1 < metrics[f"{model}.perplexity"]["value"] < pydocs.TINY.vocab_size / 2, model
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    if target == "x86":  # measured here; the other targets' engines run on their device (estimated, said so)
        assert metrics["latency.decode_tokens_per_s"]["method"] == "measured"
        _genai_generates_text(out)


def _genai_generates_text(out: Path) -> None:
    """The x86 engine's onnxruntime-genai folder (edgekd.backends.ort.genai) carries the build's tokenizer: genai
    encodes a prompt to the ids the build's own tokenizer gives and generates from it with the engine."""
    og = pytest.importorskip("onnxruntime_genai")
    from transformers import AutoTokenizer

    model = og.Model(str(out / "engine"))
    tokenizer, text = og.Tokenizer(model), "The Python interpreter reads the"
    ids = tokenizer.encode(text)
    assert list(ids) == AutoTokenizer.from_pretrained(str(out / "tokenizer"))(text)["input_ids"]
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 6)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    sequence = generator.get_sequence(0)
    assert len(sequence) > len(ids) and tokenizer.decode(sequence).startswith(text)
    latency = json.loads((out / "report.json").read_text())["latency"]
    assert latency["decode"]["onnxruntime_genai"]["same_tokens_as_loop"] is True
