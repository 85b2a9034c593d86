"""Where a build's soft targets come from: a torch module, an ONNX model, a logits file made
elsewhere, or a weighted ensemble of those; and the aggregation of several parties' logits files.

A teacher answers a batch of named arrays (edgekd.data.sources: model inputs by name, "labels",
"index" = the samples' positions in the train split) with one row of float32 outputs per sample,
deterministically (eval mode, no gradient): [B, C] for classification, [B, T, V] for token logits.
A torch teacher runs the batch through its task (edgekd.tasks: `task.forward`), an ONNX teacher feeds
its named inputs to ONNX Runtime, a logits file answers by sample position ("index"). `identity()` is
made of content hashes, so a cache key or a model card names exactly which teacher taught the student.
torch and onnxruntime are imported inside the methods that use them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from edgekd.common.fsutil import sha256_bytes, sha256_file
from edgekd.common.toolchain import require
from edgekd.data.sources import INDEX
from edgekd.data.views import teacher_view
from edgekd.distill.logits_file import LogitsFile, read_logits_file, write_logits_file
from edgekd.distill.streaming import model_arrays, rows_of
from edgekd.errors import ConfigError, DataError, EdgekdError
from edgekd.graph.model_file import check_external_data

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgekd.tasks.base import Task

Arrays = Mapping[str, np.ndarray]
Feed = Arrays | np.ndarray  # a bare array: the one input of a single-input model
PREDICT_BATCH = 256  # samples per teacher call in predict()


@runtime_checkable
class TeacherSource(Protocol):
    def describe(self) -> str:
        """One line for reports, e.g. "torch module edgekd.examples.digits:teacher, weights sha256 ab12…"."""

    def identity(self) -> dict[str, Any]:
        """Content identity (kind and sha256s) for cache keys and model cards; JSON-serializable."""

    @property
    def has_features(self) -> bool:
        """Whether intermediate features can be captured (only torch teachers)."""

    @property
    def reads_inputs(self) -> bool:
        """Whether the outputs are computed from the batch's inputs (so the teacher can see an
        augmented view); False for a logits file, which answers by sample position only."""

    def logits(self, batch: Feed) -> np.ndarray:
        """One float32 row of outputs per sample of `batch`, deterministic."""


def predict(teacher: TeacherSource, arrays: Arrays, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """The teacher's outputs on named arrays (e.g. the test split's), `batch_size` samples at a time."""
    rows = rows_of(arrays)
    return np.concatenate([teacher.logits({n: a[i:i + batch_size] for n, a in arrays.items()})
                           for i in range(0, rows, batch_size)])


def _check_output(out: np.ndarray, rows: int, who: str) -> np.ndarray:
    if out.ndim < 2 or out.shape[0] != rows:
        raise ConfigError(f"{who}: gives output of shape {tuple(out.shape)} for {rows} samples",
                          "a teacher must give one row of logits per sample ([batch, classes] or [batch, tokens, vocab])")
    return out.astype(np.float32, copy=False)


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a module's state dict (sorted by name)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def forward_module(module: nn.Module, batch: Mapping[str, Any], task: Task | None) -> torch.Tensor:
    """A module's outputs on a batch (its teacher view: edgekd.data.views): through `task.forward`
    when given, else the batch's model inputs positionally, in batch order (a plain single-input
    module gets its one array)."""
    import torch

    batch = teacher_view(batch)
    if task is not None:
        return task.forward(module, batch)
    inputs = [torch.as_tensor(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for v in model_arrays(batch).values()]
    return module(*inputs)


class TorchTeacher:
    """A torch module run in eval mode without gradients (the module's train/eval mode is restored
    afterwards), through `task.forward` (the task names the inputs; None: see `forward_module`).
    `.module` is there for feature capture (hooks).

    `describe` names the module, e.g. "torch module edgekd.examples.digits:teacher(width=32)"; the
    weights hash is appended. `weights_sha256` is the hash of the weights file the module was loaded
    from; None hashes the module's state dict here."""

    def __init__(self, module: nn.Module, weights_sha256: str | None, describe: str, batch_size: int = PREDICT_BATCH,
                 task: Task | None = None) -> None:
        self.module = module
        self.task = task
        self.weights_sha256 = weights_sha256 or state_dict_sha256(module)
        self._description = describe
        self.batch_size = batch_size
        # repr lists every submodule and its settings: a changed layer changes the identity
        self._architecture_sha256 = sha256_bytes(repr(module).encode("utf-8"))

    def describe(self) -> str:
        return f"{self._description}, weights sha256 {self.weights_sha256[:12]}…"

    def identity(self) -> dict[str, Any]:
        return {"kind": "torch", "module": self._description, "architecture_sha256": self._architecture_sha256,
                "weights_sha256": self.weights_sha256}

    @property
    def has_features(self) -> bool:
        return True

    @property
    def reads_inputs(self) -> bool:
        return True

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The module's outputs as a tensor (eval mode, no gradient), e.g. inside a training step."""
        import torch

        with self.evaluating(), torch.no_grad():
            return forward_module(self.module, batch, self.task)

    def logits(self, batch: Feed) -> np.ndarray:
        arrays = {"input": batch} if isinstance(batch, np.ndarray) else batch
        rows = rows_of(arrays)
        outs = [self.forward({n: a[i:i + self.batch_size] for n, a in arrays.items()}).float().cpu().numpy()
                for i in range(0, rows, self.batch_size)]
        return _check_output(np.concatenate(outs), rows, self._description)

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The module in eval mode for the block; its train/eval mode is restored afterwards."""
        was_training = self.module.training
        self.module.eval()
        try:
            yield
        finally:
            self.module.train(was_training)


def _external_data_sha256(path: Path) -> dict[str, str]:
    """sha256 of each external-data file an ONNX model names (weights stored beside the .onnx), so
    that the teacher's identity covers its weights too; {} when every weight is inside the file. A
    location outside the model's folder is refused (edgekd.graph.model_file.check_external_data)."""
    onnx = require("onnx", "reading an ONNX teacher")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise ConfigError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})", "give a valid .onnx file") from None
    hashes = {}
    for location in check_external_data(path, model):  # each inside the model's folder, or ConfigError
        data = path.parent / location
        if not data.is_file():
            raise ConfigError(f"{path}: external-data file {location} not found beside the model", "keep the model's data files beside it")
        hashes[location] = sha256_file(data)
    return hashes


