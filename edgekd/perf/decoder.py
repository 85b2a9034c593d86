"""The decoder scenarios, run in the bench worker next to SingleStream and Offline:

TimeToFirstToken: the prompt's forward pass at batch 1 (P prompt tokens, empty past): p50/p90 ms.
DecodeTokensPerSecond: greedy generation of N tokens one at a time after that prompt, each step
feeding the cache of the steps before as past (argmax of the last logits as the next token, the
attention mask grown by one); tokens/s = N / total decode time, and per-token p50/p90. The cache is
kept where the engine's runner keeps it: one shared past/present buffer per layer for a
GroupQueryAttention graph (edgekd.backends.ort.kv_buffers, as onnxruntime-genai runs it), else the
previous step's presents fed back. A decoder graph without past inputs decodes by re-running the
whole growing sequence each step.

A decoder is recognised from the model's inputs and outputs, never from its file name: one input
with role token_ids, and past key/value inputs or a [batch, sequence, vocab] logits output.
Every latency goes through edgekd.perf.timing.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config.models import BenchConfig
from edgekd.deploy.run_on_device import summarize
from edgekd.errors import EdgekdError
from edgekd.graph.inputs import ModelInputs, ResolvedInput
from edgekd.graph.logits_to_keep import KEEP
from edgekd.perf.timing import time_runs
from edgekd.tasks.specs import DECODE_TOKENS_PER_SECOND, TIME_TO_FIRST_TOKEN

# the Task seam's decoder scenarios (edgekd.tasks.specs, which loads no torch: the worker measures peak memory)
DECODER_SCENARIOS = (TIME_TO_FIRST_TOKEN, DECODE_TOKENS_PER_SECOND)
RESULT_KEYS = {TIME_TO_FIRST_TOKEN: "ttft", DECODE_TOKENS_PER_SECOND: "decode"}  # where each goes in the bench result
NO_CACHE = "no KV cache in the graph: each token re-runs the whole sequence"
LOGITS = "logits"
_DRIVEN_ROLES = {"token_ids", "attention_mask", "position_ids", "token_type_ids", "past_key_values"}


class DecoderError(EdgekdError):
    """A decoder graph the decoder scenarios cannot drive (said in the result, not raised to the user)."""


@dataclass(frozen=True)
class PastSlot:
    """One past key/value input, the present output fed back into it, and its empty-past shape."""

    name: str
    present: str
    dtype: str
    empty_shape: tuple[int, ...]


@dataclass(frozen=True)
class DecoderIO:
    """How to feed a decoder graph at batch 1: which input takes what, which output is the logits."""

    token_ids: str
    ids_dtype: str
    logits: str
    past: tuple[PastSlot, ...] = ()
    mask: ResolvedInput | None = None
    positions: ResolvedInput | None = None
    zeros: tuple[ResolvedInput, ...] = ()  # token type ids: all 0
    keep: str | None = None  # the logits_to_keep input (edgekd.graph.logits_to_keep): fed 1, the last position's logits

    @property
    def kv_cache(self) -> bool:
        return bool(self.past)

    @property
    def fetches(self) -> list[str]:
        return [self.logits, *(p.present for p in self.past)]


@dataclass(frozen=True)
class Subject:
    """What the decoder scenarios run on: an open ONNX Runtime session, its model file, the resolved
    inputs, sample rows of every input (samples on axis 0) and where it runs (host, runtime)."""

    session: Any
    engine: Path
    inputs: ModelInputs
    rows: dict[str, np.ndarray]
    where: str
    kv: Any = None  # edgekd.backends.ort.kv_buffers.KvBuffers where the graph shares past and present buffers


def _runner(subject: Subject, io: DecoderIO) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """What runs a feed: the session (presents fetched and fed back) or its shared KV buffers."""
    if subject.kv is not None:
        return subject.kv.run
    return lambda feed: subject.session.run(io.fetches, feed)


def _cache_how(subject: Subject) -> str:
    from edgekd.backends.ort.kv_buffers import HOW

    return HOW if subject.kv is not None else "presents fetched and fed back as the next step's past (a new buffer each step)"


def _dims(args: Any) -> dict[str, tuple[Any, ...]]:
    return {a.name: tuple(a.shape or ()) for a in args}


def _logits_output(outputs: dict[str, tuple[Any, ...]], vocab: int | None) -> str | None:
    """The [batch, sequence, vocab] output: 'logits' if so named, else the first rank-3 output
    (its last dim the vocabulary size where the embedding gives it)."""
    ranked = [n for n, d in outputs.items() if len(d) == 3 and (vocab is None or d[2] == vocab)]
    return LOGITS if LOGITS in ranked else (ranked[0] if ranked else None)


def is_decoder(inputs: ModelInputs, outputs: dict[str, tuple[Any, ...]]) -> bool:
    """One token_ids input, and past key/values or a [batch, sequence, vocab] logits output."""
    tokens = [i for i in inputs.inputs if i.role == "token_ids"]
    if len(tokens) != 1:
        return False
    return any(i.role == "past_key_values" for i in inputs.inputs) or _logits_output(outputs, tokens[0].vocab_size) is not None


def _present_of(past: str, outputs: dict[str, tuple[Any, ...]], fallback: str | None) -> str:
    for candidate in (past.replace("past_key_values", "present"), past.replace("past", "present")):
        if candidate != past and candidate in outputs:
            return candidate
    if fallback is None:
        raise DecoderError(f"no present output to feed back into past input '{past}'",
                           "export with past and present key/values named alike (optimum: past_key_values.N.key -> present.N.key)")
    return fallback


def _empty_past(spec: ResolvedInput, graph_dims: tuple[Any, ...]) -> tuple[int, ...]:
    """`spec`'s shape at batch 1 with its past-sequence axis (named '*past*', else the second last) at 0."""
    named = [a for a, d in enumerate(graph_dims) if isinstance(d, str) and "past" in d.lower() and "+" not in d]
    axis = named[0] if named else len(spec.shape) - 2
    if isinstance(graph_dims[axis], int) and graph_dims[axis] > 0:
        raise DecoderError(f"past input '{spec.name}' has a fixed past length {graph_dims[axis]}: no empty past for the prompt pass",
                           "export with a dynamic past sequence length")
    shape = list(spec.shape)
    shape[axis] = 0
    if spec.batch_axis is not None:
        shape[spec.batch_axis] = 1
    return tuple(shape)


