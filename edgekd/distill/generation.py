"""A local teacher's generations for sequence-level KD (Kim & Rush 2016): each prompt (token ids,
all of one length P) continued by `max_new_tokens` tokens, `samples_per_prompt` times.

A Hugging Face teacher (a module with `.generate`) runs transformers' `model.generate` with the
[distill.generate] settings (greedy, sampling with temperature/top-k/top-p, beam search). Any other
teacher that reads its inputs (a plain torch module, an ONNX model through ONNX Runtime, an ensemble)
goes through edgekd's loop: each step runs the teacher's full-sequence forward on the sequences so
far (right-padded to P + max_new_tokens, padding masked; a causal model's logits at t do not read
later positions) and picks the next token greedily or by sampling. Beam search is transformers'
only. A row stops at the end-of-sequence token when the data's tokenizer has one; what follows it
is padding. torch is imported inside the functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.config.generate import GenerateConfig
from edgekd.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from edgekd.distill.teachers import TeacherSource
    from edgekd.stages.context import Context

GENERATE_BATCH = 64  # prompts per generation call (not part of any cache key: the results do not depend on it for greedy/beam)
HF_ENGINE = "transformers model.generate"
LOOP_ENGINE = "edgekd's token loop over the teacher's full-sequence forward"
KEY = "distill.generate"


@dataclass(frozen=True)
class Generated:
    """[N, P + max_new_tokens] token ids (prompt, then generated tokens, then `pad_id` after an
    end-of-sequence), each row's real length, the prompt length P, and which engine made them."""

    sequences: np.ndarray
    lengths: np.ndarray
    prompt_tokens: int
    engine: str

    @property
    def count(self) -> int:
        return len(self.sequences)


@dataclass(frozen=True)
class Specials:
    """The data tokenizer's padding and end-of-sequence ids (None: it has no end-of-sequence)."""

    pad_id: int
    eos_id: int | None


def data_tokenizer(ctx: Context) -> Any:
    """The data's tokenizer: teacher sequences (generations, API responses) are tokenized with it."""
    tokenizer = getattr(ctx.data_source, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(f"{ctx.source}: key 'distill.data': teacher sequences are tokenized with the data's tokenizer, and "
                          f"{ctx.data_source.describe()} has none", "give [data] files with a tokenizer")
    return tokenizer


def specials_of(tokenizer: Any) -> Specials:
    """The tokenizer's padding id (0 without one) and end-of-sequence id."""
    pad = tokenizer.pad_token_id
    return Specials(int(pad) if pad is not None else 0, tokenizer.eos_token_id)


def check_settings(cfg: GenerateConfig, max_length: int) -> None:
    """Settings that cannot work, as ConfigErrors naming the key."""
    if cfg.prompt_tokens + cfg.max_new_tokens > max_length:
        raise ConfigError(f"key '{KEY}': prompt_tokens + max_new_tokens = {cfg.prompt_tokens + cfg.max_new_tokens} "
                          f"exceeds the data's max_length {max_length}", "the generated sequences must fit the student's blocks")
    if cfg.strategy == "greedy" and cfg.samples_per_prompt > 1:
        raise ConfigError(f"key '{KEY}.samples_per_prompt': greedy decoding gives the same sequence every time",
                          "use strategy = 'sample' or 'beam' for several sequences per prompt")
    if cfg.strategy == "beam" and cfg.samples_per_prompt > cfg.num_beams:
        raise ConfigError(f"key '{KEY}.samples_per_prompt': {cfg.samples_per_prompt} sequences from {cfg.num_beams} beams",
                          "raise num_beams to at least samples_per_prompt")


def hf_kwargs(cfg: GenerateConfig, specials: Specials) -> dict[str, Any]:
    """`model.generate` keyword arguments for the settings (also what a test calls generate with)."""
    common: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "min_new_tokens": 0, "pad_token_id": specials.pad_id,
                              "eos_token_id": specials.eos_id, "num_return_sequences": cfg.samples_per_prompt}
    if cfg.strategy == "greedy":
        return {**common, "do_sample": False, "num_beams": 1}
    if cfg.strategy == "beam":
        return {**common, "do_sample": False, "num_beams": cfg.num_beams, "early_stopping": True}
    return {**common, "do_sample": True, "num_beams": 1, "temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p}


def hf_module(teacher: TeacherSource) -> Any | None:
    """The teacher's transformers model, when it is one (it has `.generate`)."""
    module = getattr(teacher, "module", None)
    return module if module is not None and callable(getattr(module, "generate", None)) else None


def generate(teacher: TeacherSource, prompts: np.ndarray, cfg: GenerateConfig, specials: Specials) -> Generated:
    """Every prompt of `prompts` [N, P] continued `samples_per_prompt` times (rows prompt-major)."""
    import torch

    if prompts.ndim != 2 or prompts.shape[0] == 0:
        raise ConfigError(f"key '{KEY}': no prompts to generate from", "give train blocks or a prompts file with text")
    torch.manual_seed(cfg.seed)
    module = hf_module(teacher)
    if module is None and cfg.strategy == "beam":
        raise ConfigError(f"key '{KEY}.strategy': beam search runs through transformers' generate, and the teacher is "
                          f"{teacher.describe()}", "use a Hugging Face teacher ([teacher.hf]), or strategy = 'greedy' or 'sample'")
    if module is None and not teacher.reads_inputs:
        raise ConfigError(f"key '{KEY}': {teacher.describe()} answers by sample position and cannot continue a prompt",
                          "generations need a model teacher (torch, Hugging Face or ONNX)")
    generator = torch.Generator().manual_seed(cfg.seed)
    parts = []
    for start in range(0, len(prompts), GENERATE_BATCH):
        chunk = prompts[start:start + GENERATE_BATCH]
        parts.append(hf_generate(module, chunk, cfg, specials) if module is not None
                     else loop_generate(teacher, chunk, cfg, specials, generator))
    sequences = np.concatenate(parts).astype(np.int64)
    return Generated(sequences, real_lengths(sequences, prompts.shape[1], specials.eos_id), prompts.shape[1],
                     HF_ENGINE if module is not None else LOOP_ENGINE)


def hf_generate(module: Any, prompts: np.ndarray, cfg: GenerateConfig, specials: Specials) -> np.ndarray:
    """`model.generate` on one chunk of prompts, right-padded with pad_id to P + max_new_tokens."""
    import torch

    ids = torch.as_tensor(prompts, dtype=torch.int64)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **hf_kwargs(cfg, specials))
    except (ValueError, RuntimeError, IndexError) as exc:
        raise ConfigError(f"key '{KEY}': transformers' generate failed ({str(exc).splitlines()[0]})",
                          "check the generation settings against the teacher") from None
    finally:
        module.train(was_training)
    total = prompts.shape[1] + cfg.max_new_tokens
    padded = np.full((out.shape[0], total), specials.pad_id, dtype=np.int64)
    padded[:, :out.shape[1]] = out.numpy()[:, :total]
    return padded


