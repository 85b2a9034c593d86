"""edgekd's x86 engine against its peers on real architectures (issue 16, points 1 and 2), one run on
this host: ResNet-18, MobileNetV2, EfficientNet-B0, ViT-Tiny, DistilBERT at sequence 128 and a small
decoder's prefill and decode step, random weights (latency only). Rows per model:

    torch-eager-fp32        transformers model, PyTorch eager fp32, torch.inference_mode
    ort-fp32-default        the fp32 ONNX, onnxruntime.SessionOptions() defaults
    optimum-int8            optimum-onnx ORTQuantizer, AutoQuantizationConfig preset for this CPU's flags
                            (static, minmax calibration, for CNNs; dynamic for ViT, DistilBERT and the decoder)
    openvino-fp32           the fp32 ONNX, ov.Core().compile_model(..., "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    openvino-int8-nncf      NNCF INT8 (nncf.quantize; model_type TRANSFORMER for transformers; decoders:
                            nncf.compress_weights), same compile settings
    genai-fp32, genai-int4  onnxruntime-genai's builder and Generator (decoder only)
    edgekd                  `edgekd.api.compile_model(MODEL.onnx, target="x86", profile=...)`'s engine (profile
                            benchmarks/projects/peers_real_profile.toml: no size/latency budget), run with the
                            runtime and settings engine.json names
    edgekd-genai            a decoder's edgekd engine run by onnxruntime-genai from the genai_config.json edgekd writes
                            beside it (its own verdict line; not a peer, and not the goal's edgekd row)

Every row is its own process (benchmarks/peers_worker.py, row kinds in peers_real_rows.py), timed with
edgekd.perf.measure.sample at batch 1 in interleaved rounds (benchmarks/peers.py's measure); p50/p90 over
the pooled samples. Per model: MACs, the host floor (MACs over the peak of the engine's precision on
these cores, from the x86 target's [device]) and the issue's goals (edgekd p90 <= 0.8x the best peer;
<= 2x the floor at >= 100 M MACs). Writes benchmarks/results/NAME.{json,md} (NAME: peers_real), or
OUT/NAME.* with --out.

    python benchmarks/peers_real.py                               # every model, full size (quiet host: about an hour)
    python benchmarks/peers_real.py --models resnet18,distilbert
    python benchmarks/peers_real.py --quick --models resnet18 --out /tmp --name peers_real_smoke
    python benchmarks/peers_real.py --render                      # rewrite NAME.md from NAME.json
    python benchmarks/peers_real.py --refloor --workdir DIR       # recompute floors/verdicts from the kept models

Needs the [hf] and [openvino] extras (optimum-onnx, datasets, openvino, nncf) and onnxruntime-genai.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from peers import measure
from peers_real_prep import (
    MODELS,
    Prepared,
    PrepSettings,
    genai_models,
    openvino_int8,
    optimum_quantized,
    prepare_decoder,
    prepare_zoo,
)
from peers_real_report import RESULTS, model_result, refloor, render, write

from edgekd.graph.logits_to_keep import KEEP

OV_DEFAULT = {"PERFORMANCE_HINT": "LATENCY"}  # OpenVINO's documented latency setting
PROMPT, PAST = 128, 127  # decoder: prefill tokens, cached tokens before the decode step
QUICK_PROMPT, QUICK_PAST = 16, 15
PROFILE = Path(__file__).parent / "projects" / "peers_real_profile.toml"  # no size or latency budget (it says why)
PROFILED = {"ort-fp32-default", "optimum-int8", "openvino-fp32", "openvino-int8-nncf", "edgekd"}


@dataclass(frozen=True)
class RunSettings:
    prep: PrepSettings
    rounds: int
    bench: dict[str, Any]
    profile_runs: int  # 0: no per-op profiles
    target: str
    profile: str  # edgekd's profile (a name or a file)


def _step(failures: dict[str, str], name: str, fn: Callable[[], Any]) -> Any:
    """Run one preparation step; a failure is recorded under `name` (the row it would have made), not hidden."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  (reported in the results as that row's failure)
        failures[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
        print(f"  {name}: failed: {failures[name]}", file=sys.stderr)
        return None


def compile_edgekd(p: Prepared, s: RunSettings, out: Path) -> dict[str, Any]:
    """edgekd compile of the same fp32 ONNX (generated calibration data, as the peers), engine.json read back."""
    from edgekd.api import BuildFailed, compile_model

    shapes: dict[str, tuple[int, ...]] | None = None
    if p.kind == "text":
        shapes = {"input_ids": (1, s.prep.sequence), "attention_mask": (1, s.prep.sequence)}
    note = "every budget met"
    try:
        compile_model(p.onnx, target=s.target, profile=s.profile, out=out, shapes=shapes, cache_dir=out.parent / "edgekd-cache",
                      log=lambda m: print(f"  edgekd: {m}", file=sys.stderr))
    except BuildFailed as exc:
        if not (out / "engine.json").is_file():
            raise
        note = f"a budget broke (engine still measured): {exc.one_line()}"
    engine = json.loads((out / "engine.json").read_text())
    report = json.loads((out / "report.json").read_text())
    return {"engine": engine, "dir": str(out / "engine"), "target": report["target"]["name"], "note": note}


def _spec(name: str, kind: str, precision: str, what: str, feed: Path | None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "precision": precision, "what": what, "feed": str(feed),
            "profile": kind in ("ort-feed", "openvino", "edgekd"), **extra}


def row_specs(p: Prepared, case: str, art: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one model (one decoder case) from the prepared artefacts (absent ones left out)."""
    feed = p.cases[case]
    specs = [_spec("torch-eager-fp32", "hf-torch", "fp32", f"{p.model_class}.from_pretrained, PyTorch eager fp32, torch.inference_mode",
                   feed, hf_dir=str(p.hf_dir), model_class=p.model_class, case=case),
             _spec("ort-fp32-default", "ort-feed", "fp32", "fp32 ONNX, onnxruntime.SessionOptions() defaults", feed,
                   model=str(p.onnx), session={"ort_default": {}})]
    if art.get("optimum"):
        path, recipe = art["optimum"]
        specs.append(_spec("optimum-int8", "ort-feed", "int8", f"optimum-onnx ORTQuantizer, {recipe['preset']}, ORT default SessionOptions()",
                           feed, model=str(path), session={"ort_default": {}}))
    specs.append(_spec("openvino-fp32", "openvino", "fp32", f"fp32 ONNX, OpenVINO compile_model CPU {OV_DEFAULT}", feed,
                       model=str(p.onnx), config=OV_DEFAULT))
    if art.get("openvino_int8"):
        xml, how = art["openvino_int8"]
        specs.append(_spec("openvino-int8-nncf", "openvino", "int8", f"{how}; OpenVINO compile_model CPU {OV_DEFAULT}", feed,
                           model=str(xml), config=OV_DEFAULT))
    for label, model_dir in (art.get("genai") or {}).items():
        precision = label.rsplit(" ", 1)[-1]
        specs.append(_spec(f"genai-{precision}", "genai", precision, f"{label}, og.Generator (genai_config.json defaults)",
                           p.genai_feed, model_dir=str(model_dir), case=case,
                           max_length=PAST + 16 if case == "decode" else PROMPT + 8))
    if art.get("edgekd"):
        e = art["edgekd"]["engine"]
        model = Path(art["edgekd"]["dir"]) / e["engine_file"]
        keep = case == "prefill" and _keeps_logits(model)
        specs.append(_spec("edgekd", "edgekd", e.get("precision", "int8"),
                           f"edgekd compile --target x86 ({art['edgekd']['target']}): {e['engine_file']} on {e.get('runtime')}"
                           + (f"; fed {KEEP} 1 as edgekd's bench feeds it: the language-model head for the last position only "
                              "(what the first generated token needs; the other rows compute every position's logits)" if keep else ""),
                           feed, model=str(model), runtime=e.get("runtime", "onnxruntime-cpu"), settings=e.get("session", {}),
                           keep_logits=keep))
        if (model.parent / "genai_config.json").is_file():  # a decoder engine's onnxruntime-genai folder (edgekd.deploy.genai_folder)
            specs.append(_spec("edgekd-genai", "genai", e.get("precision", "int8"),
                               f"edgekd's engine ({e['engine_file']}) run by onnxruntime-genai from the genai_config.json edgekd wrote "
                               "beside it, og.Generator (its key/value buffers shared where the config says so)",
                               p.genai_feed, model_dir=str(model.parent), case=case,
                               max_length=PAST + 16 if case == "decode" else PROMPT + 8))
    return specs


def _keeps_logits(model: Path) -> bool:
    """Whether the engine has edgekd.graph.logits_to_keep's input (an ONNX graph input with a default)."""
    import onnx

    return model.suffix == ".onnx" and KEEP in {i.name for i in onnx.load(str(model), load_external_data=False).graph.input}


def prepare(name: str, s: RunSettings, failures: dict[str, str]) -> tuple[Prepared | None, dict[str, Any]]:
    prompt, past = (QUICK_PROMPT, QUICK_PAST) if s.prep.quick else (PROMPT, PAST)
    decoder = MODELS[name][1] == "decoder"
    p = _step(failures, "prepare", lambda: prepare_decoder(s.prep, prompt, past, name) if decoder else prepare_zoo(name, s.prep))
    if p is None:
        return None, {}
    work = s.prep.workdir / name
    art = {"optimum": _step(failures, "optimum-int8", lambda: optimum_quantized(p, work / "optimum", not p.transformer)),
           "openvino_int8": _step(failures, "openvino-int8-nncf", lambda: openvino_int8(p, work / "openvino")),
           "edgekd": _step(failures, "edgekd", lambda: compile_edgekd(p, s, work / "edgekd"))}
    if p.kind == "decoder":
        genai = _step(failures, "genai", lambda: genai_models(p, work / "genai"))
        if genai:
            art["genai"] = genai[0]
            failures.update(genai[1])
    return p, art


def run_model(name: str, s: RunSettings) -> list[dict[str, Any]]:
    failures: dict[str, str] = {}
    p, art = prepare(name, s, failures)
    if p is None:
        return [{"name": name, "description": "not prepared", "macs": "not available: preparation failed", "rows": [], "failures": failures,
                 "verdicts": {"how": "not available: the model could not be prepared (see failures)"}}]
    results = []
    for case in p.cases:
        specs = row_specs(p, case, art)
        case_failures = dict(failures)
        load_before = os.getloadavg()[0]
        rows = measure(specs, s.prep.workdir, s.rounds, s.bench, s.profile_runs, PROFILED if s.profile_runs else set(), case_failures)
        load = {"before": load_before, "after": os.getloadavg()[0]}
        label = name if case == "single" else f"{name}-{case}"
        results.append(model_result(label, p, case, rows, case_failures, load, art))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="tiny zoo sizes, short sequences, 2 rounds of 100 runs: a smoke test")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 10; --quick 2)")
    parser.add_argument("--min-runs", type=int, help="timed runs per row per round, at least (default 300; --quick 100)")
    parser.add_argument("--max-seconds", type=float, default=2.0, help="per row per round: fewer runs (down to 100) past this")
    parser.add_argument("--profile-runs", type=int, help="runs under each per-op profiler (default 200; --quick 20; 0: none)")
    parser.add_argument("--target", default="x86", help="edgekd's target (default: the x86 alias, the file for this host)")
    parser.add_argument("--profile", default=str(PROFILE), help="edgekd's profile for the compile (default: %(default)s)")
    parser.add_argument("--name", default="peers_real")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--workdir", type=Path, help="keep the models here (default: a temporary folder)")
    parser.add_argument("--render", action="store_true", help="only rewrite NAME.md from NAME.json")
    parser.add_argument("--refloor", action="store_true", help="only recompute the floors and verdicts of NAME.json from --workdir's models")
    args = parser.parse_args()
    if args.render or args.refloor:
        if args.refloor:
            if args.workdir is None:
                raise SystemExit("peers_real: error: --refloor needs the --workdir the run kept its models in")
            refloor(args.out, args.name, args.workdir)
        render(args.out, args.name)
        return
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"peers_real: error: unknown model(s) {', '.join(unknown)} in --models; use some of: {', '.join(MODELS)}")
    min_runs = args.min_runs or (100 if args.quick else 300)
    bench = {"warmup_runs": 10 if args.quick else 30, "min_runs": min_runs, "max_runs": max(min_runs, 5000),
             "max_seconds": args.max_seconds, "stable_rel_change": 0.02}
    with tempfile.TemporaryDirectory(prefix="edgekd-peers-real-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        s = RunSettings(PrepSettings(args.quick, workdir, 4 if args.quick else 128), args.rounds or (2 if args.quick else 10), bench,
                        args.profile_runs if args.profile_runs is not None else (20 if args.quick else 200), args.target, args.profile)
        models = []
        for name in names:
            print(f"{name}:", file=sys.stderr)
            models += run_model(name, s)
            write(args.out, args.name, models, s)  # after every model: a long run keeps what it measured
    render(args.out, args.name)


if __name__ == "__main__":
    main()