def decoder_io(session: Any, inputs: ModelInputs) -> DecoderIO | None:
    """How to drive `session`'s graph as a decoder at batch 1; None when it is not a decoder.
    Raises DecoderError for a decoder these scenarios cannot drive (and why)."""
    outputs, graph = _dims(session.get_outputs()), _dims(session.get_inputs())
    if not is_decoder(inputs, outputs):
        return None
    token = next(i for i in inputs.inputs if i.role == "token_ids")
    logits = _logits_output(outputs, token.vocab_size)
    if logits is None:
        raise DecoderError("no [batch, sequence, vocab] logits output", "export the language-model head's logits")
    other = [i.name for i in inputs.inputs if i.role not in _DRIVEN_ROLES]
    if other:
        raise DecoderError(f"inputs the decoder scenarios cannot fill: {', '.join(other)}",
                           "decoders with token ids, attention mask, position ids and past key/values only")
    fixed = [i.name for i in inputs.inputs if i.batch_axis is None and i.shape and i.shape[0] != 1]
    seq = graph.get(token.name, ())
    if fixed or len(seq) < 2 or isinstance(seq[1], int):
        raise DecoderError(f"the graph fixes the batch or sequence length ({token.name} {seq})",
                           "export with a dynamic sequence axis (and batch 1 or a dynamic batch)")
    pasts = [i for i in inputs.inputs if i.role == "past_key_values"]
    spare = [n for n in outputs if n != logits]
    in_order = dict(zip((p.name for p in pasts), spare)) if len(spare) == len(pasts) else {}
    slots = tuple(PastSlot(p.name, _present_of(p.name, outputs, in_order.get(p.name)), p.dtype,
                           _empty_past(p, graph[p.name])) for p in pasts)
    pick = {role: next((i for i in inputs.inputs if i.role == role), None) for role in ("attention_mask", "position_ids")}
    keep = KEEP if KEEP in {i.name for i in session.get_overridable_initializers()} else None
    return DecoderIO(token.name, token.dtype, logits, slots, pick["attention_mask"], pick["position_ids"],
                     tuple(i for i in inputs.inputs if i.role == "token_type_ids"), keep)


