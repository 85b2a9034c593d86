"""What running edgekd's decoder engine with onnxruntime-genai is worth (the genai_config.json `edgekd compile`
writes beside x86 decoder engines: edgekd.deploy.genai_folder), against edgekd's own generation loop.

A Llama at the SmolLM-135M shape with its tied head (decoder_families.SHAPE; random weights, biases and
norm weights), exported the way edgekd exports, given logits_to_keep (head untied), then three engines
as the x86 tuner makes them: "int4" (GroupQueryAttention-fused, INT4 weight-only blocks of 128, accuracy
level 4: the decode branch edgekd picks), "split" (edgekd.graph.phase_split: the fused graph's dynamic
INT8 for the prompt pass, that INT4 graph for each decode step: the engine edgekd chose in
peers_real_tied) and "int4-unfused" (the same INT4 recipe on the unfused export: an attention genai
cannot share buffers with). Each engine is run three ways, one process, 2 intra-op threads each:
  loop          ONNX Runtime session.run as edgekd's bench does (edgekd.perf.decoder.Greedy): the prompt
                pass fed logits_to_keep 1, then each step feeds the last token and the previous step's
                presents back as past (ONNX Runtime copies the cache into each new present)
  genai-shared  onnxruntime-genai's Generator on the engine's folder, past_present_share_buffer on (its
                max-length key/value buffers bound as past and present: only the new token is written)
  genai-copied  the same with past_present_share_buffer off
Timed per generation: the prompt pass (PROMPT tokens; genai computes every position's logits: it does not
feed logits_to_keep) and each of STEPS greedy decode steps (the model run on the last token + the argmax;
genai's generate_next_token after the first, which only picks from the prompt's logits), in interleaved rounds. The greedy tokens of every way are compared with the loop's. Writes
benchmarks/results/genai_runtime.{json,md}.

    python benchmarks/genai_runtime.py [--rounds 8] [--generations 3]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import decoder_families as families

RESULTS = Path(__file__).parent / "results"
PROMPT, STEPS, THREADS = 128, 32, 2


def engines(work: Path) -> dict[str, Path]:
    """The three engines (see the module docstring), each in its own folder."""
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.gqa_fusion import fuse_gqa
    from edgekd.graph.logits_to_keep import add_logits_to_keep
    from edgekd.graph.phase_split import split_by_phase
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only

    families.FAMILIES["llama"] = ("LlamaConfig", "LlamaForCausalLM", {})
    source = families.export("llama", work)
    keep, fused, int8 = work / "keep.onnx", work / "fused.onnx", work / "int8.onnx"
    add_logits_to_keep(source, keep)
    fuse_gqa(keep, fused, positions=families.SHAPE["max_position_embeddings"])
    out = {name: work / name / "model.onnx" for name in ("int4", "split", "int4-unfused")}
    for path in out.values():
        path.parent.mkdir()
    setting = WeightOnly(4, 128, True, 4)
    quantize_weight_only(fused, out["int4"], setting)
    quantize_weight_only(keep, out["int4-unfused"], setting)
    quantize_dynamic_int8(fused, int8, TargetQuantize(), op_types=("MatMul", "Gemm"))
    split_by_phase(int8, out["int4"], out["split"], "input_ids")
    return out


def genai_folders(engine: Path) -> dict[str, Path]:
    """genai-shared / genai-copied folders for `engine` (edgekd's genai_config.json, the buffer flag set
    each way; the shared one only where edgekd.deploy.genai_folder allows it)."""
    from edgekd.deploy.genai_folder import genai_layout, write_genai_config

    layout = genai_layout(engine, {"token_ids": "input_ids", "attention_mask": "attention_mask"},
                          families.SHAPE["max_position_embeddings"], families.SHAPE["num_attention_heads"], THREADS)
    folders = {}
    for way, shared in (("genai-shared", True), ("genai-copied", False)):
        if shared and not layout.shared:
            continue
        folder = engine.parent / way
        folder.mkdir(exist_ok=True)
        (folder / engine.name).unlink(missing_ok=True)
        (folder / engine.name).symlink_to(engine)
        config = {**layout.config, "search": {**layout.config["search"], "past_present_share_buffer": shared}}
        write_genai_config(folder, type(layout)(config, shared))
        folders[way] = folder
    return folders


class Loop:
    """edgekd's loop (edgekd.perf.decoder.Greedy's feeds) on an ONNX Runtime session."""

    def __init__(self, engine: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = THREADS, 1, 3
        self.session = ort.InferenceSession(str(engine), options, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.pasts = [i.name for i in self.session.get_inputs() if i.name.startswith("past")]

    def generate(self, prompt: np.ndarray) -> tuple[float, list[float], list[int]]:
        feed = {"input_ids": prompt, "attention_mask": np.ones_like(prompt), "logits_to_keep": np.ones(1, np.int64),
                **{p: np.zeros((1, families.SHAPE["num_key_value_heads"], 0, 64), np.float32) for p in self.pasts}}
        start = time.perf_counter()
        out = dict(zip(self.names, self.session.run(None, feed)))
        first, steps, tokens = time.perf_counter() - start, [], []
        for _ in range(STEPS):
            start = time.perf_counter()
            token = int(np.argmax(out["logits"][0, -1]))
            total = prompt.shape[1] + len(tokens) + 1
            feed = {"input_ids": np.array([[token]], np.int64), "attention_mask": np.ones((1, total), np.int64),
                    **{n.replace("present", "past_key_values"): v for n, v in out.items() if n.startswith("present")}}
            out = dict(zip(self.names, self.session.run(None, feed)))
            steps.append(time.perf_counter() - start)
            tokens.append(token)
        return first * 1e3, [s * 1e3 for s in steps], tokens


class Genai:
    """onnxruntime-genai's Generator on a model folder."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime_genai as og

        self.og, self.model = og, og.Model(str(folder))

    def generate(self, prompt: np.ndarray) -> tuple[float, list[float], list[int]]:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=PROMPT + STEPS + 1)
        generator = self.og.Generator(self.model, params)
        start = time.perf_counter()
        generator.append_tokens(prompt.astype(np.int32))  # the prompt pass
        first, steps = time.perf_counter() - start, []
        generator.generate_next_token()  # picks the first token from the prompt's logits: no model run (not timed)
        tokens = [int(generator.get_next_tokens()[0])]
        for _ in range(STEPS):  # each: the model run on the last token, then the pick of the next (the loop's step)
            start = time.perf_counter()
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
            steps.append(time.perf_counter() - start)
        return first * 1e3, [s * 1e3 for s in steps], tokens[:STEPS]


