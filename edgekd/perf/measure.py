"""Latency measurement of ONNX Runtime engines, run in a fresh process so that peak memory is the
engine's process and not the build's.

`python -m edgekd.perf.measure REQUEST.json RESULT.json` is the worker; `measure()` starts it and reads its result.
The worker reports progress on stderr (lines starting with PROGRESS) so callers can show a bar.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgekd.config.models import BenchConfig
from edgekd.config.target import SessionConfig
from edgekd.deploy.run_on_device import (
    summarize,  # one definition, shared with the standalone device-side runner
)
from edgekd.errors import EdgekdError
from edgekd.graph.inputs import ModelInputs
from edgekd.perf.timing import time_runs

if TYPE_CHECKING:
    from edgekd.backends.openvino.settings import OpenVinoSettings

ROUND = 100  # runs between stability checks
PROGRESS = "@@edgekd-progress "
Progress = Callable[[str], None]


def sample(run_once: Callable[[], object], cfg: BenchConfig) -> list[float]:
    """Warm up, then time `run_once` in rounds until p90 moves less than `stable_rel_change`
    between rounds (at least `min_runs`, at most `max_runs` or `max_seconds`). Milliseconds."""
    for _ in range(cfg.warmup_runs):
        run_once()
    samples: list[float] = []
    last_p90 = None
    deadline = time.perf_counter() + cfg.max_seconds
    while len(samples) < cfg.max_runs:
        samples += time_runs(run_once, min(ROUND, cfg.max_runs - len(samples)))
        p90 = float(np.percentile(samples, 90))
        stable = last_p90 is not None and abs(p90 - last_p90) <= cfg.stable_rel_change * last_p90
        if len(samples) >= cfg.min_runs and (stable or time.perf_counter() > deadline):
            break
        last_p90 = p90
    return samples


def single_stream(samples: list[float]) -> dict[str, Any]:
    """The SingleStream summary of batch-1 samples: percentiles, mean, min/max, count and the
    coefficient of variation (std / mean), next to the raw samples."""
    arr = np.asarray(samples)
    return {**summarize(samples), "cv": float(arr.std() / arr.mean()), "samples_ms": samples}


def _memory_mb(field: str) -> float | None:
    """VmRSS (resident now) or VmHWM (peak resident) of this process from /proc/self/status, in MiB.
    Both belong to this process image: unlike getrusage's ru_maxrss they do not carry over the
    parent's memory from before exec. None where /proc is absent (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _report_progress(label: str) -> None:
    print(PROGRESS + label, file=sys.stderr, flush=True)


