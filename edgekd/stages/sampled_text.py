"""`edgekd compile` of a language model without data: evaluation text written by the model itself.

A decoder graph with a KV cache (optimum's `text-generation-with-past`) compiled without --data has
no text to be judged on. Random token ids are a poor stand-in: a trained model's perplexity on them
is huge and hardly moves when quantization changes it, and the top-1 agreement of two graphs on
random contexts breaks on near-flat distributions (on random weights every INT8 or INT4 variant
agreed with fp32 on ~84 % of positions, so no quantized variant ever held a 1-point budget).

Instead the fp32 graph writes the evaluation text: from a random first token per row it samples each
next token from its own softmax (temperature 1, batched rows, its KV cache fed back). Every graph is
then scored by the causal-LM task's ordinary perplexity on that text. For the fp32 graph this is
exp(its mean entropy) in expectation; for a quantized variant exp(the mean cross-entropy against the
fp32 graph's distribution), so the variant's increase estimates exp(mean KL(fp32 || variant)) - 1,
the divergence llama.cpp's perplexity tool reports for quantized models. It is a fidelity check
against the given model, not the model's quality on real text (the description says so).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.graph.feeds import FeedSet, random_feedset
from edgekd.graph.inputs import ModelInputs

TEMPERATURE = 1.0


def _softmax_sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row of `logits` [rows, vocab], drawn from softmax(logits / TEMPERATURE)."""
    z = logits.astype(np.float64) / TEMPERATURE
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((len(cdf), 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=-1), logits.shape[-1] - 1)[:, None]


def sample_tokens(model: Path, inputs: ModelInputs, rows: int, length: int, seed: int) -> np.ndarray | None:
    """[rows, length] token ids sampled from the decoder graph at `model` (see the module docstring);
    None when the graph is not a decoder with a KV cache that edgekd.perf.decoder can drive, or its
    logits' vocabulary axis is symbolic."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import empty_past, past_inputs
    from edgekd.perf.decoder import DecoderError, decoder_io

    session = open_session(model)
    try:
        io = decoder_io(session, inputs)
    except DecoderError:
        return None
    if io is None or not io.kv_cache:
        return None
    vocab = next(o.shape[-1] for o in session.get_outputs() if o.name == io.logits)
    if not isinstance(vocab, int):  # a symbolic vocabulary axis: no range to draw the first tokens from
        return None
    rng = np.random.default_rng(seed)
    pasts = past_inputs(session.get_inputs())
    tokens = [rng.integers(0, vocab, (rows, 1))]
    presents: list[np.ndarray] | None = None
    for total in range(1, length):
        feed = {io.token_ids: tokens[-1].astype(io.ids_dtype)}
        feed.update(empty_past(pasts, rows) if presents is None else dict(zip((s.name for s in io.past), presents)))
        if io.mask is not None:
            feed[io.mask.name] = np.ones((rows, total), io.mask.dtype)
        if io.positions is not None:
            feed[io.positions.name] = np.full((rows, 1), total - 1, io.positions.dtype)
        for spec in io.zeros:
            feed[spec.name] = np.zeros((rows, 1), spec.dtype)
        logits, *presents = session.run(io.fetches, feed)
        tokens.append(_softmax_sample(logits[:, -1], rng))
    return np.concatenate(tokens, axis=1)


def sampled_feedset(model: Path, inputs: ModelInputs, rows: int, seed: int) -> FeedSet | None:
    """The generated feeds of `inputs` with their token ids replaced by text the model samples
    (the mask all ones, positions 0..T-1 as generated); None where `sample_tokens` is."""
    base = random_feedset(inputs, rows, seed)
    token = next((i for i in inputs.inputs if i.role == "token_ids"), None)
    if token is None or token.name not in base.arrays or base.arrays[token.name].ndim != 2:
        return None
    length = base.arrays[token.name].shape[1]
    ids = sample_tokens(model, inputs, rows, length, seed)
    if ids is None:
        return None
    arrays = dict(base.arrays)
    arrays[token.name] = ids.astype(arrays[token.name].dtype)
    for spec in inputs.inputs:
        if spec.role == "attention_mask" and spec.name in arrays:
            arrays[spec.name] = np.ones_like(arrays[spec.name])
        elif spec.role == "position_ids" and spec.name in arrays:
            arrays[spec.name] = np.broadcast_to(np.arange(length, dtype=arrays[spec.name].dtype), arrays[spec.name].shape).copy()
    return FeedSet(arrays, None, f"{rows} sequences of {length} tokens the fp32 model sampled itself (temperature {TEMPERATURE:g}, "
                   "from a random first token): perplexity on them checks fidelity to the fp32 model, not quality on real text",
                   fit_for_accuracy=False)
