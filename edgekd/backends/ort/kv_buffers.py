"""One key/value buffer per past input, bound as both that input and its present output (ONNX Runtime
IOBinding), for decoder graphs whose every past input is read by GroupQueryAttention
(edgekd.graph.decoder.shared_kv_pairs): what onnxruntime-genai does with past_present_share_buffer.

GroupQueryAttention given one buffer as past and present writes only the new tokens' keys and values
into it, at the positions the attention mask gives; a session.run that feeds the presents back instead
gets a fresh present each step, past plus the new token copied into it: on a 135 M Llama's split
INT8/INT4 engine, 2 Zen 4 cores, a decode step took 0.80x (p50) / 0.82x (p90) the copying loop's,
about onnxruntime-genai's own step (benchmarks/results/shared_kv_split.md). The graph and its outputs are the same either way; only
where the cache lives changes.

A run whose feed carries past arrays loads them into the buffers (unless they are the arrays loaded
last: a fixed decode-step feed timed again and again is copied once, each run rewriting the same new
position); a feed without them continues from what the buffers hold (greedy generation). The presents
returned are views of the buffers up to the mask's length, valid until the next run. IOBinding cannot
bind an overridable initializer (edgekd.graph.logits_to_keep's input): a feed that sets one runs with
session.run, its presents loaded into the buffers when a run next goes on from them (the prompt pass:
its first token is out before the copy, which the first decode step pays).
"""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

PAST_AXIS = 2  # [batch, kv heads, length, head size]: shared_kv_pairs admits no other layout
HOW = ("past and present key/values share one buffer per layer, bound as both input and output (ONNX Runtime IOBinding; "
       "GroupQueryAttention writes only the new tokens into it), as onnxruntime-genai's past_present_share_buffer")


@lru_cache(maxsize=64)
def _pairs_of(model: str, mtime_ns: int, size: int) -> tuple[tuple[str, str], ...] | None:
    """shared_kv_pairs of the graph in `model`, read once per file version (the tuner opens one file
    at several thread counts and levels; reading a 135 M decoder's graph takes ~0.5 s)."""
    import onnx

    from edgekd.graph.decoder import shared_kv_pairs

    pairs = shared_kv_pairs(onnx.load(model, load_external_data=False).graph)
    return None if pairs is None else tuple(pairs.items())


