"""Bad inputs a user gives, across the commands: each is exit 2 (or the documented code), one line
naming the input with a hint, no traceback, and nothing left in the build folder. The build cases
stop in the preflight (edgekd.stages.preflight), before any training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import write

from edgekd.config.loading import BUILTIN_EXAMPLE

DIGITS = BUILTIN_EXAMPLE.read_text()
LONG = "x" * 300


def _project(tmp_path: Path, *replacements: tuple[str, str], extra: str = "") -> Path:
    text = DIGITS
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return write(tmp_path / "edgekd.toml", text + extra)


def _student(factory: str, args: str = "{}") -> tuple[str, str]:
    return ('[student]\nfactory = "edgekd.examples.digits:student"\nargs = { width = 8 }', f'[student]\nfactory = "{factory}"\nargs = {args}')


def _losses(losses: str) -> tuple[str, str]:
    return ("[distill]\n", f"[distill]\nlosses = {losses}\n")


def _onnx_teacher(tmp_path: Path, classes: int, outputs: int = 1) -> tuple[str, str]:
    """A linear ONNX teacher over the 8x8 digits with `classes` outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, classes)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes])]
    for i in range(1, outputs):
        nodes.append(helper.make_node("Identity", ["flat"], [f"extra{i}"]))
        outs.append(helper.make_tensor_value_info(f"extra{i}", TensorProto.FLOAT, ["n", 64]))
    graph = helper.make_graph(nodes, "teacher", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 8, 8])],
                              outs, [weight, shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "teacher.onnx"))
    old = '[teacher]\nfactory = "edgekd.examples.digits:teacher"\nargs = { width = 32 }\n\n[teacher.train]\nepochs = 15\nlr = 0.002\nbatch_size = 64\nseed = 0\n'
    return old, '[teacher]\nkind = "onnx"\nonnx = "teacher.onnx"\n'


# (id, project replacements, expected words in the error line)
BUILD_CASES = [
    ("teacher-factory-raises", [("edgekd.examples.digits:teacher", "badfactories:teacher_raises")],
     ["teacher.factory", "badfactories:teacher_raises", "ValueError: boom in the teacher factory", "badfactories.py"]),
    ("data-factory-raises", [("edgekd.examples.digits:load", "badfactories:data_raises")],
     ["data.factory", "RuntimeError: the data is not there"]),
    ("student-returns-str", [_student("badfactories:student_str")], ["student.factory", "returned str, not a torch.nn.Module"]),
    ("student-returns-tuple", [_student("badfactories:student_tuple")], ["student.factory", "returned tuple"]),
    ("student-3-classes", [_student("badfactories:student_classes", "{ num_classes = 3 }")],
     ["student outputs 3 classes", "has 10"]),
    ("student-12-features", [_student("badfactories:student_features", "{ features = 12 }")],
     ["the student (badfactories:student_features) on one batch", "RuntimeError", "12x10"]),
    ("student-returns-dict", [_student("badfactories:student_dict")], ["returned dict, not a logits tensor"]),
    ("student-forward-raises", [_student("badfactories:student_forward_raises")], ["KeyError", "my forward is broken", "badfactories.py"]),
    ("nan-in-train", [("edgekd.examples.digits:load", "badfactories:digits_nan_train")],
     ["split 'train' input 'input' has 1 NaN or Inf values", "sample 3"]),
    ("inf-in-test", [("edgekd.examples.digits:load", "badfactories:digits_inf_test")], ["split 'test'", "NaN or Inf"]),
    ("unknown-loss", [_losses('[{ name = "hintn" }]')], ["distill.losses[0]", "unknown loss 'hintn'", "did you mean hinton"]),
    ("loss-param-typo", [_losses('[{ name = "hinton", params = { temprature = 2.0 } }]')], ["param 'temprature': unknown param"]),
    ("student-layer-missing", [_losses('[{ name = "hinton" }, { name = "fitnet", params = { student_layer = "nope", teacher_layer = "0" } }]')],
     ["student has no submodule 'nope'"]),
    ("teacher-layer-missing", [_losses('[{ name = "hinton" }, { name = "fitnet", params = { student_layer = "0", teacher_layer = "head.9" } }]')],
     ["teacher has no submodule 'head.9'"]),
    ("negative-epochs", [("epochs = 60", "epochs = -1")], ["distill.epochs"]),
    ("unknown-task", [('kind = "classification"', 'kind = "segmentation"')], ["segmentation"]),
]


