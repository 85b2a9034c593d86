"""edgekd's engine against its peers, measured in one run on this machine, on the same student:
PyTorch eager fp32, ONNX Runtime fp32 with default SessionOptions, optimum-onnx's ORTQuantizer
(avx512_vnni static preset, calibrated with optimum's calibration API) run with ORT defaults, and
edgekd's engine with the session it was built for; plus the teacher in PyTorch eager for the
headline speedup. Then variants that explain the ranking (threads, optimization level, QDQ vs
QOperator, fp32 vs INT8, ORT's per-call floor) and ORT per-op profiles.

Every row runs in its own process (benchmarks/peers_worker.py) and is timed with edgekd.perf.measure.sample
at batch 1; rows take turns in rounds (order shuffled per round, fixed seed) so that drift on this
shared host hits all alike; p90 is over every round's samples pooled. Accuracy: the test split.
Writes benchmarks/results/NAME.json and NAME.md (NAME: peers, or --name).

    python benchmarks/peers.py                                    # the built-in digits example
    python benchmarks/peers.py --project benchmarks/projects/peers_large.toml \
        --profile benchmarks/projects/peers_large_profile.toml --name peers_large --min-runs 500
    python benchmarks/peers.py --build /tmp/exbuild --name peers_untuned   # re-use a build folder (no build)
    python benchmarks/peers.py --render --name peers   # recompute comparisons, rewrite NAME.md (+ NAME_findings.md)

Needs optimum-onnx and datasets (pip install -e ".[hf]"). About 12 minutes a run on the 2-core VM.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from peers_models import (  # noqa: E402
    Build,
    build_or_load,
    calibration_draw,
    identity_model,
    optimum_int8,
    qoperator_int8,
    test_split,
)
from peers_report import render, write_results  # noqa: E402

from edgekd.deploy.run_on_device import summarize  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402

WORKER = Path(__file__).parent / "peers_worker.py"
SEED = 0


class Worker:
    """A row's process; `ask` sends one command and returns its reply."""

    def __init__(self, spec: dict[str, Any], workdir: Path) -> None:
        """Starts the process; `wait_ready` reads its first line (accuracy, threads, kernels)."""
        self.spec = spec
        spec_file = workdir / f"spec_{spec['name']}.json"
        spec_file.write_text(json.dumps(spec))
        self.log = workdir / f"worker_{spec['name']}.log"
        self.proc = subprocess.Popen([sys.executable, str(WORKER), str(spec_file)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True)
        self.ready: dict[str, Any] = {}

    def wait_ready(self) -> None:
        self.ready = self._reply()

    def _reply(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            tail = self.log.read_text().strip().splitlines()[-15:]
            raise RuntimeError(f"worker {self.spec['name']} exited {self.proc.wait()}:\n" + "\n".join(tail))
        return json.loads(line)

    def ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait()


def _ort(name: str, model: Path, precision: str, what: str, session: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "kind": "ort", "model": str(model), "precision": precision, "what": what, "session": session}


def _torch(name: str, role: str, factory: str, args: dict[str, Any], weights: Path, source: str, what: str,
           threads: int | None = None) -> dict[str, Any]:
    return {"name": name, "kind": "torch", "role": role, "factory": factory, "args": args, "weights": str(weights),
            "source": source, "precision": "fp32", "what": what, "threads": threads}


def row_specs(b: Build, optimum_model: Path) -> list[dict[str, Any]]:
    """The headline rows, each with its own default threading (stated per row in the results)."""
    choice = json.loads((b.folder / "student.json").read_text())
    engine = b.folder / "engine" / b.engine["engine_file"]
    specs = []
    teacher = b.ctx.project.teacher
    if teacher.kind == "torch" and (b.folder / "teacher.safetensors").is_file():
        specs.append(_torch("teacher-torch-eager", "teacher", teacher.factory, dict(teacher.args), b.folder / "teacher.safetensors",
                            b.ctx.source, "the teacher, PyTorch eager fp32 (torch default threads)"))
    specs += [
        _torch("torch-eager-fp32", "student", choice["factory"], choice["args"], b.folder / "student.safetensors", b.ctx.source,
               "the student, PyTorch eager fp32 (torch default threads)"),
        _ort("ort-fp32-default", b.folder / "student.onnx", "fp32", "student.onnx, ONNX Runtime, default SessionOptions()",
             {"ort_default": {}}),
        _ort("optimum-avx512_vnni-int8", optimum_model, "int8",
             "optimum-onnx ORTQuantizer, AutoQuantizationConfig.avx512_vnni static (QDQ, u8 act / s8 weights), ORT default SessionOptions()",
             {"ort_default": {}}),
        _ort("edgekd", engine, b.engine.get("precision", "int8"),
             f"edgekd's engine ({b.engine['engine_file']}) with the session it was built for (target {b.target})",
             {"edgekd": b.engine_session.model_dump()}),
    ]
    return specs


def variant_specs(b: Build, models: dict[str, tuple[Path, str]], identity: Path) -> list[dict[str, Any]]:
    """Every model file x {1 thread, every core} x {'extended', 'all'}, all opened through edgekd's
    session settings (so only the model and these settings differ), the torch student at 1 thread,
    and the Identity floor."""
    base = b.ctx.target.session
    specs = []
    for label, (model, precision) in models.items():
        for threads in (1, 0):
            for level in ("extended", "all"):
                cfg = base.model_copy(update={"intra_op_num_threads": threads, "graph_optimization_level": level})
                specs.append(_ort(f"{label}.t{threads or 'all'}.{level}", model, precision, f"{model.name}, {label}",
                                  {"edgekd": cfg.model_dump()}))
    choice, teacher = json.loads((b.folder / "student.json").read_text()), b.ctx.project.teacher
    if teacher.kind == "torch" and (b.folder / "teacher.safetensors").is_file():
        specs.append(_torch("teacher-torch-eager.t1", "teacher", teacher.factory, dict(teacher.args), b.folder / "teacher.safetensors",
                            b.ctx.source, "the teacher, PyTorch eager fp32, torch.set_num_threads(1)", threads=1))
    specs.append(_torch("torch-eager-fp32.t1", "student", choice["factory"], choice["args"], b.folder / "student.safetensors",
                        b.ctx.source, "the student, PyTorch eager fp32, torch.set_num_threads(1)", threads=1))
    optimum = models["optimum-int8-qdq"][0]  # ORT's AVX2 precision mode: U8S8 without VPMADDUBSW's 16-bit saturation
    specs.append(_ort("optimum-int8-qdq.t1.all.x64quantprecision", optimum, "int8", f"{optimum.name}, session.x64quantprecision=1",
                      {"edgekd": base.model_copy(update={"intra_op_num_threads": 1, "graph_optimization_level": "all"}).model_dump(),
                       "config": {"session.x64quantprecision": "1"}}))
    for threads in (1, 0):
        specs.append({**_ort(f"identity-floor.t{threads or 'all'}", identity, "fp32", "one Identity node: session.run floor",
                             {"edgekd": base.model_copy(update={"intra_op_num_threads": threads}).model_dump()}), "accuracy": False})
    return specs


def row_bench(bench: dict[str, Any], probe_ms: float) -> dict[str, Any]:
    """The round's BenchConfig for a row that takes about `probe_ms` a run: `min_runs` runs, fewer
    (down to 100) where they would take longer than `max_seconds`, so that slow rows (the teacher in
    torch) do not stretch a round; warm-up a tenth of that (at most the configured number)."""
    runs = int(min(bench["min_runs"], max(100, bench["max_seconds"] * 1000.0 / max(probe_ms, 1e-6))))
    return {**bench, "min_runs": runs, "max_runs": max(runs, bench["max_runs"]), "warmup_runs": min(bench["warmup_runs"], max(5, runs // 10))}


def measure(specs: list[dict[str, Any]], workdir: Path, rounds: int, bench: dict[str, Any], profile_runs: int,
            profile_names: set[str], failed: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Start one worker per spec, time them in `rounds` interleaved rounds, profile the named rows
    (ORT rows, and rows whose spec says "profile": true). With `failed`, a row whose worker does not
    start is left out and its error recorded there; without it, such a row stops the run."""
    workers: list[Worker] = []
    try:
        print(f"  starting {len(specs)} workers", file=sys.stderr)
        for spec in specs:
            workers.append(Worker(spec, workdir))
        for w in list(workers):
            try:
                w.wait_ready()
            except RuntimeError as exc:
                if failed is None:
                    raise
                failed[w.spec["name"]] = str(exc)
                workers.remove(w)
                w.close()
        benches = [row_bench(bench, w.ready["probe_ms"]) for w in workers]
        samples: list[list[list[float]]] = [[] for _ in workers]
        order = list(range(len(workers)))
        rng = random.Random(SEED)
        for r in range(rounds):
            print(f"  round {r + 1}/{rounds}", file=sys.stderr)
            rng.shuffle(order)
            for i in order:
                samples[i].append(workers[i].ask({"cmd": "round", "bench": benches[i]})["samples_ms"])
        results = []
        for w, per_round, row_cfg in zip(workers, samples, benches):
            pooled = [s for round_samples in per_round for s in round_samples]
            round_p90 = [float(np.percentile(s, 90)) for s in per_round]
            row = {**{k: v for k, v in w.spec.items() if k in ("name", "kind", "precision", "what", "session", "model")},
                   "accuracy": w.ready["accuracy"], **summarize(pooled), "samples": len(pooled), "rounds": len(per_round),
                   "round_p90_ms": round_p90, "p90_round_median_ms": statistics.median(round_p90), "bench": row_cfg,
                   "threads": w.ready["threads"], "graph_ops": w.ready["graph_ops"]}
            if w.spec["name"] in profile_names and w.spec.get("profile", w.spec["kind"] == "ort"):
                print(f"  profile {w.spec['name']}", file=sys.stderr)
                row["top_ops"] = w.ask({"cmd": "profile", "runs": profile_runs, "dir": str(workdir)})["top_ops"]
            results.append(row)
        return results
    finally:
        for w in workers:
            w.close()


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is absent
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="an edgekd project TOML (default: the built-in digits example)")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--build", type=Path, help="measure this finished build folder instead of building")
    parser.add_argument("--cache-dir", type=Path, help="stage cache for the build (default: a temporary one)")
    parser.add_argument("--name", default="peers", help="results file stem under benchmarks/results/")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--min-runs", type=int, default=1000, help="timed runs per row per round, at least")
    parser.add_argument("--max-seconds", type=float, default=0.5,
                        help="per row per round: fewer runs than --min-runs (at least 100) where they would take longer")
    parser.add_argument("--profile-runs", type=int, default=2000)
    parser.add_argument("--no-variants", action="store_true", help="headline rows only")
    parser.add_argument("--render", action="store_true", help="only rewrite NAME.md from NAME.json (and NAME_findings.md)")
    args = parser.parse_args()
    if args.render:
        render(args.name)
        return
    if args.project is not None and not args.project.is_file():
        raise SystemExit(f"peers: error: project file {args.project} not found (give an edgekd project TOML)")
    missing = [dist for dist, module in (("optimum-onnx", "optimum.onnxruntime"), ("datasets", "datasets")) if not _importable(module)]
    if missing:
        raise SystemExit(f"peers: error: {', '.join(missing)} not installed (the optimum peer needs them: pip install -e '.[hf]')")
    bench = {"warmup_runs": 50, "min_runs": args.min_runs, "max_runs": max(args.min_runs, 20000), "max_seconds": args.max_seconds,
             "stable_rel_change": 0.02}
    with tempfile.TemporaryDirectory(prefix="edgekd-peers-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            b = build_or_load(args.project, args.profile, tmp / "build", args.cache_dir or tmp / "cache", args.build,
                              lambda m: print(m, file=sys.stderr))
        except EdgekdError as exc:
            raise SystemExit(f"peers: error: {exc.one_line()}") from None
        x_test, y_test = test_split(b.ctx)
        np.save(tmp / "x_test.npy", x_test)
        np.save(tmp / "y_test.npy", y_test)
        samples = calibration_draw(b.ctx)
        optimum_model, optimum_recipe = optimum_int8(b.folder / "student.onnx", samples, tmp / "optimum")
        specs = row_specs(b, optimum_model)
        if not args.no_variants:
            models = {"fp32": (b.folder / "student.onnx", "fp32"), "edgekd-int8-qdq": (b.folder / "student_int8.onnx", "int8"),
                      "edgekd-int8-qoperator": (qoperator_int8(b.ctx, b.folder / "student.onnx", samples, tmp / "student_int8_qop.onnx"), "int8"),
                      "optimum-int8-qdq": (optimum_model, "int8")}
            specs += variant_specs(b, models, identity_model(b.folder / "student.onnx", tmp / "identity.onnx"))
        for spec in specs:
            spec.update({"x_test": str(tmp / "x_test.npy"), "y_test": str(tmp / "y_test.npy")})
        profiled = {"ort-fp32-default", "optimum-avx512_vnni-int8", "edgekd", "fp32.t1.all", "edgekd-int8-qdq.t1.all"}
        load_before = os.getloadavg()[0]
        measured = measure(specs, tmp, args.rounds, bench, args.profile_runs, profiled)
        load = {"before": load_before, "after": os.getloadavg()[0]}
    rows = [m for m in measured if "." not in m["name"]]  # variants have a dot in their name
    write_results(args.name, b, rows, [m for m in measured if "." in m["name"]], optimum_recipe, bench, args, len(samples), load)


if __name__ == "__main__":
    main()