class KvBuffers:
    """A session's past/present buffers (`pairs`: past input -> present output) and its IOBinding."""

    def __init__(self, session: Any, pairs: Mapping[str, str]) -> None:
        self.session, self.pairs = session, dict(pairs)
        self.outputs = [o.name for o in session.get_outputs()]
        self.inputs = {i.name for i in session.get_inputs()}
        self.others = [n for n in self.outputs if n not in set(self.pairs.values())]
        self.binding = session.io_binding()
        self.buffers: dict[str, np.ndarray] = {}
        self.held: dict[str, np.ndarray] = {}  # the past arrays loaded last (by identity)
        self.length = 0  # tokens the buffers hold
        self.pending: tuple[dict[str, np.ndarray], int] | None = None  # presents of a copying run, not loaded yet
        self.preset: dict[tuple[Any, ...], tuple[list[np.ndarray], list[Any]]] = {}  # the other outputs' arrays per new-token shapes
        self.bound: tuple[Any, ...] | None = None  # whose arrays the other outputs are bound to

    @classmethod
    def for_session(cls, session: Any, model: Path) -> KvBuffers | None:
        """The buffers of `session` (opened on `model`) where its graph admits them, else None."""
        from edgekd.graph.decoder import is_past

        if not any(is_past(i.name) for i in session.get_inputs()):
            return None  # not a decoder with a cache: its graph is not read at all
        stat = Path(model).stat()
        pairs = _pairs_of(str(Path(model).resolve()), stat.st_mtime_ns, stat.st_size)
        return None if pairs is None else cls(session, dict(pairs))

    def reserve(self, tokens: int, rows: int = 1) -> None:
        """Buffers for at least `tokens` positions of `rows` sequences (what they hold kept)."""
        first = next(iter(self.buffers.values()), None)
        if first is not None and first.shape[0] == rows and first.shape[PAST_AXIS] >= tokens:
            return
        import onnxruntime as ort

        for past, present in self.pairs.items():
            old = self.buffers.get(past)
            shape = self._shape(past, rows, tokens)
            buffer = np.zeros(shape, old.dtype if old is not None else self._dtype(past))
            if old is not None and old.shape[0] == rows:
                buffer[:, :, :self.length] = old[:, :, :self.length]
            self.buffers[past] = buffer
            value = ort.OrtValue.ortvalue_from_numpy(buffer)  # wraps the array: no copy
            self.binding.bind_ortvalue_input(past, value)
            self.binding.bind_ortvalue_output(present, value)
        if first is None or first.shape[0] != rows:
            self.length = 0
        self.held = {}

    def _shape(self, past: str, rows: int, tokens: int) -> tuple[int, ...]:
        dims = next(i.shape for i in self.session.get_inputs() if i.name == past)
        return (rows, int(dims[1]), tokens, int(dims[3]))

    def _dtype(self, past: str) -> Any:
        kind = next(i.type for i in self.session.get_inputs() if i.name == past)
        return np.float16 if "float16" in kind else np.float32

    def load(self, pasts: Mapping[str, np.ndarray], tokens: int) -> None:
        """The buffers hold `pasts` (arrays of one past length), room for `tokens` positions in all."""
        first = next(iter(pasts.values()))
        cached = first.shape[PAST_AXIS]
        self.reserve(max(tokens, cached), first.shape[0])
        for name, array in pasts.items():
            self.buffers[name][:, :, :cached] = array
        self.length, self.held, self.pending = cached, dict(pasts), None

    def run(self, feed: Mapping[str, np.ndarray], presents: bool = True) -> list[np.ndarray]:
        """The session's outputs for `feed` (in its output order; `presents` False: the other outputs
        only, e.g. the logits), the cache in the buffers: past arrays in `feed` are loaded first (see
        the module docstring), else the buffers go on."""
        pasts = {n: a for n, a in feed.items() if n in self.pairs}
        if not pasts and self.pending is not None:
            self.load(*self.pending)
        total = self._total(feed, pasts)
        if any(n not in self.inputs for n in feed):  # an overridable initializer set: not bindable
            return self._run_copying(feed, total)
        if pasts and not all(self.held.get(n) is a for n, a in pasts.items()):
            self.load(pasts, total)
        elif not self.buffers or total > next(iter(self.buffers.values())).shape[PAST_AXIS]:
            self.reserve(max(total, 2 * self.length), self._rows(feed))
        for name, array in feed.items():
            if name not in self.pairs:
                self.binding.bind_cpu_input(name, np.ascontiguousarray(array))
        others = self._run_bound(tuple((n, a.shape) for n, a in feed.items() if n not in self.pairs and "mask" not in n))
        self.length = total
        if not presents:
            return others
        views = {present: self.buffers[past][:, :, :total] for past, present in self.pairs.items()}
        produced = dict(zip(self.others, others))
        return [produced[n] if n in produced else views[n] for n in self.outputs]

    def _run_bound(self, key: tuple[Any, ...]) -> list[np.ndarray]:
        """Run; the other outputs (the logits) written into arrays made the first time these new-token
        shapes (`key`) ran, so a decode step allocates nothing; a run whose outputs do not fit them
        (ONNX Runtime refuses) runs again with outputs it allocates."""
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

        if key in self.preset and self.bound != key:
            for name, value in zip(self.others, self.preset[key][1]):
                self.binding.bind_ortvalue_output(name, value)
            self.bound = key
        if self.bound == key:
            try:
                self.session.run_with_iobinding(self.binding)
                return self.preset[key][0]
            except (Fail, InvalidArgument, RuntimeException):  # shapes the arrays do not fit
                del self.preset[key]
        import onnxruntime as ort

        for name in self.others:
            self.binding.bind_output(name)
        self.session.run_with_iobinding(self.binding)
        # the presents were bound first (reserve), the other outputs after them, in this order
        produced = [v.numpy() for v in self.binding.get_outputs()[len(self.pairs):]]
        arrays = [np.empty_like(a) for a in produced]
        self.preset[key], self.bound = (arrays, [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]), None
        return produced

    def _run_copying(self, feed: Mapping[str, np.ndarray], total: int) -> list[np.ndarray]:
        """session.run on `feed` with its past (the buffers' cache where it has none), its presents
        pending: loaded into the buffers by the next run that goes on from them."""
        if not all(n in feed for n in self.pairs):
            feed = {**feed, **{n: self.buffers[n][:, :, :self.length] for n in self.pairs}} if self.buffers else feed
        outputs = self.session.run(None, dict(feed))
        named = dict(zip(self.outputs, outputs))
        self.pending, self.held = ({past: named[present] for past, present in self.pairs.items()}, total), {}
        return outputs

    def _rows(self, feed: Mapping[str, np.ndarray]) -> int:
        return int(next(a for a in feed.values() if a.ndim >= 2).shape[0])  # the token ids' rows, not a 1-D logits_to_keep

    def _total(self, feed: Mapping[str, np.ndarray], pasts: Mapping[str, np.ndarray]) -> int:
        """Tokens cached after this run: the attention mask's length (GroupQueryAttention's lengths
        come from it), else those held plus the new ones."""
        masks = [a for n, a in feed.items() if "mask" in n and a.ndim == 2]
        if masks:
            return int(masks[0].shape[1])
        cached = next(iter(pasts.values())).shape[PAST_AXIS] if pasts else self.length
        ids = next(a for n, a in feed.items() if n not in self.pairs and a.ndim == 2)
        return cached + int(ids.shape[1])