@pytest.mark.parametrize("replacements, words", [pytest.param(r, w, id=i) for i, r, w in BUILD_CASES])
def test_bad_project_is_one_line_before_training(edgekd, tmp_path: Path, replacements: list, words: list[str]) -> None:
    project = _project(tmp_path, *replacements)
    run = edgekd("build", "--project", str(project), "--profile", "ci", out_dir=tmp_path / "out")
    _assert_user_error(run, words)
    assert "[2/10] teacher: running" not in run.err  # caught before any training
    assert not (tmp_path / "out").exists()


def test_onnx_teacher_with_other_classes_is_refused(edgekd, tmp_path: Path) -> None:
    project = _project(tmp_path, _onnx_teacher(tmp_path, classes=7))
    run = edgekd("build", "--project", str(project), "--profile", "ci", out_dir=tmp_path / "out")
    _assert_user_error(run, ["teacher outputs 7 classes", "has 10"])
    assert not (tmp_path / "out").exists()


def test_onnx_teacher_with_two_outputs_is_named_in_a_warning(tmp_path: Path) -> None:
    from edgekd.stages.preflight import check_models

    ctx = _context(_project(tmp_path, _onnx_teacher(tmp_path, classes=10, outputs=2)), tmp_path)
    _, warnings = check_models(ctx)
    assert any("2 outputs (logits, extra1)" in w and "takes the first, 'logits'" in w for w in warnings)


def _context(project: Path, tmp_path: Path):  # noqa: ANN202
    from edgekd.api import resolve_inputs
    from edgekd.config.loading import ConfigSearch

    ctx = resolve_inputs("x86", "ci", project, ConfigSearch())
    ctx.cache_root = tmp_path / "cache"
    return ctx


@pytest.mark.parametrize("where", ["out-under-a-file", "out-name-too-long", "cache-under-a-file", "cache-name-too-long"])
def test_unusable_folders_are_named(edgekd, tmp_path: Path, where: str) -> None:
    blocker = write(tmp_path / "a-file", "")
    bad = blocker / "sub" if "under-a-file" in where else tmp_path / LONG / "x"
    args = ["--out", str(bad)] if where.startswith("out") else ["--out", str(tmp_path / "out"), "--cache-dir", str(bad)]
    run = edgekd("build", "--profile", "ci", *args)
    _assert_user_error(run, [str(bad)[:60]])
    assert not (tmp_path / "out").exists()


def test_degenerate_labels_warn_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.stages.preflight import preflight

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "projects"))
    ctx = _context(_project(tmp_path, ("edgekd.examples.digits:load", "badfactories:digits_one_class")), tmp_path)
    lines: list[str] = []
    preflight(ctx, tmp_path / "out", lines.append)
    assert any(line.startswith("warning:") and "every train sample has label 1" in line for line in lines)
    assert not (tmp_path / "out").exists()
    preflight(ctx, tmp_path / "out", lines.append)  # the second time from the preflight's cache entry, warning and all
    assert sum("every train sample has label 1" in line for line in lines) == 2


