"""edgekd/distill/teachers.py: torch, ONNX, logits-file and ensemble teachers; federated aggregation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn

from edgekd.common.fsutil import sha256_file  # noqa: E402
from edgekd.distill.logits_file import read_logits_file, softmax, write_logits_file  # noqa: E402
from edgekd.distill.streaming import rows_of  # noqa: E402
from edgekd.distill.teachers import (  # noqa: E402
    EnsembleTeacher,
    LogitsFileTeacher,
    OnnxTeacher,
    TeacherSource,
    TorchTeacher,
    aggregate_logits_files,
    state_dict_sha256,
)
from edgekd.errors import ConfigError, DataError  # noqa: E402

SHA = "a" * 64
CLASSES = 5


def tiny_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, CLASSES))
    with torch.no_grad():  # non-trivial running statistics, so eval and train mode differ
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def data(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 4, 4)).astype(np.float32)


class Fixed:
    """A teacher giving fixed logits (a stand-in for any source in the ensemble tests)."""

    def __init__(self, logits: np.ndarray, name: str = "fixed") -> None:
        self._logits, self.name = logits.astype(np.float32), name

    def describe(self) -> str:
        return self.name

    def identity(self) -> dict:
        return {"kind": "fixed", "name": self.name}

    @property
    def has_features(self) -> bool:
        return False

    @property
    def reads_inputs(self) -> bool:
        return True

    def logits(self, batch: object) -> np.ndarray:
        return self._logits[: rows_of({"input": batch} if isinstance(batch, np.ndarray) else batch)]


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    """The tiny module exported with torch.onnx.export(dynamo=True) with a dynamic batch, and a copy
    of that graph with the batch fixed to 4 (a static-batch graph without a second, slow export)."""
    import onnx
    from torch.export import Dim

    folder = tmp_path_factory.mktemp("onnx")
    model = tiny_module().eval()
    dynamic, static = folder / "dynamic.onnx", folder / "static4.onnx"
    torch.onnx.export(model, (torch.zeros(2, 1, 4, 4),), str(dynamic), dynamo=True, input_names=["input"],
                      dynamic_shapes=({0: Dim("batch", min=1, max=1024)},), external_data=False, verbose=False)
    graph = onnx.load(str(dynamic))
    for value in (graph.graph.input[0], graph.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    del graph.graph.value_info[:]
    onnx.save(graph, str(static))
    return model, dynamic, static


# ------------------------------------------------------------------------------------ torch


def test_torch_teacher_runs_eval_no_grad_and_restores_mode() -> None:
    model = tiny_module()
    model.train()
    teacher = TorchTeacher(model, None, "torch module tests:tiny", batch_size=3)
    x = data()
    logits = teacher.logits(x)
    assert logits.shape == (10, CLASSES) and logits.dtype == np.float32
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-6)
    model.train()
    teacher.logits(x)
    assert model.training  # mode restored
    np.testing.assert_array_equal(teacher.logits(x), logits)  # deterministic (dropout off)
    assert teacher.has_features and teacher.module is model and isinstance(teacher, TeacherSource)


def test_torch_teacher_identity_follows_weights_and_architecture() -> None:
    a, b = TorchTeacher(tiny_module(0), None, "m"), TorchTeacher(tiny_module(0), None, "m")
    assert a.identity() == b.identity() and a.identity()["kind"] == "torch"
    assert TorchTeacher(tiny_module(1), None, "m").identity() != a.identity()
    other_arch = tiny_module(0)
    other_arch[2] = nn.GELU()  # same weights, other activation
    assert TorchTeacher(other_arch, None, "m").identity()["weights_sha256"] == a.weights_sha256
    assert TorchTeacher(other_arch, None, "m").identity() != a.identity()
    given = TorchTeacher(tiny_module(0), "f" * 64, "torch module tests:tiny")
    assert given.weights_sha256 == "f" * 64
    assert given.describe() == "torch module tests:tiny, weights sha256 ffffffffffff…"
    assert state_dict_sha256(tiny_module(0)) == a.weights_sha256


# ------------------------------------------------------------------------------------ onnx


@pytest.mark.parametrize("which", ["dynamic", "static"])
@pytest.mark.parametrize("n", [1, 4, 10])
def test_onnx_teacher_matches_torch(onnx_files: tuple, which: str, n: int) -> None:
    model, dynamic, static = onnx_files
    teacher = OnnxTeacher(dynamic if which == "dynamic" else static, batch_size=3)
    assert teacher.static_batch == (None if which == "dynamic" else 4)
    x = data(n)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    logits = teacher.logits(x)
    assert logits.shape == (n, CLASSES) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_onnx_teacher_identity_and_errors(onnx_files: tuple, tmp_path: Path) -> None:
    _, dynamic, _ = onnx_files
    teacher = OnnxTeacher(dynamic)
    assert teacher.identity() == {"kind": "onnx", "sha256": sha256_file(dynamic)}
    assert not teacher.has_features and "dynamic.onnx" in teacher.describe() and isinstance(teacher, TeacherSource)
    with pytest.raises(DataError, match="dynamic.onnx.*shape"):
        teacher.logits(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="absent.onnx: ONNX teacher not found"):
        OnnxTeacher(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="junk.onnx: (not a readable ONNX model|ONNX Runtime cannot load)"):
        OnnxTeacher(tmp_path / "junk.onnx")


def test_onnx_teacher_identity_covers_external_data(onnx_files: tuple, tmp_path: Path) -> None:
    import onnx

    model, dynamic, _ = onnx_files
    external = tmp_path / "external.onnx"
    onnx.save(onnx.load(str(dynamic)), str(external), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.data", size_threshold=1024)  # the Linear weight
    teacher = OnnxTeacher(external)
    assert set(teacher.identity()["external_data_sha256"]) == {"external.data"}
    x = data(5)
    with torch.no_grad():
        np.testing.assert_allclose(teacher.logits(x), model(torch.from_numpy(x)).numpy(), atol=1e-4)
    blob = bytearray((tmp_path / "external.data").read_bytes())
    blob[-1] ^= 1  # other weights, same .onnx file
    (tmp_path / "external.data").write_bytes(bytes(blob))
    assert OnnxTeacher(external).identity() != teacher.identity()
    (tmp_path / "external.data").unlink()
    with pytest.raises(ConfigError, match="external.onnx: external-data file external.data not found"):
        OnnxTeacher(external)


def two_input_model(path: Path) -> Path:
    """An ONNX model of two named int64 inputs [N, T] -> [N, 2]: (sum of ids * mask, sum of mask)."""
    import onnx
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "T"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["kept"]),
             helper.make_node("Cast", ["kept"], ["kept_f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["kept_f", "axes"], ["a"], keepdims=1),
             helper.make_node("ReduceSum", ["mask_f", "axes"], ["b"], keepdims=1),
             helper.make_node("Concat", ["a", "b"], ["logits"], axis=1)]
    graph = helper.make_graph(nodes, "two", [ids, mask], [out], initializer=[axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_onnx_teacher_feeds_its_named_inputs(tmp_path: Path) -> None:
    teacher = OnnxTeacher(two_input_model(tmp_path / "two.onnx"), batch_size=2)
    ids = np.arange(15, dtype=np.int64).reshape(5, 3)
    mask = np.array([[1, 1, 0]] * 5, dtype=np.int64)
    out = teacher.logits({"attention_mask": mask, "input_ids": ids, "labels": np.zeros(5), "index": np.arange(5)})
    np.testing.assert_allclose(out, np.stack([(ids * mask).sum(1), mask.sum(1)], axis=1).astype(np.float32))
    with pytest.raises(DataError, match="takes inputs input_ids, attention_mask; the batch has input_ids, mask"):
        teacher.logits({"input_ids": ids, "mask": mask})


def test_torch_teacher_runs_through_its_task() -> None:
    from distill_data import TinyLM

    from edgekd.tasks import get_task

    model = TinyLM()
    teacher = TorchTeacher(model, None, "lm", batch_size=2, task=get_task("causal-lm", vocab_size=11, max_length=6))
    ids = np.random.default_rng(0).integers(0, 11, (5, 6)).astype(np.int64)
    out = teacher.logits({"input_ids": ids, "index": np.arange(5)})  # the task fills in the mask of ones
    with torch.no_grad():
        expected = model(torch.from_numpy(ids), torch.ones(5, 6, dtype=torch.int64)).numpy()
    assert out.shape == (5, 6, 11)
    np.testing.assert_allclose(out, expected, atol=1e-6)


# ------------------------------------------------------------------------------------ logits file


def test_logits_file_teacher_checks_the_data_and_returns_log_probs(tmp_path: Path) -> None:
    logits = np.random.default_rng(0).standard_normal((10, CLASSES)).astype(np.float32) * 3
    path = tmp_path / "soft.npz"
    write_logits_file(logits, path, CLASSES, SHA, "some teacher elsewhere")
    teacher = LogitsFileTeacher(path, SHA)
    out = teacher.logits({"input": data(10), "index": np.arange(10)})
    np.testing.assert_allclose(softmax(out), softmax(logits), rtol=1e-5, atol=1e-7)
    rows = np.array([7, 2, 2])  # by sample position, in the batch's order
    np.testing.assert_allclose(softmax(teacher.logits({"index": rows})), softmax(logits[rows]), rtol=1e-5, atol=1e-7)
    assert teacher.identity()["sha256"] == sha256_file(path) and "some teacher elsewhere" in teacher.describe()
    assert not teacher.has_features and not teacher.reads_inputs and isinstance(teacher, TeacherSource)
    with pytest.raises(DataError, match="soft.npz: logits file has 10 samples, the batch asks for sample 10"):
        teacher.logits({"index": np.arange(11)})
    with pytest.raises(DataError, match="answers by sample position and the batch has no 'index'"):
        teacher.logits(data(3))
    with pytest.raises(DataError, match="soft.npz.*data sha256"):
        LogitsFileTeacher(path, "b" * 64)


# ------------------------------------------------------------------------------------ ensemble


def test_ensemble_is_the_weighted_mean_of_probabilities() -> None:
    rng = np.random.default_rng(1)
    z1, z2 = rng.standard_normal((6, CLASSES)) * 3, rng.standard_normal((6, CLASSES)) * 3
    ensemble = EnsembleTeacher([(2.0, Fixed(z1, "one")), (6.0, Fixed(z2, "two"))])
    np.testing.assert_allclose(ensemble.weights, [0.25, 0.75])
    out = ensemble.logits(data(6))
    assert out.dtype == np.float32 and out.shape == (6, CLASSES)
    np.testing.assert_allclose(np.exp(out.astype(np.float64)), 0.25 * softmax(z1) + 0.75 * softmax(z2), rtol=1e-5)
    assert ensemble.identity()["members"][1] == {"weight": 0.75, "kind": "fixed", "name": "two"}
    assert "0.25 × one" in ensemble.describe() and not ensemble.has_features


def test_ensemble_of_one_keeps_the_distribution_and_extreme_logits_stay_finite() -> None:
    z = np.array([[0.0, 500.0, -500.0, 1.0, 2.0]])
    out = EnsembleTeacher([(1.0, Fixed(z))]).logits(data(1))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(softmax(out), softmax(z), atol=1e-7)


def test_ensemble_rejects_bad_members_and_weights() -> None:
    with pytest.raises(ConfigError, match="no members"):
        EnsembleTeacher([])
    with pytest.raises(ConfigError, match="positive"):
        EnsembleTeacher([(0.0, Fixed(np.zeros((2, 3))))])
    mixed = EnsembleTeacher([(1.0, Fixed(np.zeros((2, 3)), "three")), (1.0, Fixed(np.zeros((2, 4)), "four"))])
    with pytest.raises(ConfigError, match=r"four gives outputs \[4\] per sample \(classes last\), the first member \[3\]"):
        mixed.logits(data(2))


def test_ensemble_of_token_logits_averages_over_the_last_axis() -> None:
    rng = np.random.default_rng(2)
    z1, z2 = rng.standard_normal((3, 4, CLASSES)), rng.standard_normal((3, 4, CLASSES))
    out = EnsembleTeacher([(1.0, Fixed(z1)), (1.0, Fixed(z2))]).logits({"input_ids": np.zeros((3, 4), np.int64)})
    expected = 0.5 * softmax(z1.reshape(-1, CLASSES)) + 0.5 * softmax(z2.reshape(-1, CLASSES))
    np.testing.assert_allclose(np.exp(out.astype(np.float64)).reshape(-1, CLASSES), expected, rtol=1e-5)


def test_ensemble_of_real_teachers(onnx_files: tuple) -> None:
    model, dynamic, _ = onnx_files
    ensemble = EnsembleTeacher([(1.0, TorchTeacher(model, None, "torch")), (1.0, OnnxTeacher(dynamic))])
    x = data(8)
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.from_numpy(x)), dim=-1).numpy()
    np.testing.assert_allclose(ensemble.logits(x), expected, atol=1e-4)  # two equal teachers: their own distribution
    assert [m["kind"] for m in ensemble.identity()["members"]] == ["torch", "onnx"]


# ------------------------------------------------------------------------------------ federated


def _party(tmp_path: Path, name: str, seed: int, classes: int = CLASSES, sha: str = SHA, n: int = 12) -> tuple[Path, np.ndarray]:
    logits = np.random.default_rng(seed).standard_normal((n, classes)).astype(np.float32) * 3
    path = tmp_path / name
    write_logits_file(logits, path, classes, sha, f"party {name}")
    return path, softmax(logits)


def test_aggregation_of_two_files_is_the_weighted_average(tmp_path: Path) -> None:
    (a, pa), (b, pb) = _party(tmp_path, "a.npz", 0), _party(tmp_path, "b.npz", 1)
    out = aggregate_logits_files([a, b], [1.0, 3.0], SHA, tmp_path / "agg.npz", k=CLASSES)
    expected = 0.25 * pa + 0.75 * pb
    np.testing.assert_allclose(out.distribution(), expected, rtol=1e-5, atol=1e-8)
    assert out.data_sha256 == SHA and out.num_samples == 12 and "0.25 × a.npz" in out.producer
    # top-k of the average: exact for the kept classes
    top = aggregate_logits_files([a, b], [1.0, 3.0], SHA, tmp_path / "agg2.npz", k=2)
    np.testing.assert_array_equal(top.indices, np.argsort(-expected, axis=1, kind="stable")[:, :2])
    np.testing.assert_allclose(top.probs, np.take_along_axis(expected, top.indices.astype(np.int64), axis=1), rtol=1e-5)
    assert read_logits_file(tmp_path / "agg2.npz").k == 2


def test_aggregation_checks_every_party(tmp_path: Path) -> None:
    a, _ = _party(tmp_path, "a.npz", 0)
    other_data, _ = _party(tmp_path, "other.npz", 1, sha="c" * 64)
    fewer, _ = _party(tmp_path, "fewer.npz", 1, n=11)
    more_classes, _ = _party(tmp_path, "six.npz", 1, classes=6)
    out = tmp_path / "agg.npz"
    with pytest.raises(DataError, match="other.npz.*data sha256"):
        aggregate_logits_files([a, other_data], None, SHA, out, k=2)
    with pytest.raises(DataError, match="fewer.npz.*11 samples"):
        aggregate_logits_files([a, fewer], None, SHA, out, k=2)
    with pytest.raises(DataError, match="six.npz.*6 classes"):
        aggregate_logits_files([a, more_classes], None, SHA, out, k=2)
    with pytest.raises(ConfigError, match="1 weights for 2 files"):
        aggregate_logits_files([a, a], [1.0], SHA, out, k=2)
    assert not out.exists()