ORT_DTYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


class OnnxTeacher:
    """An ONNX model as a black box through ONNX Runtime's CPU provider (logits only: its first
    output). Each of its inputs is fed the batch's array of the same name (a single-input model takes
    the batch's one model input whatever its name). A dynamic batch axis is fed `batch_size` rows at
    a time; a static batch of B is fed B rows at a time, the last batch padded with zero rows that
    are dropped from the result."""

    def __init__(self, path: Path, batch_size: int = PREDICT_BATCH) -> None:
        from edgekd.backends.ort.session import open_session

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: ONNX teacher not found", "check the path")
        self.sha256 = sha256_file(self.path)
        self.external_data_sha256 = _external_data_sha256(self.path)
        try:
            self._session = open_session(self.path)
        except EdgekdError:  # onnxruntime missing: ToolchainMissing as it is
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types for bad files
            raise ConfigError(f"{self.path}: ONNX Runtime cannot load the teacher ({type(exc).__name__}: {exc})",
                              "give a valid .onnx file (with its external-data files beside it, if it has any)") from None
        self._inputs = self._session.get_inputs()
        self.output_names = [o.name for o in self._session.get_outputs()]  # the first is taken as the logits
        static = {i.shape[0] for i in self._inputs if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0}
        self.static_batch = min(static) if static else None
        self.batch_size = self.static_batch or batch_size

    def describe(self) -> str:
        return f"ONNX model {self.path.name} (sha256 {self.sha256[:12]}…) on onnxruntime CPU"

    def identity(self) -> dict[str, Any]:
        identity: dict[str, Any] = {"kind": "onnx", "sha256": self.sha256}
        if self.external_data_sha256:
            identity["external_data_sha256"] = self.external_data_sha256
        return identity

    @property
    def has_features(self) -> bool:
        return False

    @property
    def reads_inputs(self) -> bool:
        return True

    def feeds(self, batch: Feed) -> dict[str, np.ndarray]:
        """The session's inputs by name from the batch, each checked against the model's shape."""
        given = model_arrays({"input": batch} if isinstance(batch, np.ndarray) else teacher_view(batch))
        if len(self._inputs) == 1 and len(given) == 1:
            given = {self._inputs[0].name: next(iter(given.values()))}
        feeds = {}
        for spec in self._inputs:
            if spec.name not in given:
                raise DataError(f"{self.path}: ONNX teacher takes inputs {', '.join(i.name for i in self._inputs)}; "
                                f"the batch has {', '.join(given) or 'none'}", "name the data's arrays as the teacher's inputs")
            array = np.asarray(given[spec.name])
            expected = spec.shape[1:]
            if len(expected) != array.ndim - 1 or any(isinstance(e, int) and e != d for e, d in zip(expected, array.shape[1:])):
                raise DataError(f"{self.path}: ONNX teacher takes {spec.name} {spec.shape}, the data has samples of shape "
                                f"{tuple(array.shape[1:])}", "give the teacher the data it was exported for")
            feeds[spec.name] = array.astype(ORT_DTYPES.get(spec.type, array.dtype), copy=False)
        return feeds

    def logits(self, batch: Feed) -> np.ndarray:
        feeds = self.feeds(batch)
        rows = rows_of(feeds)
        outs = []
        for start in range(0, rows, self.batch_size):
            part = {n: a[start:start + self.batch_size] for n, a in feeds.items()}
            got = len(next(iter(part.values())))
            if self.static_batch and got < self.static_batch:
                part = {n: np.concatenate([a, np.zeros((self.static_batch - got, *a.shape[1:]), dtype=a.dtype)])
                        for n, a in part.items()}
            outs.append(self._session.run(None, {n: np.ascontiguousarray(a) for n, a in part.items()})[0][:got])
        return _check_output(np.concatenate(outs), rows, str(self.path))


