"""Would edgekd's own decode loop gain from sharing the KV buffers, as onnxruntime-genai does?

A probe for the next step after findings section 9 (edgekd's engine on genai was 0.86-0.87x edgekd's
own loop's decode step). The same engine file driven two ways in one process, 2 intra-op threads:
"copy" feeds the presents back as past with session.run (edgekd.perf.decoder.Greedy's way: each step
writes past + the new token into a fresh present); "shared" binds one max-length buffer per past input
as both that input and its present output (ONNX Runtime IOBinding), the growing attention mask giving
the lengths, as genai's past_present_share_buffer does; and, where a genai_config.json sits beside the
engine (edgekd.deploy.genai_folder), "genai": onnxruntime-genai's generate_next_token on that folder
(the model run on the last pick, then the pick). A 128-token random prompt, 32 greedy steps, 6 rounds
in alternating order; the tokens of every way must match. Times are per decode step (the session call,
or genai's step).

    python benchmarks/shared_kv.py ENGINE.onnx [--name shared_kv]

Writes benchmarks/results/NAME.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekd.common.toolchain import host_info

RESULTS = Path(__file__).parent / "results"
PROMPT, STEPS, ROUNDS = 128, 32, 6


class Engine:
    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.sess.get_inputs()}
        self.outs = [o.name for o in self.sess.get_outputs()]
        self.pasts = [n for n in inputs if n.startswith("past_key_values")]
        self.kv, self.dim = inputs[self.pasts[0]].shape[1], inputs[self.pasts[0]].shape[3]
        self.prompt = np.random.default_rng(1).integers(0, 49152, (1, PROMPT), dtype=np.int64)

    def copying(self) -> tuple[list[int], list[float]]:
        feed = {"input_ids": self.prompt, "attention_mask": np.ones((1, PROMPT), np.int64),
                **{n: np.zeros((1, self.kv, 0, self.dim), np.float32) for n in self.pasts}}
        out, total, tokens, times = dict(zip(self.outs, self.sess.run(None, feed))), PROMPT, [], []
        for _ in range(STEPS):
            token = out["logits"][:, -1:].argmax(-1).astype(np.int64)
            tokens.append(int(token[0, 0]))
            total += 1
            feed = {"input_ids": token, "attention_mask": np.ones((1, total), np.int64),
                    **{n: out[n.replace("past_key_values", "present")] for n in self.pasts}}
            start = time.perf_counter()
            out = dict(zip(self.outs, self.sess.run(None, feed)))
            times.append(time.perf_counter() - start)
        return tokens, times

    def shared(self) -> tuple[list[int], list[float]]:
        binding = self.sess.io_binding()
        for name in self.pasts:
            buffer = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, self.kv, PROMPT + STEPS + 1, self.dim), np.float32))
            binding.bind_ortvalue_input(name, buffer)
            binding.bind_ortvalue_output(name.replace("past_key_values", "present"), buffer)

        def run(ids: np.ndarray, total: int) -> np.ndarray:
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
            binding.bind_output("logits")
            self.sess.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[-1]
        logits, total, tokens, times = run(self.prompt, PROMPT), PROMPT, [], []
        for _ in range(STEPS):
            token = logits[:, -1:].argmax(-1).astype(np.int64)
            tokens.append(int(token[0, 0]))
            total += 1
            start = time.perf_counter()
            logits = run(token, total)
            times.append(time.perf_counter() - start)
        return tokens, times


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", type=Path)
    parser.add_argument("--name", default="shared_kv")
    args = parser.parse_args()
    engine = Engine(args.engine)
    ways = {"copy": engine.copying, "shared": engine.shared}
    if (args.engine.parent / "genai_config.json").is_file():
        ways["genai"] = Genai(args.engine.parent, engine.prompt).steps
    samples: dict[str, list[float]] = {way: [] for way in ways}
    tokens: dict[str, list[int]] = {}
    for r in range(ROUNDS):
        for way in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            got, times = ways[way]()
            samples[way] += times
            tokens.setdefault(way, got)
    stats = {w: {"p50_ms": float(np.percentile(t, 50) * 1e3), "p90_ms": float(np.percentile(t, 90) * 1e3), "steps": len(t)}
             for w, t in samples.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
    result = {"engine": str(args.engine), "edgekd_commit": commit, "host": host_info(), "same_tokens": all(t == tokens["copy"] for t in tokens.values()),
              "stats": stats, "how": __doc__.split("\n\n")[1].replace("\n", " ")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Shared KV buffers in edgekd's own loop? ({args.name})", "", result["how"], "",
          f"Engine: `{args.engine}`; edgekd at {commit}; host {result['host']['cpu']}. Same greedy tokens: {result['same_tokens']}.", "",
          "| way | decode step p50 | p90 | steps |", "|---|---|---|---|"]
    md += [f"| {w} | {s['p50_ms']:.3f} ms | {s['p90_ms']:.3f} ms | {s['steps']} |" for w, s in stats.items()]
    md += [""] + [f"{w} / copy, p50: **{stats[w]['p50_ms'] / stats['copy']['p50_ms']:.2f}**, "
                  f"p90: **{stats[w]['p90_ms'] / stats['copy']['p90_ms']:.2f}**." for w in stats if w != "copy"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
