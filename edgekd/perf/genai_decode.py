"""DecodeTokensPerSecond through onnxruntime-genai, for a decoder engine whose folder has the genai_config.json
`edgekd compile` writes (edgekd.deploy.genai_folder): the same prompt and number of greedy tokens as edgekd's
own loop (edgekd.perf.decoder), genai's Generator doing the search and the KV cache (with shared
key/value buffers where the config says so). Its tokens are checked against the loop's.

The bench worker runs it after it has read its peak memory: genai opens its own session of the engine,
which is not the engine's footprint."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.deploy.genai_folder import GENAI_CONFIG
from edgekd.deploy.run_on_device import summarize


def genai_folder(engine: Path) -> Path | None:
    """The engine's folder where it has a genai_config.json naming the engine file, else None."""
    path = engine.parent / GENAI_CONFIG
    if not path.is_file():
        return None
    try:
        named = json.loads(path.read_text())["model"]["decoder"]["filename"]
    except (ValueError, KeyError, TypeError):
        return None
    return engine.parent if named == engine.name else None


def _generation(og: Any, model: Any, prompt: np.ndarray, new_tokens: int) -> tuple[list[float], list[int]]:
    """One greedy generation: the prompt appended, the first token picked from its logits (genai runs no
    model for it), then `new_tokens` timed steps, each the model run on the last token and the pick of the
    next (what a step of edgekd's loop does). (step ms, the tokens the steps picked)."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt.shape[1] + new_tokens + 1)  # the prompt, the first pick, one per step
    generator = og.Generator(model, params)
    generator.append_tokens(prompt.astype(np.int32))
    generator.generate_next_token()
    times, tokens = [], []
    for _ in range(new_tokens):
        start = time.perf_counter()
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
        times.append((time.perf_counter() - start) * 1e3)
    return times, tokens


def genai_decode(folder: Path, prompt: np.ndarray, new_tokens: int, runs: int, loop_tokens: list[int]) -> dict[str, Any]:
    """Greedy generation of `new_tokens` after `prompt` ([1, P] token ids) with onnxruntime-genai on `folder`,
    `runs` times after one warm-up generation; `loop_tokens`: the tokens edgekd's loop generated, compared."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        return {"method": "not available", "how": "onnxruntime-genai is not installed here (pip install onnxruntime-genai)"}
    config = json.loads((folder / GENAI_CONFIG).read_text())
    shared = bool(config["search"].get("past_present_share_buffer"))
    # genai holds the last step's pick in its sequence too: at the model's last position, one step fewer
    steps = min(new_tokens, int(config["model"]["context_length"]) - prompt.shape[1] - 1)
    if steps < 1:
        return {"method": "not available", "how": f"a {prompt.shape[1]}-token prompt leaves no decode step within the model's context"}
    samples: list[float] = []
    try:
        model = og.Model(str(folder))
        _, tokens = _generation(og, model, prompt, steps)
        for _ in range(runs):
            samples += _generation(og, model, prompt, steps)[0]
    except RuntimeError as exc:  # genai's errors: the loop's numbers stand, this one says why it is missing
        return {"method": "not available", "how": f"onnxruntime-genai {og.__version__} failed on {folder.name}/{GENAI_CONFIG}: "
                                                  f"{str(exc).splitlines()[0][:200]}"}
    stats = {k: v for k, v in summarize(samples).items() if k != "throughput_per_s"}
    return {"method": "measured", "tokens_per_s": len(samples) * 1000.0 / sum(samples), "per_token": stats, "generations": runs,
            "new_tokens": steps, "same_tokens_as_loop": tokens == list(loop_tokens)[:steps], "shared_buffers": shared,
            "version": og.__version__,
            "how": (f"onnxruntime-genai {og.__version__}'s Generator on {folder.name}/{GENAI_CONFIG} (past_present_share_buffer "
                    f"{'on' if shared else 'off'}), greedy: the same {prompt.shape[1]}-token prompt and {steps} tokens as "
                    f"the loop's{'' if steps == new_tokens else ' (its first ' + str(steps) + ' of ' + str(new_tokens) + ': genai keeps the last pick in its sequence, which would pass the context)'}; every step timed (the model run on the last token + the pick of the next); {runs} generations "
                    "after one warm-up generation, in the bench worker after its peak memory was read")}