class LogitsFileTeacher:
    """Soft labels made elsewhere (see edgekd.distill.logits_file): row i belongs to sample i of the
    train split named by `data_sha256`. `logits(batch)` answers the rows batch["index"] names with the
    file's reconstructed log-probabilities (the file's compact top-k arrays are read whole, N x k;
    the full [N, C] distribution is never built). They act as logits: softmax of them is the stored
    distribution, and temperature scaling divides them by T as it would real logits. The
    approximation is the tail: the ratios among the stored top-k are the teacher's at every T, but
    the rest mass is spread uniformly, and since p ** (1/T) is concave, at T > 1 that tail weighs at
    least as much as the teacher's own tail would (k = num_classes makes it exact)."""

    def __init__(self, path: Path, data_sha256: str) -> None:
        self.path = Path(path)
        self.file: LogitsFile = read_logits_file(self.path)
        self.file.check_data(data_sha256, self.file.num_samples)
        self.sha256 = sha256_file(self.path)

    def describe(self) -> str:
        f = self.file
        return f"logits file {self.path.name} (sha256 {self.sha256[:12]}…, top-{f.k} of {f.num_classes}, made by {f.producer})"

    def identity(self) -> dict[str, Any]:
        return {"kind": "logits_file", "sha256": self.sha256, "k": self.file.k, "producer": self.file.producer}

    @property
    def has_features(self) -> bool:
        return False

    @property
    def reads_inputs(self) -> bool:
        return False

    def logits(self, batch: Feed) -> np.ndarray:
        if isinstance(batch, np.ndarray) or INDEX not in batch:
            raise DataError(f"{self.path}: a logits file answers by sample position and the batch has no '{INDEX}'",
                            "give batches from the train split's data source")
        rows = np.asarray(batch[INDEX], dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.file.num_samples):
            raise DataError(f"{self.path}: logits file has {self.file.num_samples} samples, the batch asks for sample {int(rows.max())}",
                            "produce the soft labels on this exact data set (same samples, same order)")
        return self.file.log_probs(rows)


