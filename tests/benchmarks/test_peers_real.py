"""benchmarks/peers_real.py: its worker row kinds (through benchmarks/peers.py's measure, one process a
row), the floor and goal verdicts, the Markdown, and its command-line errors. Timings are not judged."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import peers
from peers_real_report import compute_precision, host_floor, markdown, short_error, verdicts

BENCH = {"warmup_runs": 2, "min_runs": 100, "max_runs": 100, "max_seconds": 0.2, "stable_rel_change": 0.02}


def tiny_onnx(path: Path) -> Path:
    """x [1, 8] -> Relu(x @ W): enough for every runtime to run and profile."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
                              "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_row_kinds_measure_and_profile_and_a_broken_row_is_recorded(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    feed = tmp_path / "feed.npz"
    np.savez(feed, x=np.ones((1, 8), np.float32))
    common = {"feed": str(feed), "precision": "fp32", "what": "test", "profile": True}
    specs = [{**common, "name": "ort", "kind": "ort-feed", "model": str(model), "session": {"ort_default": {}}},
             {**common, "name": "ov", "kind": "openvino", "model": str(model), "config": {"PERFORMANCE_HINT": "LATENCY"}},
             {**common, "name": "engine", "kind": "edgekd", "model": str(model), "runtime": "onnxruntime-cpu",
              "settings": {"intra_op_num_threads": 1}},
             {**common, "name": "broken", "kind": "ort-feed", "model": str(tmp_path / "absent.onnx"), "session": {"ort_default": {}}}]
    failed: dict[str, str] = {}
    rows = peers.measure(specs, tmp_path, 2, BENCH, 5, {"ort", "ov", "engine"}, failed)
    assert [r["name"] for r in rows] == ["ort", "ov", "engine"]
    assert set(failed) == {"broken"} and "absent.onnx" in failed["broken"]
    for row in rows:
        assert row["samples"] == 200 and row["rounds"] == 2 and row["accuracy"] is None
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        assert row["top_ops"], row["name"]
    ops = {r["name"]: {o["op_type"] for o in r["top_ops"]} for r in rows}
    assert "MatMul" in ops["ort"] and "MatMul" in ops["engine"]  # ORT's profiler names ONNX op types
    assert rows[1]["threads"]["openvino.NUM_STREAMS"] == "1"  # the LATENCY hint's one stream