def test_a_model_without_graph_inputs_is_refused_by_every_model_command(edgekd, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = numpy_helper.from_array(np.ones((1, 5), np.float32), "c")
    graph = helper.make_graph([helper.make_node("Identity", ["c"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], [const])
    model = tmp_path / "constant.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    for argv in (["check", str(model), "--target", "mobile-npu"], ["estimate", str(model), "--target", "x86"],
                 ["compile", str(model), "--target", "x86", "--out", str(tmp_path / "out")], ["bench", str(model), "--target", "x86"]):
        run = edgekd(*argv)
        _assert_user_error(run, [str(model), "no inputs"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, words", [
    (["logits", "{model}", "--out", "{tmp}/l.npz", "--k", "0"], ["--k"]),
    (["distill", "--nproc", "0"], ["--nproc"]),
    (["build", "--target", "no-such-target"], ["no-such-target"]),
    (["build", "--profile", "no-such-profile"], ["no-such-profile"]),
    (["gate", "{tmp}/nothing", "--baseline", "{tmp}/nothing"], ["nothing"]),
    (["estimate", "{model}", "--target", "x86", "--batch", "0"], ["--batch"]),
    (["check", "{tmp}/missing.onnx", "--target", "x86"], ["missing.onnx"]),
    (["compile", "{model}", "--shape", "input=axb"], ["input=axb"]),
    (["estimate", "{model}", "--target", "x86", "--batch", "10000000"], ["--batch"]),
    (["distill", "--nproc", "100000"], ["--nproc"]),
    (["targets", "show", "no-such-target"], ["no-such-target"]),
    (["profiles", "show", "no-such-profile"], ["no-such-profile"]),
    (["bench", "{model}", "--target", "x86", "--threads", "100000"], ["--threads", "core"]),
    (["bench", "{tmp}", "--device", "local://{tmp}", "--runs", "99999999"], ["--runs"]),
])
def test_bad_arguments_are_one_line(edgekd, tmp_path: Path, argv: list[str], words: list[str]) -> None:
    model = write(tmp_path / "garbage.onnx", "not onnx")
    run = edgekd(*(a.format(model=model, tmp=tmp_path) for a in argv))
    _assert_user_error(run, [w.format(tmp=tmp_path) for w in words])


def test_verbose_shows_the_users_own_frames(edgekd, tmp_path: Path) -> None:
    project = _project(tmp_path, ("edgekd.examples.digits:teacher", "badfactories:teacher_raises"))
    run = edgekd("build", "--verbose", "--project", str(project), "--profile", "ci", out_dir=tmp_path / "out")
    assert run.code == 2 and "Traceback of your code" in run.err and 'raise ValueError("boom in the teacher factory")' in run.err
    assert "edgekd/" not in run.err.split("Traceback of your code")[1].split("edgekd: error")[0]  # only the user's frames


def _assert_user_error(run, words: list[str], code: int = 2) -> None:  # noqa: ANN001
    assert run.code == code, run.err
    assert "Traceback" not in run.err and "internal error" not in run.err
    errors = [line for line in run.err.splitlines() if line.startswith(("edgekd: error:", "Error:", "Usage:"))]
    assert errors, run.err
    line = next((e for e in errors if not e.startswith("Usage:")), errors[0])
    for word in words:
        assert word in run.err, (word, run.err)
    assert line.startswith("edgekd: error:") and "(hint:" in line or line.startswith("Error:"), line


def test_target_threads_beyond_this_hosts_cores_are_refused_before_training(edgekd, tmp_path: Path) -> None:
    from edgekd.common.toolchain import usable_cores

    target = write(tmp_path / "big.toml", (Path(__file__).parents[2] / "targets" / "x86-avx2.toml").read_text()
                   .replace("intra_op_num_threads = [1, 0]", f"intra_op_num_threads = [1, {usable_cores() + 1}]"))
    run = edgekd("build", "--target", str(target), "--profile", "ci", out_dir=tmp_path / "out")
    _assert_user_error(run, [str(target), "[tune] intra_op_num_threads", f"{usable_cores()} core(s)"])
    assert "[2/10] teacher: running" not in run.err and not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_and_leaves_a_visibly_incomplete_folder(edgekd, cache_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--out on a tmpfs too small for the build: the preflight's space check says so; with that check
    out of the way, the disk fills up mid-build: exit 2 naming the file, no report, the marker shows
    the folder incomplete, and the stage cache (elsewhere) holds no half-written entry."""
    from helpers import small_tmpfs

    from edgekd.pipeline.build_folder import MARKER, REPORT_DOCUMENTS
    from edgekd.stages import preflight

    with small_tmpfs(tmp_path / "small", "96k") as out:
        run = edgekd("build", "--profile", "ci", out_dir=out / "build")
        _assert_user_error(run, [str(out / "build"), "MiB free"])
        monkeypatch.setattr(preflight, "check_space", lambda *args: None)
        run = edgekd("build", "--profile", "ci", out_dir=out / "build")
        _assert_user_error(run, ["no space left on device"])
        assert (out / "build" / MARKER).is_file() and not any((out / "build" / name).exists() for name in REPORT_DOCUMENTS)
    staged = cache_dir / ".staging"
    assert not staged.exists() or not any(staged.iterdir())