def _bench_worker(request: dict[str, Any]) -> dict[str, Any]:
    """SingleStream and Offline through the engine's runner (edgekd.backends.runners: ONNX Runtime, or
    OpenVINO for an OpenVINO engine the x86 tuner chose); ONNX Runtime engines also get the decoder
    scenarios; every engine the per-op profile of its runtime (ONNX Runtime's profiler, OpenVINO's
    per-node counters: edgekd.backends.openvino.profile)."""
    from types import SimpleNamespace

    from edgekd.backends.runners import (
        ONNXRUNTIME,
        OrtRunner,
        open_runner,
        settings_from,
        threads,
    )
    from edgekd.perf.scenarios import batch_feed, offline, static_batch

    runtime = request.get("runtime", ONNXRUNTIME)
    cfg = settings_from(runtime, request["session"])
    bench = BenchConfig.model_validate(request["bench"])
    engine, inputs = Path(request["engine"]), ModelInputs.from_json(request["inputs"])
    with np.load(request["feeds"], allow_pickle=False) as archive:
        rows = {name: archive[name] for name in archive.files}
    before_mb = _memory_mb("VmRSS")
    runner = open_runner(runtime, engine, cfg)
    batch = static_batch(inputs) or 1
    feed = batch_feed(rows, inputs, batch)
    _report_progress("SingleStream")
    result = single_stream(sample(lambda: runner.run(feed), bench))
    after_mb = _memory_mb("VmRSS")
    result.update({"batch": batch, "inputs": inputs.describe(), "intra_op_threads": threads(cfg),
                   **({"runtime": runtime, runtime: cfg.model_dump()} if runtime != ONNXRUNTIME else {}),
                   "engine_rss_mb": None if after_mb is None or before_mb is None else after_mb - before_mb})
    if isinstance(runner, OrtRunner):
        result.update({"inter_op_threads": cfg.inter_op_num_threads, "graph_optimization_level": cfg.graph_optimization_level,
                       "execution_mode": cfg.execution_mode})
    result["scenarios"] = {"SingleStream": {k: v for k, v in result.items() if k != "samples_ms"}}  # samples once, at the top
    if "Offline" in bench.scenarios:  # offline() calls session.run(None, feed): any runner behind it
        calls = SimpleNamespace(run=lambda _outputs, f: runner.run(f))
        result["scenarios"]["Offline"] = offline(calls, rows, inputs, bench.offline_max_batch, bench.offline_seconds, _report_progress)
    if isinstance(runner, OrtRunner):
        result.update(_onnxruntime_extras(runner, request, rows, feed, batch))
    elif bench.profile_runs and runtime == "openvino":
        from edgekd.backends.openvino import profile

        _report_progress("per-op profile")
        result["top_ops"] = profile.top_ops(engine, cfg, feed, bench.profile_runs)
        result["top_ops_how"] = profile.HOW.format(runs=bench.profile_runs, batch=batch)
    elif bench.profile_runs:
        result["top_ops_how"] = f"not measured: no per-op profiler for {runtime} here"
    result["peak_rss_mb"] = _memory_mb("VmHWM")
    if isinstance(runner, OrtRunner):
        _genai_decode(result, engine, inputs, rows)
    return result


def _genai_decode(result: dict[str, Any], engine: Path, inputs: ModelInputs, rows: dict[str, np.ndarray]) -> None:
    """A decoder engine with an onnxruntime-genai folder (edgekd.perf.genai_decode): its decode through genai
    beside the loop's, as result["decode"]["onnxruntime_genai"], with the loop's prompt (the first row's
    token ids repeated to the prompt's length, as edgekd.perf.decoder.make_prompt makes it)."""
    from edgekd.perf.genai_decode import genai_decode, genai_folder

    decode, folder = result.get("decode"), genai_folder(engine)
    tokens = next((i.name for i in inputs.inputs if i.role == "token_ids"), None)
    if not isinstance(decode, dict) or decode.get("method") != "measured" or folder is None or tokens not in rows:
        return
    _report_progress("DecodeTokensPerSecond (onnxruntime-genai)")
    prompt = np.resize(np.asarray(rows[tokens][0]).reshape(-1), (1, decode["prompt_tokens"]))
    decode["onnxruntime_genai"] = genai_decode(folder, prompt, decode["new_tokens"], decode["generations"], decode["generated_ids"])


def _onnxruntime_extras(runner: Any, request: dict[str, Any], rows: dict[str, np.ndarray], feed: dict[str, np.ndarray],
                        batch: int) -> dict[str, Any]:
    """An ONNX Runtime engine's decoder scenarios ("ttft", "decode") and per-op profile, as the bench config asks."""
    from edgekd.backends.ort.session import open_session, runtime_description
    from edgekd.common.toolchain import cpu_model
    from edgekd.perf.decoder import Subject, decoder_scenarios
    from edgekd.perf.scenarios import profile_ops

    cfg, bench = SessionConfig.model_validate(request["session"]), BenchConfig.model_validate(request["bench"])
    engine, inputs = Path(request["engine"]), ModelInputs.from_json(request["inputs"])
    # decoders: "ttft" and "decode" next to the scenarios (report.schema.json closes latency.scenarios)
    where = f"this host ({cpu_model()}), {runtime_description(cfg)}, batch 1, in the bench worker process"
    extras: dict[str, Any] = dict(decoder_scenarios(Subject(runner.session, engine, inputs, rows, where, runner.kv), bench, _report_progress))
    if bench.profile_runs:
        _report_progress("per-op profile")
        extras["top_ops"] = profile_ops(lambda hook: open_session(engine, cfg, configure=hook), feed,
                                        bench.profile_runs, Path(request["workdir"]))
        extras["top_ops_how"] = (f"ONNX Runtime profiler (SessionOptions.enable_profiling), {bench.profile_runs} runs at batch {batch} "
                                 "in a separate profiled session: median kernel time per node per run, summed per op type (profiling adds overhead; the shares are the point)")
    return extras