def step_feed(io: DecoderIO, ids: np.ndarray, past: list[np.ndarray] | None, total: int, pasts: bool = True,
              keep: bool = True) -> dict[str, np.ndarray]:
    """The feed for new token `ids` [1, T] after `total - T` cached tokens (`past`: the previous
    presents; None: an empty past; `pasts` False: no past inputs, for a cache kept in shared buffers).
    Mask of ones over all `total` tokens, positions of the new ones; logits_to_keep 1 unless `keep` False."""
    new = ids.shape[1]
    feed = {io.token_ids: ids.astype(io.ids_dtype, copy=False)}
    for i, slot in enumerate(io.past if pasts else ()):
        feed[slot.name] = np.zeros(slot.empty_shape, slot.dtype) if past is None else past[i]
    if io.mask is not None:
        feed[io.mask.name] = np.ones((1, total), io.mask.dtype)
    if io.positions is not None:
        feed[io.positions.name] = np.arange(total - new, total, dtype=io.positions.dtype)[None]
    for spec in io.zeros:
        feed[spec.name] = np.zeros((1, new), spec.dtype)
    if io.keep is not None and keep:
        feed[io.keep] = np.ones(1, np.int64)
    return feed


class Greedy:
    """Greedy generation at batch 1: the prompt pass on construction, then one token per `step()`.
    With a KV cache each step feeds the last token and the previous presents; without one it re-runs
    the whole sequence. `first_token` comes from the prompt pass, `tokens` from the steps."""

    def __init__(self, session: Any, io: DecoderIO, prompt: np.ndarray, kv: Any = None, new_tokens: int = 0) -> None:
        """`kv`: the session's shared KV buffers (edgekd.backends.ort.kv_buffers), room made for
        `new_tokens` after the prompt; None: the presents are fed back as past."""
        self.session, self.io, self.ids, self.kv = session, io, prompt, kv
        self.tokens: list[int] = []
        if kv is not None:
            kv.reserve(prompt.shape[1] + new_tokens)
        self._take(self._run(step_feed(io, prompt, None, prompt.shape[1])))
        self.first_token = self._next

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.kv is not None:
            return self.kv.run(feed, presents=False)  # the logits: the cache stays in the buffers
        return self.session.run(self.io.fetches, feed)

    def _take(self, outputs: list[np.ndarray]) -> None:
        self._next = int(np.argmax(outputs[0][0, -1]))
        self._presents = outputs[1:]

    def step(self) -> None:
        token = np.array([[self._next]], dtype=self.ids.dtype)
        self.ids = np.concatenate([self.ids, token], axis=1)
        total = self.ids.shape[1]
        if self.kv is not None:  # the cache stays in the buffers: a feed without past continues from them
            feed = step_feed(self.io, token, None, total, pasts=False, keep=False)  # one new token: one position's logits anyway
        else:
            feed = (step_feed(self.io, token, self._presents, total) if self.io.kv_cache
                    else step_feed(self.io, self.ids, None, total))
        self._take(self._run(feed))
        self.tokens.append(self._next)


def model_positions(engine: Path) -> int | None:
    """Rows of the model's position-embedding table (the longest sequence), if the graph has one."""
    import onnx

    from edgekd.graph.inputs import GraphHints

    return GraphHints(onnx.load(str(engine), load_external_data=False)).max_positions()


@dataclass(frozen=True)
class Prompt:
    """The prompt the scenarios feed: token ids [1, P], and what was done to get them."""

    ids: np.ndarray
    note: str


def runtime_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's errors for a feed a graph refuses at run time (e.g. a position past its table)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    return Fail, InvalidArgument, RuntimeException


