"""Write an API teacher's file (edgekd.distill.api_responses) from a local causal LM: what a remote
model's API would return, to emulate one (the LM benchmark) or to test the API path on a real model.

Each prompt is tokenized, continued by `max_new_tokens` tokens (greedy, or sampled at
`temperature`), stopping at the tokenizer's end-of-sequence token; per response token the line
holds the chosen token and the model's `top_logprobs` likeliest alternatives with their
log-probabilities at temperature 1 (OpenAI's `logprobs.content[i]` shape). Token strings are the
tokenizer's incremental decoding (the text a token adds after the ones before it), so the chosen
tokens spell the response and prompt + response is the decoded text.

    python -m edgekd.distill.api_teacher export --model MODEL_FOLDER --tokenizer TOKENIZER \\
        --prompts prompts.txt --out responses.jsonl [--max-new-tokens 32] [--top-logprobs 5] \\
        [--sample --temperature 1.0] [--seed 0] [--no-logprobs]
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.fsutil import atomic_write_text
from edgekd.errors import ConfigError

LogitsFn = Callable[[list[int]], np.ndarray]  # token ids so far -> next-token logits [V]


@dataclass(frozen=True)
class ExportSettings:
    max_new_tokens: int = 32
    top_logprobs: int = 5
    sample: bool = False
    temperature: float = 1.0
    seed: int = 0
    logprobs: bool = True


def module_logits(module: Any) -> LogitsFn:
    """Next-token logits of a torch causal LM (a transformers model, or a module returning [1, T, V]).
    A transformers model keeps its KV cache between calls that extend the last sequence by one token
    (a response is generated token by token), so each step runs one token, not the whole sequence."""
    import torch

    state: dict[str, Any] = {"ids": None, "past": None}
    cached = hasattr(module, "config") and getattr(module.config, "use_cache", False)

    def logits(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            if not cached:
                out = module(torch.as_tensor([ids], dtype=torch.int64))
            else:
                step = state["past"] is not None and len(ids) == len(state["ids"]) + 1 and ids[:-1] == state["ids"]
                feed = ids[-1:] if step else ids
                out = module(torch.as_tensor([feed], dtype=torch.int64), past_key_values=state["past"] if step else None,
                             use_cache=True)
                state["ids"], state["past"] = list(ids), out.past_key_values
        out = getattr(out, "logits", out)
        return out[0, -1].float().numpy()

    return logits


def piece(tokenizer: Any, before: list[int], token: int) -> str:
    """The text `token` adds after `before` (incremental decoding)."""
    prefix = tokenizer.decode(before)
    text = tokenizer.decode([*before, token])
    return text[len(prefix):] if text.startswith(prefix) else tokenizer.decode([token])


def respond(logits_of: LogitsFn, tokenizer: Any, prompt_ids: list[int], settings: ExportSettings,
            rng: np.random.Generator) -> dict[str, Any]:
    """One line of the file for one prompt."""
    ids, items = list(prompt_ids), []
    eos = tokenizer.eos_token_id
    for _ in range(settings.max_new_tokens):
        z = logits_of(ids).astype(np.float64)
        logp = z - z.max()
        logp -= np.log(np.exp(logp).sum())
        if settings.sample:
            scaled = np.exp((z - z.max()) / settings.temperature)
            token = int(rng.choice(len(z), p=scaled / scaled.sum()))
        else:
            token = int(np.argmax(z))
        if eos is not None and token == eos:
            break
        top = np.argsort(-logp, kind="stable")[:settings.top_logprobs]
        items.append({"token": piece(tokenizer, ids, token), "logprob": float(logp[token]),
                      "top_logprobs": [{"token": piece(tokenizer, ids, int(t)), "logprob": float(logp[t])} for t in top]})
        ids.append(token)
    line: dict[str, Any] = {"prompt": tokenizer.decode(list(prompt_ids)), "response": "".join(i["token"] for i in items)}
    if settings.logprobs:
        line["top_logprobs"] = items
    return line


def export_responses(logits_of: LogitsFn, tokenizer: Any, prompts: Sequence[str], out: Path, settings: ExportSettings) -> int:
    """Write one JSON line per prompt to `out` (atomically); returns the number of lines."""
    if settings.max_new_tokens < 1 or settings.top_logprobs < 1 or settings.temperature <= 0:
        raise ConfigError(f"api export: max_new_tokens {settings.max_new_tokens}, top_logprobs {settings.top_logprobs}, "
                          f"temperature {settings.temperature}", "give positive values")
    rng = np.random.default_rng(settings.seed)
    lines = []
    for prompt in prompts:
        ids = list(tokenizer(prompt)["input_ids"])
        if ids:
            lines.append(json.dumps(respond(logits_of, tokenizer, ids, settings, rng), ensure_ascii=False))
    if not lines:
        raise ConfigError("api export: no prompt has a token", "give non-empty prompts")
    atomic_write_text(Path(out), "\n".join(lines) + "\n")
    return len(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edgekd.distill.api_teacher export ...` (see the module docstring)."""
    from transformers import AutoModelForCausalLM

    from edgekd.data.hf_files import load_tokenizer

    parser = argparse.ArgumentParser(prog="python -m edgekd.distill.api_teacher", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("export", help="write an API-teacher JSONL from a local Hugging Face causal LM")
    cmd.add_argument("--model", required=True, type=Path, help="a transformers model folder (save_pretrained)")
    cmd.add_argument("--tokenizer", required=True, type=Path, help="a tokenizer folder or tokenizer.json")
    cmd.add_argument("--prompts", required=True, type=Path, help="a text file, one prompt a line")
    cmd.add_argument("--out", required=True, type=Path)
    cmd.add_argument("--max-new-tokens", type=int, default=32)
    cmd.add_argument("--top-logprobs", type=int, default=5)
    cmd.add_argument("--sample", action="store_true")
    cmd.add_argument("--temperature", type=float, default=1.0)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--no-logprobs", action="store_true", help="responses only, as an API without logprobs gives")
    args = parser.parse_args(argv)
    model = AutoModelForCausalLM.from_pretrained(str(args.model), local_files_only=True).eval()
    prompts = [line for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    settings = ExportSettings(args.max_new_tokens, args.top_logprobs, args.sample, args.temperature, args.seed, not args.no_logprobs)
    count = export_responses(module_logits(model), load_tokenizer(args.tokenizer), prompts, args.out, settings)
    print(f"wrote {count} responses to {args.out}")
    return 0