def _worker(request_path: Path) -> dict[str, Any]:
    request = json.loads(request_path.read_text())
    if request.get("mode") == "tune":
        from edgekd.perf.interleaved import measure_candidates

        return measure_candidates(request, _report_progress)
    return _bench_worker(request)


def run_worker(request: dict[str, Any], feeds: dict[str, np.ndarray], workdir: Path, what: str,
               progress: Progress | None = None) -> dict[str, Any]:
    """Run the worker on `request` (the named input arrays `feeds` are saved beside it as one .npz
    and passed by path) and return its JSON result; progress labels go to `progress` as the worker
    reaches them."""
    workdir.mkdir(parents=True, exist_ok=True)
    feeds_path = workdir / "bench_feeds.npz"
    np.savez(feeds_path, **feeds)
    request["feeds"] = str(feeds_path)
    paths = [feeds_path]
    request_path, result_path = workdir / "bench_request.json", workdir / "bench_result.json"
    request_path.write_text(json.dumps({**request, "workdir": str(workdir)}))
    paths += [request_path, result_path]
    try:
        # the result goes to a file, not a pipe: only stderr is read while the worker runs, and a
        # large result on an unread stdout pipe would block the worker (and so this loop) forever
        proc = subprocess.Popen([sys.executable, "-m", "edgekd.perf.measure", str(request_path), str(result_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        errors = []
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith(PROGRESS):
                if progress:
                    progress(line[len(PROGRESS):].strip())
            else:
                errors.append(line)
        code = proc.wait()
        result = json.loads(result_path.read_text()) if code == 0 else None
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    if result is None:
        raise RuntimeError(f"latency worker for {what} exited {code}:\n{''.join(errors)}")
    return result


def measure(engine: Path, feeds: dict[str, np.ndarray], inputs: ModelInputs, session: SessionConfig | OpenVinoSettings, bench: BenchConfig,
            workdir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Measure `engine`: SingleStream at batch 1 (the graph's batch if static) on the first sample
    of `feeds` (named inputs, samples on axis 0), the Offline scenario over `feeds` (tiled along
    each input's batch axis to each batch size), for a decoder TimeToFirstToken ("ttft") and
    DecodeTokensPerSecond ("decode", edgekd.perf.decoder) and the per-op profile, as the bench
    config asks, in a child process. Returns the SingleStream summary + samples at the top level.
    OpenVINO settings (an OpenVINO engine the x86 tuner chose) run it on OpenVINO (edgekd.backends.runners)."""
    if not Path(engine).is_file():
        raise EdgekdError(f"engine {engine} not found", "give an .onnx model or a build folder made by `edgekd build`")
    from edgekd.backends.ort.session import check_session_threads

    request = {"engine": str(engine), "session": session.model_dump(), "bench": bench.model_dump(), "inputs": inputs.to_json()}
    if isinstance(session, SessionConfig):
        check_session_threads(session)  # here, before a worker with thousands of threads starts
    else:
        request["runtime"] = "openvino"
    return run_worker(request, feeds, workdir, Path(engine).name, progress)


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(_worker(Path(sys.argv[1]))))
