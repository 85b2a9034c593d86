"""Where a build's soft targets come from: a torch module, an ONNX model, a logits file made
elsewhere, or a weighted ensemble of those; and the aggregation of several parties' logits files.

Every source gives `[N, C]` float32 logits for the rows of `x`, deterministically (eval mode, no
gradient), and an `identity()` made of content hashes, so a cache key or a model card names exactly
which teacher taught the student. torch and onnxruntime are imported inside the methods that use them.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from edgekd.common.fsutil import sha256_bytes, sha256_file
from edgekd.common.toolchain import require
from edgekd.distill.logits_file import LogitsFile, read_logits_file, write_logits_file
from edgekd.errors import ConfigError, DataError, EdgekdError

if TYPE_CHECKING:
    from torch import nn


@runtime_checkable
class TeacherSource(Protocol):
    def describe(self) -> str:
        """One line for reports, e.g. "torch module edgekd.examples.digits:teacher, weights sha256 ab12…"."""

    def identity(self) -> dict[str, Any]:
        """Content identity (kind and sha256s) for cache keys and model cards; JSON-serializable."""

    @property
    def has_features(self) -> bool:
        """Whether intermediate features can be captured (only torch teachers)."""

    def logits(self, x: np.ndarray) -> np.ndarray:
        """[len(x), C] float32 logits, deterministic."""


def _check_output(out: np.ndarray, rows: int, who: str) -> np.ndarray:
    if out.ndim != 2 or out.shape[0] != rows:
        raise ConfigError(f"{who}: gives output of shape {tuple(out.shape)} for {rows} samples", "a teacher must give [batch, classes] logits")
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


class TorchTeacher:
    """A torch module run in eval mode without gradients, `batch_size` rows at a time (the module's
    train/eval mode is restored afterwards). `.module` is there for feature capture (hooks).

    `describe` names the module, e.g. "torch module edgekd.examples.digits:teacher(width=32)"; the
    weights hash is appended. `weights_sha256` is the hash of the weights file the module was loaded
    from; None hashes the module's state dict here."""

    def __init__(self, module: nn.Module, weights_sha256: str | None, describe: str, batch_size: int = 512) -> None:
        self.module = module
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

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        with self.evaluating(), torch.no_grad():
            outs = [self.module(torch.from_numpy(np.ascontiguousarray(x[i:i + self.batch_size]))).numpy()
                    for i in range(0, len(x), self.batch_size)]
        return _check_output(np.concatenate(outs), len(x), self._description)

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
    that the teacher's identity covers its weights too; {} when every weight is inside the file."""
    onnx = require("onnx", "reading an ONNX teacher")
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not a model
        raise ConfigError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})", "give a valid .onnx file") from None
    locations = {entry.value for tensor in model.graph.initializer if uses_external_data(tensor)
                 for entry in tensor.external_data if entry.key == "location"}
    hashes = {}
    for location in sorted(locations):
        data = path.parent / location
        if not data.is_file():
            raise ConfigError(f"{path}: external-data file {location} not found beside the model", "keep the model's data files beside it")
        hashes[location] = sha256_file(data)
    return hashes


class OnnxTeacher:
    """An ONNX model as a black box through ONNX Runtime's CPU provider (logits only: its first
    output). A dynamic batch axis is fed `batch_size` rows at a time; a static batch of B is fed
    B rows at a time, the last batch padded with zero rows that are dropped from the result."""

    def __init__(self, path: Path, batch_size: int = 256) -> None:
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
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(f"{self.path}: ONNX teacher has {len(inputs)} inputs", "an ONNX teacher takes one input (the data)")
        self._input = inputs[0]
        self._dtype = np.float16 if self._input.type == "tensor(float16)" else np.float32
        static = self._input.shape[0] if self._input.shape else None
        self.static_batch = static if isinstance(static, int) and static > 0 else None
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

    def _check_input(self, x: np.ndarray) -> None:
        expected = self._input.shape[1:]
        if len(expected) != x.ndim - 1 or any(isinstance(e, int) and e != d for e, d in zip(expected, x.shape[1:])):
            raise DataError(f"{self.path}: ONNX teacher takes input {self._input.shape}, the data has samples of shape {tuple(x.shape[1:])}",
                            "give the teacher the data it was exported for")

    def logits(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        outs = []
        for start in range(0, len(x), self.batch_size):
            batch = x[start:start + self.batch_size].astype(self._dtype, copy=False)
            rows = len(batch)
            if self.static_batch and rows < self.static_batch:
                batch = np.concatenate([batch, np.zeros((self.static_batch - rows, *batch.shape[1:]), dtype=batch.dtype)])
            outs.append(self._session.run(None, {self._input.name: np.ascontiguousarray(batch)})[0][:rows])
        return _check_output(np.concatenate(outs), len(x), str(self.path))


class LogitsFileTeacher:
    """Soft labels made elsewhere (see edgekd.distill.logits_file): row i belongs to sample i of the
    data named by `data_sha256`. `logits(x)` checks that x has that many rows and returns the file's
    reconstructed log-probabilities. They act as logits: softmax of them is the stored distribution,
    and temperature scaling divides them by T as it would real logits. The approximation is the tail:
    the ratios among the stored top-k are the teacher's at every T, but the rest mass is spread
    uniformly, and since p ** (1/T) is concave, at T > 1 that tail weighs at least as much as the
    teacher's own tail would (k = num_classes makes it exact)."""

    def __init__(self, path: Path, data_sha256: str) -> None:
        self.path = Path(path)
        self.file: LogitsFile = read_logits_file(self.path)
        self.file.check_data(data_sha256, self.file.num_samples)
        self.sha256 = sha256_file(self.path)
        self._log_probs: np.ndarray | None = None

    def describe(self) -> str:
        f = self.file
        return f"logits file {self.path.name} (sha256 {self.sha256[:12]}…, top-{f.k} of {f.num_classes}, made by {f.producer})"

    def identity(self) -> dict[str, Any]:
        return {"kind": "logits_file", "sha256": self.sha256, "k": self.file.k, "producer": self.file.producer}

    @property
    def has_features(self) -> bool:
        return False

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.file.check_data(self.file.data_sha256, len(x))
        if self._log_probs is None:
            self._log_probs = self.file.log_probs()
        return self._log_probs


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

    def logits(self, x: np.ndarray) -> np.ndarray:
        terms = []
        for weight, member in zip(self.weights, self.members):
            z = member.logits(x).astype(np.float64)
            if terms and z.shape[1] != terms[0].shape[1]:
                raise ConfigError(f"ensemble teacher: {member.describe()} gives {z.shape[1]} classes, the first member {terms[0].shape[1]}",
                                  "every member must predict the same classes")
            log_softmax = z - z.max(axis=1, keepdims=True)
            log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
            terms.append(np.log(weight) + log_softmax)
        stacked = np.stack(terms)  # [members, N, C]
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


__all__ = ["TeacherSource", "TorchTeacher", "OnnxTeacher", "LogitsFileTeacher", "EnsembleTeacher",
           "aggregate_logits_files", "state_dict_sha256"]
