"""Does edgekd's decode loop gain from sharing the KV buffers, as onnxruntime-genai does?

Findings section 9 found edgekd's engine run by onnxruntime-genai at 0.86-0.87x edgekd's own loop's
decode step. The same engine file driven three ways in one process, 2 intra-op threads, each through
the code that ships: "copy" is edgekd.perf.decoder.Greedy feeding the presents back as past with
session.run (edgekd's loop before edgekd.backends.ort.kv_buffers; each step writes past + the new token
into a fresh present); "edgekd" is the same Greedy on the runner's KvBuffers (one max-length buffer per
past input bound as both that input and its present output with ONNX Runtime IOBinding, the growing
attention mask giving the lengths: what edgekd's runner, bench and tuner now do for a graph whose
attention is GroupQueryAttention); and, where a genai_config.json sits beside the engine
(edgekd.deploy.genai_folder), "genai": onnxruntime-genai's generate_next_token on that folder (the model
run on the last pick, then the pick). A 128-token random prompt, 32 greedy steps, 12 rounds in
alternating order; the tokens of every way must match. Times are per decode step (Greedy.step: run,
argmax, next feed; or genai's step). Then the prompt pass of the same prompt, 4 passes per way per
round: "run-keep" session.run fed logits_to_keep 1 where the engine has it (the head for the last
position only); "edgekd" the runner's KvBuffers on the same feed (IOBinding cannot bind logits_to_keep,
so this is session.run too, the presents left for the first step to copy); "kv-all" the KvBuffers
without logits_to_keep (every position's logits, the cache written into the buffers); "genai" genai's
append_tokens of the prompt then rewind_to(0) (every position's logits: genai does not feed it).

    python benchmarks/shared_kv.py ENGINE.onnx [--name shared_kv]

Writes benchmarks/results/NAME.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekd.backends.runners import OrtRunner
from edgekd.common.toolchain import host_info
from edgekd.config.target import SessionConfig
from edgekd.graph.resolve import load_inputs
from edgekd.perf.decoder import Greedy, decoder_io

RESULTS = Path(__file__).parent / "results"
PROMPT, STEPS, ROUNDS = 128, 32, 12


class Engine:
    def __init__(self, path: Path) -> None:
        self.runner = OrtRunner(path, SessionConfig(intra_op_num_threads=2))
        if self.runner.kv is None:
            raise SystemExit(f"{path}: its attention is not GroupQueryAttention: no shared KV buffers to compare")
        io = decoder_io(self.runner.session, load_inputs(path))
        assert io is not None, "not a decoder"
        self.io = io
        self.prompt = np.random.default_rng(1).integers(0, 49152, (1, PROMPT), dtype=np.int64)

    def loop(self, shared: bool) -> tuple[list[int], list[float]]:
        gen = Greedy(self.runner.session, self.io, self.prompt, self.runner.kv if shared else None, STEPS)
        times = []
        for _ in range(STEPS):
            start = time.perf_counter()
            gen.step()
            times.append(time.perf_counter() - start)
        return [gen.first_token, *gen.tokens[:-1]], times


def prompt_ways(engine: Engine, genai: Genai | None) -> dict[str, Callable[[], object]]:
    from edgekd.graph.decoder import complete_feeds
    from edgekd.graph.logits_to_keep import KEEP

    runner, ids = engine.runner, engine.prompt
    full = complete_feeds(runner.session, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    keep = {**full, KEEP: np.ones(1, np.int64)} if engine.io.keep else full
    ways: dict[str, Callable[[], object]] = {"run-keep": lambda: runner.session.run(None, keep), "edgekd": lambda: runner.run(keep),
                                             "kv-all": lambda: runner.run(full)}
    if genai is not None:
        ways["genai"] = genai.prefill
    return ways


def interleave(ways: dict[str, Callable[[], tuple[list[int], list[float]]]]) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Every way's samples (s) over ROUNDS rounds in alternating order, and its first tokens."""
    samples: dict[str, list[float]] = {way: [] for way in ways}
    tokens: dict[str, list[int]] = {}
    for r in range(ROUNDS):
        for way in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            got, times = ways[way]()
            samples[way] += times
            tokens.setdefault(way, got)
    return samples, tokens