def measure(models: dict[str, Path], rounds: int, generations: int) -> dict[str, dict[str, dict]]:
    prompt = np.random.default_rng(1).integers(0, families.SHAPE["vocab_size"], (1, PROMPT), dtype=np.int64)
    runners = {(e, "loop"): Loop(p) for e, p in models.items()}
    runners.update({(e, way): Genai(f) for e, p in models.items() for way, f in genai_folders(p).items()})
    samples = {k: {"prompt": [], "step": [], "tokens": None} for k in runners}
    for key, runner in runners.items():  # warm-up; the tokens every round must repeat
        samples[key]["tokens"] = runner.generate(prompt)[2]
    for _ in range(rounds):
        for key, runner in runners.items():
            for _ in range(generations):
                first, steps, tokens = runner.generate(prompt)
                samples[key]["prompt"].append(first)
                samples[key]["step"] += steps
                assert tokens == samples[key]["tokens"], key
    result: dict[str, dict[str, dict]] = {e: {} for e in models}
    for (engine, way), s in samples.items():
        result[engine][way] = {"prompt_p50_ms": float(np.percentile(s["prompt"], 50)), "prompt_p90_ms": float(np.percentile(s["prompt"], 90)),
                               "step_p50_ms": float(np.percentile(s["step"], 50)), "step_p90_ms": float(np.percentile(s["step"], 90)),
                               "steps": len(s["step"]), "prompts": len(s["prompt"]),
                               "same_tokens_as_loop": s["tokens"] == samples[(engine, "loop")]["tokens"]}
    return result


def report(result: dict) -> str:
    load = result["load_1min"]
    lines = ["# edgekd's decoder engine on onnxruntime-genai vs edgekd's own loop (benchmarks/genai_runtime.py)", "",
             f"{families.host_line(result)}; onnxruntime-genai {result['onnxruntime_genai']}; 1-minute load {load['before']:.2f} "
             f"before, {load['after']:.2f} after", "",
             result["how"], "", "| engine | way | prompt p50 / p90 ms | step p50 / p90 ms | step p90 / loop's | same tokens as the loop |",
             "|---|---|---|---|---|---|"]
    for engine, ways in result["engines"].items():
        loop = ways["loop"]["step_p90_ms"]
        for way, r in ways.items():
            lines.append(f"| {engine} | {way} | {r['prompt_p50_ms']:.2f} / {r['prompt_p90_ms']:.2f} | {r['step_p50_ms']:.2f} / "
                         f"{r['step_p90_ms']:.2f} | {r['step_p90_ms'] / loop:.2f} | {'yes' if r['same_tokens_as_loop'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import onnxruntime_genai as og

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--generations", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = engines(Path(tmp))
        load = os.getloadavg()[0]
        measured = measure(models, args.rounds, args.generations)
    result = {**families.host(), "onnxruntime_genai": og.__version__, "engines": measured,
              "load_1min": {"before": load, "after": os.getloadavg()[0]},
              "how": (f"SmolLM-135M-shaped Llama, random weights; per engine and way {args.rounds} interleaved rounds x "
                      f"{args.generations} generations of a {PROMPT}-token prompt + {STEPS} greedy steps, {THREADS} intra-op "
                      "threads; the loop's prompt pass computes the last position's logits (logits_to_keep 1), genai's every "
                      "position's; see benchmarks/genai_runtime.py")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "genai_runtime.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "genai_runtime.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