def _normalized(weights: Sequence[float], what: str) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.isfinite(w).all() or (w <= 0).any():
        raise ConfigError(f"{what}: weights {list(weights)} must be positive finite numbers, at least one", "give one weight > 0 per member")
    return w / w.sum()


class EnsembleTeacher:
    """Several teachers as one: the weighted average of their soft targets at T=1 (weights are
    normalized to sum to 1); `logits` returns the log of that average distribution, computed as a
    logsumexp of log-weights plus each member's log-softmax, so nothing underflows. Temperature then
    applies to the averaged distribution (softmax(log p̄ / T)), not to each member before averaging."""

    def __init__(self, members: Sequence[tuple[float, TeacherSource]]) -> None:
        if not members:
            raise ConfigError("ensemble teacher: no members", "give at least one (weight, teacher) pair")
        self.weights = _normalized([w for w, _ in members], "ensemble teacher")
        self.members = [teacher for _, teacher in members]

    def describe(self) -> str:
        parts = [f"{w:.3g} × {m.describe()}" for w, m in zip(self.weights, self.members)]
        return f"ensemble of {len(parts)} (mean of probabilities): " + "; ".join(parts)

    def identity(self) -> dict[str, Any]:
        return {"kind": "ensemble", "members": [{"weight": float(w), **m.identity()} for w, m in zip(self.weights, self.members)]}

    @property
    def has_features(self) -> bool:
        return False

    @property
    def reads_inputs(self) -> bool:
        return all(m.reads_inputs for m in self.members)

    def logits(self, batch: Feed) -> np.ndarray:
        terms: list[np.ndarray] = []
        for weight, member in zip(self.weights, self.members):
            z = member.logits(batch).astype(np.float64)
            if terms and z.shape[1:] != terms[0].shape[1:]:
                raise ConfigError(f"ensemble teacher: {member.describe()} gives outputs {list(z.shape[1:])} per sample (classes last), "
                                  f"the first member {list(terms[0].shape[1:])}", "every member must predict the same classes")
            log_softmax = z - z.max(axis=-1, keepdims=True)
            log_softmax -= np.log(np.exp(log_softmax).sum(axis=-1, keepdims=True))
            terms.append(np.log(weight) + log_softmax)
        stacked = np.stack(terms)  # [members, N, ..., C]
        top = stacked.max(axis=0)
        return (top + np.log(np.exp(stacked - top).sum(axis=0))).astype(np.float32)


def aggregate_logits_files(paths: Sequence[Path], weights: Sequence[float] | None, data_sha256: str,
                           out_path: Path, k: int) -> LogitsFile:
    """Federated-style distillation: parties each send a logits file for one shared data set (no raw
    data, no models); each is checked against `data_sha256` and the others' sample and class counts,
    their reconstructed distributions are averaged with the normalized `weights` (None: equal), and the
    top-k of the average is written to `out_path` as a new logits file (returned as read back)."""
    if not paths:
        raise ConfigError("aggregate logits files: no files given", "give at least one logits file")
    w = _normalized([1.0] * len(paths) if weights is None else weights, "aggregate logits files")
    if len(w) != len(paths):
        raise ConfigError(f"aggregate logits files: {len(w)} weights for {len(paths)} files", "give one weight per file")
    files = [read_logits_file(Path(p)) for p in paths]
    first = files[0]
    for f in files:
        f.check_data(data_sha256, first.num_samples)
        if f.num_classes != first.num_classes:
            raise DataError(f"{f.path}: logits file has {f.num_classes} classes, {first.path} has {first.num_classes}", "every party must predict the same classes")
    mean = sum(weight * f.distribution() for weight, f in zip(w, files))
    producer = "weighted mean of " + "; ".join(f"{weight:.3g} × {Path(f.path).name} ({f.producer})" for weight, f in zip(w, files))
    write_logits_file(np.log(np.maximum(mean, np.finfo(np.float64).tiny)), Path(out_path), k, data_sha256, producer)
    return read_logits_file(Path(out_path))


__all__ = ["EnsembleTeacher", "LogitsFileTeacher", "OnnxTeacher", "TeacherSource", "TorchTeacher",
           "aggregate_logits_files", "forward_module", "predict", "state_dict_sha256"]