def _runs(session: Any, io: DecoderIO, ids: np.ndarray) -> str | None:
    """None where the prompt pass of `ids` runs, else the runtime's reason (its first line)."""
    from edgekd.graph.decoder import complete_feeds

    try:  # past inputs the io does not drive (the tuner's: the task's inputs only) get an empty past, as the tuner feeds them
        session.run(io.fetches, complete_feeds(session, step_feed(io, ids, None, ids.shape[1])))
    except runtime_errors() as exc:
        text = str(exc).strip().splitlines()[0]
        text = text.split("Status Message:")[0].rstrip() if "Status Message:" in text else text  # the node, not the source file
        return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)[:200]
    return None


def _longest_prompt(session: Any, io: DecoderIO, row: np.ndarray, want: int) -> tuple[int, str | None]:
    """(`want`, None) where a `want`-token prompt runs; else (the longest prompt under `want` that
    runs, found by bisection: 0 if none, the reason the `want`-token one failed). A position table
    the graph hides from edgekd.graph.inputs (GPT-J's sin/cos table is a Constant read by
    GatherElements) then shows as a run-time index error, not as an internal error of the tuner."""
    reason = _runs(session, io, np.resize(row, (1, want)))
    if reason is None:
        return want, None
    good, bad = 0, want
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if _runs(session, io, np.resize(row, (1, mid))) is None else (good, mid)
    return good, reason


def make_prompt(subject: Subject, io: DecoderIO, bench: BenchConfig, declared: int | None = None) -> Prompt:
    """P tokens from the first row of the bench feeds' token ids (repeated to length), P shortened
    when P + N exceeds the model's positions (its position table's rows, `declared`: those its config
    declares, or the longest prompt that runs). Raises DecoderError when N alone does not fit."""
    want, note = bench.prompt_tokens, f"{bench.prompt_tokens} prompt tokens"
    found = [p for p in (model_positions(subject.engine), declared) if p is not None]
    positions = min(found) if found else None
    why = None if positions is None else f"the model has {positions} positions"
    row = np.asarray(subject.rows[io.token_ids][0]).reshape(-1).astype(io.ids_dtype)
    if positions is None or want + bench.decode_tokens <= positions:
        longest, reason = _longest_prompt(subject.session, io, row, want + bench.decode_tokens)
        if reason is not None:
            positions, why = longest, f"a {want + bench.decode_tokens}-token prompt fails in ONNX Runtime ({reason}); {longest} tokens run"
    if positions is not None and want + bench.decode_tokens > positions:
        want = positions - bench.decode_tokens
        if want < 1:
            raise DecoderError(f"{bench.decode_tokens} decode tokens do not fit: {why}",
                               "lower recipe.bench.decode_tokens")
        note = f"{want} prompt tokens (recipe.bench.prompt_tokens {bench.prompt_tokens} shortened: {why}, {bench.decode_tokens} of them for decoding)"
    return Prompt(np.resize(row, (1, want)), note + ", the first row of the bench feeds' token ids repeated to length")


def time_to_first_token(subject: Subject, io: DecoderIO, prompt: Prompt, runs: int) -> dict[str, Any]:
    """p50/p90 ms of the prompt's forward pass at batch 1 (empty past), `runs` timed after one warm-up."""
    feed, run = step_feed(io, prompt.ids, None, prompt.ids.shape[1]), _runner(subject, io)
    run(feed)
    samples = time_runs(lambda: run(feed), runs)
    stats = {k: v for k, v in summarize(samples).items() if k != "throughput_per_s"}
    cache = (f"empty past key/values, logits and present key/values fetched ({_cache_how(subject)})" if io.kv_cache
             else "no KV cache in the graph: logits only")
    if io.keep is not None:
        cache += f" (the last position's logits only: the engine's {io.keep} input fed 1)"
    return {**stats, "prompt_tokens": int(prompt.ids.shape[1]), "kv_cache": io.kv_cache, "samples_ms": samples,
            "how": f"the prompt's forward pass at batch 1: {prompt.note}; {cache}; {runs} timed passes after one warm-up pass"}