def next_tokens(logits: torch.Tensor, cfg: GenerateConfig, generator: torch.Generator) -> torch.Tensor:
    """[B] next token ids from [B, V] logits: argmax (greedy), or a draw from softmax(logits / T)
    restricted to the top_k likeliest tokens and then to the smallest set holding top_p of the mass."""
    import torch

    if cfg.strategy == "greedy":
        return logits.argmax(dim=-1)
    scores = logits.float() / cfg.temperature
    if 0 < cfg.top_k < scores.shape[-1]:
        kth = scores.topk(cfg.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if cfg.top_p < 1.0:
        ordered, order = scores.sort(dim=-1, descending=True)
        mass_before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)
        drop = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, order, mass_before > cfg.top_p)
        scores = scores.masked_fill(drop, float("-inf"))
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def loop_generate(teacher: TeacherSource, prompts: np.ndarray, cfg: GenerateConfig, specials: Specials,
                  generator: torch.Generator) -> np.ndarray:
    """Token by token through the teacher's full-sequence forward (see the module docstring)."""
    import torch

    rows = np.repeat(prompts, cfg.samples_per_prompt, axis=0)
    length = prompts.shape[1]
    total = length + cfg.max_new_tokens
    sequences = np.full((len(rows), total), specials.pad_id, dtype=np.int64)
    sequences[:, :length] = rows
    done = np.zeros(len(rows), dtype=bool)
    for t in range(length, total):
        mask = (np.arange(total) < t).astype(np.int64)[None].repeat(len(rows), axis=0)
        logits = np.asarray(teacher.logits({"input_ids": sequences, "attention_mask": mask}))
        if logits.ndim != 3 or logits.shape[:2] != sequences.shape:
            raise ConfigError(f"key '{KEY}': {teacher.describe()} gives outputs {list(logits.shape)} for tokens "
                              f"{list(sequences.shape)}", "generations need a causal LM teacher: [batch, sequence, vocab] logits")
        chosen = next_tokens(torch.from_numpy(logits[:, t - 1]), cfg, generator).numpy()
        sequences[:, t] = np.where(done, specials.pad_id, chosen)
        if specials.eos_id is not None:
            done |= chosen == specials.eos_id
            if done.all():
                break
    return sequences


def real_lengths(sequences: np.ndarray, prompt_tokens: int, eos_id: int | None) -> np.ndarray:
    """Each row's tokens up to and including its first generated end-of-sequence (all without one)."""
    lengths = np.full(len(sequences), sequences.shape[1], dtype=np.int64)
    if eos_id is None:
        return lengths
    generated = sequences[:, prompt_tokens:] == eos_id
    stops = generated.any(axis=1)
    lengths[stops] = prompt_tokens + generated[stops].argmax(axis=1) + 1
    return lengths