def timed(call: Callable[[], object], runs: int = 4) -> Callable[[], tuple[list[int], list[float]]]:
    def run() -> tuple[list[int], list[float]]:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return [], times
    return run


def table(samples: dict[str, list[float]], what: str, base: str) -> tuple[dict[str, dict[str, float]], list[str]]:
    stats = {w: {"p50_ms": float(np.percentile(t, 50) * 1e3), "p90_ms": float(np.percentile(t, 90) * 1e3), "runs": len(t)}
             for w, t in samples.items()}
    md = [f"| way | {what} p50 | p90 | runs |", "|---|---|---|---|"]
    md += [f"| {w} | {s['p50_ms']:.3f} ms | {s['p90_ms']:.3f} ms | {s['runs']} |" for w, s in stats.items()]
    md += [""] + [f"{w} / {base}, p50: **{stats[w]['p50_ms'] / stats[base]['p50_ms']:.2f}**, "
                  f"p90: **{stats[w]['p90_ms'] / stats[base]['p90_ms']:.2f}**." for w in stats if w != base]
    return stats, md


class Genai:
    def __init__(self, folder: Path, prompt: np.ndarray) -> None:
        import onnxruntime_genai as og

        self.og, self.model, self.prompt = og, og.Model(str(folder)), prompt

    def steps(self) -> tuple[list[int], list[float]]:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=PROMPT + STEPS + 2)
        generator = self.og.Generator(self.model, params)
        generator.append_tokens(self.prompt.astype(np.int32))
        generator.generate_next_token()  # the first pick, from the prompt's logits: no model run
        tokens, times = [int(generator.get_next_tokens()[0])], []
        for _ in range(STEPS):
            start = time.perf_counter()
            generator.generate_next_token()
            times.append(time.perf_counter() - start)
            tokens.append(int(generator.get_next_tokens()[0]))
        return tokens[:STEPS], times

    def prefill(self) -> None:
        """One forward pass over the prompt, then back to an empty cache (as benchmarks/peers_real_rows.GenaiRow)."""
        if not hasattr(self, "generator"):
            params = self.og.GeneratorParams(self.model)
            params.set_search_options(max_length=PROMPT + 2)
            self.generator = self.og.Generator(self.model, params)
        self.generator.append_tokens(self.prompt.astype(np.int32))
        self.generator.rewind_to(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", type=Path)
    parser.add_argument("--name", default="shared_kv")
    args = parser.parse_args()
    engine = Engine(args.engine)
    ways = {"copy": lambda: engine.loop(False), "edgekd": lambda: engine.loop(True)}
    genai = Genai(args.engine.parent, engine.prompt) if (args.engine.parent / "genai_config.json").is_file() else None
    if genai is not None:
        ways["genai"] = genai.steps
    samples, tokens = interleave(ways)
    stats, decode_md = table(samples, "decode step", "copy")
    prompt_samples, _ = interleave({w: timed(call) for w, call in prompt_ways(engine, genai).items()})
    prompt_stats, prompt_md = table(prompt_samples, "prompt pass", "run-keep")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
    result = {"engine": str(args.engine), "edgekd_commit": commit, "host": host_info(), "same_tokens": all(t == tokens["copy"] for t in tokens.values()),
              "stats": stats, "prompt_stats": prompt_stats, "how": __doc__.split("\n\n")[1].replace("\n", " ")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Shared KV buffers in edgekd's decode loop ({args.name})", "", result["how"], "",
          f"Engine: `{args.engine}`; edgekd at {commit}; host {result['host']['cpu']}. Same greedy tokens: {result['same_tokens']}.", "",
          *decode_md, "", *prompt_md]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