def test_decoder_torch_row_keeps_the_same_cache_every_step(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from decoder_exporters import make_llama
    from peers_real_prep import DECODER_TINY
    from peers_real_rows import open_row

    make_llama(tmp_path / "llama", DECODER_TINY)
    past, heads, dim = 5, DECODER_TINY["num_key_value_heads"], DECODER_TINY["hidden_size"] // DECODER_TINY["num_attention_heads"]
    rng = np.random.default_rng(0)
    feed = {"input_ids": np.array([[3]]), "attention_mask": np.ones((1, past + 1), np.int64), "position_ids": np.array([[past]])}
    for layer in range(DECODER_TINY["num_hidden_layers"]):
        for part in ("key", "value"):
            feed[f"past_key_values.{layer}.{part}"] = rng.standard_normal((1, heads, past, dim)).astype(np.float32)
    np.savez(tmp_path / "decode.npz", **feed)
    row = open_row({"kind": "hf-torch", "hf_dir": str(tmp_path / "llama"), "model_class": "LlamaForCausalLM", "case": "decode",
                    "feed": str(tmp_path / "decode.npz")})
    step = row.runner()
    first, second = step(), step()
    assert first.logits.shape == (1, 1, DECODER_TINY["vocab_size"])
    assert np.allclose(first.logits.numpy(), second.logits.numpy())  # the second step saw the same PAST tokens


def test_floor_is_macs_over_the_targets_peak_on_this_host() -> None:
    from edgekd.analysis.device import resolve
    from edgekd.config.loading import ConfigSearch, load_target

    peak = resolve(load_target("x86-avx2", ConfigSearch()).config.device).peak_tops
    floor = host_floor("x86-avx2", "fp32", 1_000_000_000)
    assert floor["ms"] == pytest.approx(2e9 / (peak["fp32"] * 1e12) * 1e3)
    assert "cores" in floor["how"] and "clock" in floor["how"]
    int4 = host_floor("x86-avx2", "int4", 1_000_000_000)  # no int4 peak: the int8 one, said so
    assert int4["precision"] == "int8" and "int4 has no peak" in int4["how"]


def test_an_fp32_engine_with_the_bf16_hint_is_floored_at_the_bf16_peak() -> None:
    """OpenVINO's bf16 inference precision hint runs an fp32 graph's float ops in bf16: its floor is the
    bf16 peak (x86-avx512-vnni has one); an INT8 engine with the hint keeps the int8 peak."""
    bf16 = {"precision": "fp32", "session": {"inference_precision_hint": "bf16"}}
    assert compute_precision(bf16) == "bf16"
    assert compute_precision({"precision": "fp32", "session": {"inference_precision_hint": "f32"}}) == "fp32"
    assert compute_precision({"precision": "int8", "session": {"inference_precision_hint": "bf16"}}) == "int8"
    assert compute_precision({"precision": "int8", "session": {"intra_op_num_threads": 2}}) == "int8"
    floor, fp32 = host_floor("x86-avx512-vnni", "bf16", 10**9), host_floor("x86-avx512-vnni", "fp32", 10**9)
    assert floor["precision"] == "bf16" and floor["ms"] == pytest.approx(fp32["ms"] / 2)


def test_a_decode_step_whose_weights_exceed_the_cache_is_floored_by_dram_reads() -> None:
    """Roofline: 1 M MACs is microseconds of compute, but 500 MB of weights past the cache must come from DRAM."""
    from edgekd.analysis.device import resolve
    from edgekd.config.loading import ConfigSearch, load_target

    figures = resolve(load_target("x86-avx2", ConfigSearch()).config.device)
    if figures.cache_mb is None or figures.dram_bandwidth_gbs is None:
        pytest.skip("this host's last-level cache size is not known (sysfs)")
    floor = host_floor("x86-avx2", "fp32", 1_000_000, weight_bytes=500_000_000, cache_bytes=10_000_000)
    assert floor["bound"] == "memory" and floor["ms"] == floor["memory_ms"] > floor["compute_ms"]
    assert floor["memory_ms"] == pytest.approx(510e6 / (figures.dram_bandwidth_gbs * 1e9) * 1e3)
    assert "DRAM" in floor["how"] and "roofline" in floor["how"]
    small = host_floor("x86-avx2", "fp32", 1_000_000, weight_bytes=1_000, cache_bytes=0)  # fits the cache: compute only
    assert small["ms"] == small["compute_ms"] and "fit the last-level cache" in small["how"]


def _row(name: str, p90: float) -> dict:
    return {"name": name, "precision": "fp32", "p50_ms": p90 / 2, "p90_ms": p90, "accuracy": None, "what": name, "threads": {}}


def test_verdicts_against_the_best_peer_and_the_floor() -> None:
    rows = [_row("edgekd", 7.0), _row("ort-fp32-default", 10.0), _row("openvino-fp32", 20.0)]
    v = verdicts(rows, 500_000_000, {"ms": 5.0})
    assert v["best_peer"] == "ort-fp32-default" and v["edgekd_over_best_peer_p90"] == pytest.approx(0.7)
    assert v["peer_goal_met"] is True and v["edgekd_over_floor_p90"] == pytest.approx(1.4) and v["floor_goal_met"] is True
    assert "round_median" not in v  # rows without per-round p90s
    rounds = [{**r, "p90_round_median_ms": m} for r, m in zip(rows, (6.0, 12.0, 8.0))]
    assert verdicts(rounds, 500_000_000, None)["round_median"] == {"best_peer": "openvino-fp32", "edgekd_over_best_peer": 0.75}
    small = verdicts(rows, 50_000_000, {"ms": 1.0})
    assert small["floor_goal_met"] is None  # the floor goal is for >= 100 M MACs
    assert verdicts(rows[1:], 1, None)["how"].startswith("not available")
    # edgekd's engine on onnxruntime-genai is a second view of edgekd, never a peer
    genai = verdicts([*rows, _row("edgekd-genai", 4.0)], 500_000_000, {"ms": 5.0})
    assert genai["best_peer"] == "ort-fp32-default" and genai["edgekd_over_best_peer_p90"] == pytest.approx(0.7)
    assert genai["edgekd_genai"] == {"over_best_peer_p90": pytest.approx(0.4), "over_floor_p90": pytest.approx(0.8)}


def test_markdown_says_which_goal_is_not_met_and_why_a_row_is_missing() -> None:
    rows = [_row("edgekd", 12.0), _row("ort-fp32-default", 10.0)]
    model = {"name": "resnet18", "description": "ResNet-18", "macs": 1_800_000_000, "rows": rows, "failures": {"genai": "no builder"},
             "load_average_1min": {"before": 1.0, "after": 2.0}, "floor": {"ms": 10.0, "how": "estimated: test"},
             "verdicts": verdicts(rows, 1_800_000_000, {"ms": 10.0}), "edgekd_engine": None}
    result = {"quick": True, "how": "measured: test", "host": {"cpu": "cpu", "cores": 2, "flags": ["avx2"]}, "toolchain": {}, "models": [model]}
    md = markdown(json.loads(json.dumps(result)))
    assert "QUICK" in md and "| ort-fp32-default | fp32 | 5.000 | 10.000 |" in md
    assert "= **1.20** (goal <= 0.8x the best peer's p90: NOT met)" in md and "= **1.20** (goal <= 2.0x the floor: met)" in md
    assert "`genai`: **not measured**: no builder" in md


def test_unknown_model_is_a_one_line_error() -> None:
    run = subprocess.run([sys.executable, str(BENCHMARKS / "peers_real.py"), "--models", "resnet18,alexnet"], capture_output=True, text=True,
                         check=False)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and "unknown model(s) alexnet" in run.stderr


def test_a_worker_traceback_is_reported_in_one_line() -> None:
    text = "worker ov exited 1:\nTraceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: AvgPool kernel too large\n"
    assert short_error(text) == "worker ov exited 1: RuntimeError: AvgPool kernel too large"
    assert short_error("ValueError: bad") == "ValueError: bad"


def test_an_embedding_table_only_gathered_from_is_not_counted_as_read(tmp_path: Path) -> None:
    """A decode step reads one row of the embedding table, but every byte of the MatMul weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from peers_real_report import _gathered_bytes

    table = numpy_helper.from_array(np.zeros((100, 8), np.float32), "table")
    weight = numpy_helper.from_array(np.zeros((8, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])],
                              "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4])], [table, weight])
    path = tmp_path / "engine.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert _gathered_bytes(path) == 100 * 8 * 4
    assert _gathered_bytes(tmp_path / "engine.xml") == 0  # an OpenVINO IR: its files are counted whole
    packed, scales = numpy_helper.from_array(np.zeros((100, 4), np.uint8), "q"), numpy_helper.from_array(np.ones((100, 1), np.float32), "s")
    quantized = helper.make_graph([helper.make_node("GatherBlockQuantized", ["q", "ids", "s"], ["e"], domain="com.microsoft", block_size=16),
                                   helper.make_node("MatMul", ["e", "w"], ["y"])], "g", list(graph.input), list(graph.output),
                                  [packed, scales, weight])
    onnx.save(helper.make_model(quantized, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]), str(path))
    assert _gathered_bytes(path) == 100 * 4 + 100 * 4  # the 4-bit table (edgekd's embedding = true) and its scales


def test_a_split_engine_counts_the_weights_of_the_branch_its_case_runs(tmp_path: Path) -> None:
    """A prompt/decode split engine (edgekd.graph.phase_split) holds both parts' weights; a prefill reads
    the prompt branch's, a decode step the decode branch's, each with the shared table only gathered from."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from peers_real_report import _phase_bytes

    from edgekd.graph.phase_split import split_by_phase

    def part(name: str, n: int) -> Path:
        table = numpy_helper.from_array(np.ones((100, 8), np.float32), "table")  # the same bytes in both: stored once
        weight = numpy_helper.from_array(np.full((8, n), 0.5 if n == 4 else 0.25, np.float32), "w")
        nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["h"]),
                 helper.make_node("ReduceSum", ["h"], ["y"], keepdims=1)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "s"])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [table, weight])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))
        return tmp_path / name

    split = split_by_phase(part("prompt.onnx", 4), part("decode.onnx", 16), tmp_path / "engine.onnx", "ids")
    assert split.shared == 1
    assert _phase_bytes(tmp_path / "engine.onnx", "prefill") == 8 * 4 * 4
    assert _phase_bytes(tmp_path / "engine.onnx", "decode") == 8 * 16 * 4
    assert _phase_bytes(tmp_path / "prompt.onnx", "decode") is None  # not a split engine: its files are counted