def decode_tokens_per_second(subject: Subject, io: DecoderIO, prompt: Prompt, new_tokens: int, runs: int) -> dict[str, Any]:
    """Greedy generation of `new_tokens` tokens after the prompt, `runs` times after one warm-up
    generation; each step timed (run, argmax, next feed). The prompt pass is not in the decode time."""
    session, kv = subject.session, subject.kv
    warm = Greedy(session, io, prompt.ids, kv, new_tokens)
    for _ in range(new_tokens):
        warm.step()
    samples: list[float] = []
    per_generation: list[float] = []
    tokens: list[int] = []
    for _ in range(runs):
        gen = Greedy(session, io, prompt.ids, kv, new_tokens)
        times = time_runs(gen.step, new_tokens)
        samples, tokens = samples + times, gen.tokens
        per_generation.append(new_tokens * 1000.0 / sum(times))
    stats = {k: v for k, v in summarize(samples).items() if k != "throughput_per_s"}
    feedback = (f"each step feeds the last token, the attention mask grown by one, the cache of the steps before "
                f"as past ({_cache_how(subject)})" if io.kv_cache else NO_CACHE)
    return {"tokens_per_s": len(samples) * 1000.0 / sum(samples), "new_tokens": new_tokens, "generations": runs,
            "prompt_tokens": int(prompt.ids.shape[1]), "kv_cache": io.kv_cache, "per_token": stats,
            "tokens_per_s_per_generation": per_generation, "first_token_id": warm.first_token, "generated_ids": tokens,
            "samples_ms": samples,
            "how": f"greedy decoding at batch 1 after the prompt ({prompt.note}); {new_tokens} tokens one at a time, "
                   f"the next token the argmax of the last logits; {feedback}; every step timed (run, argmax, next feed); "
                   f"{runs} generations after one warm-up generation; tokens/s = generated tokens / total decode time "
                   "(the prompt pass is TimeToFirstToken, not counted here)"}


def not_available(scenario: str, reason: str, where: str) -> dict[str, Any]:
    return {"method": "not available", "scenario": scenario, "where": where, "how": reason}


def decoder_scenarios(subject: Subject, bench: BenchConfig,
                      progress: Callable[[str], None] = lambda _: None) -> dict[str, dict[str, Any]]:
    """The decoder scenarios `bench.scenarios` asks for, by result key ("ttft", "decode"); nothing
    for a model that is not a decoder. A decoder that cannot be driven, a run that fails, or a
    scenario the profile did not ask for, is reported "not available" with the reason."""
    wanted = [s for s in DECODER_SCENARIOS if s in bench.scenarios]
    if not is_decoder(subject.inputs, _dims(subject.session.get_outputs())):
        return {}
    # a decoder whose profile leaves a scenario out: said so (not "not a decoder"), and nothing is timed for it
    results: dict[str, dict[str, Any]] = {
        RESULT_KEYS[s]: not_available(s, f"{s} not run: not asked for (recipe.bench.scenarios is {', '.join(bench.scenarios)}; "
                                         f"add {s} to measure it)", subject.where)
        for s in DECODER_SCENARIOS if s not in wanted}
    try:
        io = decoder_io(subject.session, subject.inputs) if wanted else None
        prompt = make_prompt(subject, io, bench) if io is not None else None
    except DecoderError as exc:
        return {**results, **{RESULT_KEYS[s]: not_available(s, f"{s} not run: {exc.one_line()}", subject.where) for s in wanted}}
    if io is None or prompt is None:
        return results
    for scenario in wanted:
        progress(scenario)
        try:
            result = (time_to_first_token(subject, io, prompt, bench.ttft_runs) if scenario == TIME_TO_FIRST_TOKEN
                      else decode_tokens_per_second(subject, io, prompt, bench.decode_tokens, bench.decode_runs))
        except runtime_errors() as exc:  # the runtime refused a feed: reported, not hidden
            results[RESULT_KEYS[scenario]] = not_available(scenario, f"{scenario} failed in ONNX Runtime: {exc}", subject.where)
            continue
        results[RESULT_KEYS[scenario]] = {"method": "measured", "scenario": scenario, "where": subject.where, **result}
    return results