def test_genai_decode_row_steps_in_windows_around_the_cached_length(tmp_path: Path) -> None:
    """The genai decode row: one generate_next_token a call (the model run on the last pick), the cache
    kept between PAST - 8 and PAST + 6 tokens, rewound every DECODE_WINDOW steps; the same greedy
    tokens in every window (each starts from the same cache)."""
    pytest.importorskip("onnxruntime_genai")
    from decoders import export
    from peers_real_rows import DECODE_WINDOW, open_row

    from edgekd.deploy.genai_folder import genai_layout, write_genai_config
    from edgekd.graph.gqa_fusion import fuse_gqa

    _, source = export(tmp_path, "llama")
    fused = source.parent / "fused.onnx"
    fuse_gqa(source, fused, 64)
    write_genai_config(fused.parent, genai_layout(fused, {"token_ids": "input_ids", "attention_mask": "attention_mask"}, 64, None))
    past = 30
    ids = np.random.default_rng(0).integers(0, 128, (1, past + 1), dtype=np.int64)
    np.savez(tmp_path / "genai.npz", prompt=ids[:, :past], step=ids[:, past:], prefill=ids)
    row = open_row({"kind": "genai", "model_dir": str(fused.parent), "case": "decode", "feed": str(tmp_path / "genai.npz"),
                    "max_length": past + 16})
    step, gen, keep = row.runner(), row.generator, past - DECODE_WINDOW // 2
    counts: list[int] = []
    windows: list[list[int]] = [[]]  # opening the row ran the first call (a warm-up)
    for _ in range(3 * DECODE_WINDOW):
        step()
        counts.append(gen.token_count())
        if counts[-1] == keep + 2:  # a window's first call: the step token appended, the first pick made
            windows.append([])
        windows[-1].append(int(gen.get_next_tokens()[0]))
    assert min(counts) == keep + 2 and max(counts) == keep + DECODE_WINDOW
    assert len(windows) >= 3 and len(windows[1]) == DECODE_WINDOW - 1 and all(w == windows[1] for w in windows[1:-1])
