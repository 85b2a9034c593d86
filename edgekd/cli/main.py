"""The `edgekd` command: parse, call edgekd.api, map errors to the shared exit codes."""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from edgekd import __version__, api
from edgekd.cli.bench import ProgressBar, bench_summary
from edgekd.common.blame import blame, print_frames
from edgekd.common.fsutil import atomic_write_text
from edgekd.common.process_env import contained
from edgekd.config.loading import ConfigSearch, load_project
from edgekd.config.models import BENCH_SCENARIOS
from edgekd.errors import EXIT_INTERNAL, EXIT_USER, EdgekdError
from edgekd.graph.inputs import parse_shapes
from edgekd.pipeline.cache import default_root

EXIT_CODES_HELP = "Exit codes: 0 ok, 1 budget violated (check: unsupported nodes), 2 bad input/usage, 3 toolchain missing, 70 internal error."
VERBOSE_FLAGS = ("--verbose", "-v")
ABORTED = 130  # Ctrl-C: 128 + SIGINT


def _err(text: str) -> None:
    click.echo(text, err=True)


def search_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--profiles-dir", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Extra folder of profile files (searched first; also $EDGEKD_PROFILES_PATH).")(func)
    return click.option("--targets-dir", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Extra folder of target files (searched first; also $EDGEKD_TARGETS_PATH).")(func)


def shape_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--shape", "shapes", multiple=True, metavar="NAME=DIMS",
                        help="An input's shape, as trtexec takes it (repeatable): --shape input_ids=1x128. Dims left out "
                             "come from the model, optimum's config.json beside it, or defaults (image 3x224x224, "
                             "sequence 128, decoder past 0).")(func)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(help=f"Distill, quantize, export and build edge engines under budgets. {EXIT_CODES_HELP} "
             "--verbose (-v), anywhere on the line: when your code (a factory, a model, a data set) raised, show its traceback.")
@click.version_option(__version__, prog_name="edgekd")
def cli() -> None:
    pass


def _summary(result: api.BuildResult) -> str:
    r = result.report
    metric = (r.get("task") or {}).get("metric", {"name": "accuracy", "unit": "%"})
    name, unit = metric["name"], metric["unit"]
    measured = {k: m for k, m in r.get(name, {}).items() if m["value"] is not None}
    values = "  ".join(f"{k} {m['value']:.2f}{unit}" for k, m in measured.items())
    what = "top-1 on the held-out evaluation data" if name == "accuracy" else f"{name} on the held-out evaluation data"
    lines = [f"edgekd {'compile' if r['project']['via'] == 'edgekd compile' else 'build'}: {r['project']['name']} -> "
             f"{r['target']['name']}: {r['verdict'].upper()}",
             f"  {name:<9} {values}  ({what})" if measured else f"  {name:<9} not measured (no labelled data)"]
    agreement = next((s["metrics"][k] for s in r["stages"] for k in ("engine.agreement_pct",) if k in s["metrics"]), None)
    if agreement and agreement["value"] is not None:
        on = (r.get("provenance") or {}).get("evaluation", "the evaluation data")
        lines.append(f"  fidelity  the engine's top-1 equals the fp32 model's on {agreement['value']:.2f}% of {on} (no labels: not accuracy)")
    lat = r["latency"]
    if lat and lat.get("method") == "estimated":
        lines.append(f"  latency   {lat['latency_ms']:.4f} ms ESTIMATED by the latency model from the target's [device] figures (not measured)")
    elif lat:
        lines.append(f"  latency   p50 {lat['p50_ms']:.4f} ms  p90 {lat['p90_ms']:.4f} ms  p99 {lat['p99_ms']:.4f} ms  "
                     f"(measured on this host, batch 1, {lat['intra_op_threads']} threads, {lat['runs']} runs)")
    sizes = {s["name"]: s["metrics"].get("engine.size_mb") for s in r["stages"]}
    if sizes.get("compile"):
        lines.append(f"  size      engine {sizes['compile']['value']:.4f} MB")
    lines.append("  stages    " + ", ".join(f"{s['name']} {s['status']}" for s in r["stages"]))
    lines.append(f"  report    {result.out_dir / 'report.md'}")
    return "\n".join(lines)


@cli.command(help=f"Build the deployable student for a target. {EXIT_CODES_HELP}")
@click.option("--target", "-t", default="x86", show_default=True, help="Target name, alias or .toml path.")
@click.option("--profile", "-p", default="default", show_default=True, help="Profile name or .toml path.")
@click.option("--project", type=click.Path(dir_okay=False, path_type=Path), help="Project file (default ./edgekd.toml, else the built-in example).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Build folder (default build/<target>).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Stage cache (default $EDGEKD_CACHE_DIR or ~/.cache/edgekd).")
@click.option("--force", is_flag=True, help="Run every stage even when cached.")
@click.option("--dry-run", is_flag=True, help="Print the resolved project, target, profile and stage plan; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (or the dry-run plan) as JSON on stdout.")
@search_options
def build(target: str, profile: str, project: Path | None, out: Path | None, cache_dir: Path | None, force: bool,
          dry_run: bool, as_json: bool, targets_dir: tuple[Path, ...], profiles_dir: tuple[Path, ...]) -> None:
    search = ConfigSearch(targets_dir, profiles_dir)
    if dry_run:
        plan = api.dry_run(api.resolve_inputs(target, profile, project, search))
        if as_json:
            _echo_json(plan)
            return
        for section in ("project", "target", "profile"):
            click.echo(f"[{section}]\n{json.dumps(plan[section], indent=2)}")
        click.echo("[settings] (where each came from: project, profile, target or default)")
        for name, row in plan["settings"].items():
            where = f"{row['by']}; the project says {row['project_value']!r}" if "by" in row else row["from"]
            click.echo(f"  {name} = {row['value']!r}  ({where})")
        click.echo("[plan]")
        for i, step in enumerate(plan["plan"], start=1):
            checks = ", ".join(step["budgets"]) or "no budgets"
            click.echo(f"  {i}. {step['stage']}: {step['does']} -> {', '.join(step['writes']) or 'metrics'}; checks {checks}")
        click.echo("dry run: nothing was run or written")
        return
    try:
        result = api.build(target, profile, project, out, targets_dir, profiles_dir, cache_dir, force, log=_err)
    except api.BuildFailed as exc:
        click.echo(json.dumps(exc.result.report, indent=1) if as_json else _summary(exc.result))
        raise
    click.echo(json.dumps(result.report, indent=1) if as_json else _summary(result))


@cli.command(name="compile", help="Build the engine for a trained model (no distillation): quantize it for the target "
             "(calibrated on --calib, else --data, else the project's data, else generated feeds labelled unfit for accuracy), "
             "check op support, compile (x86 tuning, QNN context binary, TensorRT bundle), evaluate on labelled data "
             f"(--data DIR with labels.npy, or --project), bench; the same build folder, report and budgets as build. {EXIT_CODES_HELP}")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", default="x86", show_default=True, help="Target name, alias or .toml path.")
@click.option("--profile", "-p", default="default", show_default=True, help="Profile name or .toml path.")
@click.option("--calib", type=click.Path(file_okay=False, path_type=Path), help="Calibration data: a folder of .npy/.npz named by input.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Evaluation data: a folder of .npy/.npz named by input, with labels.npy for accuracy.")
@click.option("--project", type=click.Path(dir_okay=False, path_type=Path), help="A project file whose data (calibration and test splits) to use.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Build folder (default build/<model>-<target>).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Stage cache (default $EDGEKD_CACHE_DIR or ~/.cache/edgekd).")
@click.option("--force", is_flag=True, help="Run every stage even when cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@shape_option
@search_options
def compile_(model: Path, target: str, profile: str, calib: Path | None, data_dir: Path | None, project: Path | None, out: Path | None,
             cache_dir: Path | None, force: bool, as_json: bool, shapes: tuple[str, ...], targets_dir: tuple[Path, ...],
             profiles_dir: tuple[Path, ...]) -> None:
    from edgekd.stages.compile_context import CompileData

    data = CompileData(calib, data_dir, load_project(project) if project else None)
    try:
        result = api.compile_model(model, target, profile, out, parse_shapes(shapes), data, ConfigSearch(targets_dir, profiles_dir),
                                   cache_dir, force, log=_err)
    except api.BuildFailed as exc:
        click.echo(json.dumps(exc.result.report, indent=1) if as_json else _summary(exc.result))
        raise
    click.echo(json.dumps(result.report, indent=1) if as_json else _summary(result))


@cli.command(help=f"Op support of an ONNX model on a target: where every node runs, what falls back and why. {EXIT_CODES_HELP}")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", required=True, help="Target name, alias or .toml path.")
@click.option("--calib", type=click.Path(file_okay=False, path_type=Path),
              help="Calibration data for a float model on a quantized-only target (QNN HTP): a folder of .npy/.npz named by input.")
@click.option("--fail-on", type=click.Choice(["unsupported", "fallback", "never"]), default="unsupported", show_default=True,
              help="Exit 1 when a node is unsupported on the target (default), or also when one falls back off the accelerator.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@shape_option
@search_options
def check(model: Path, target: str, calib: Path | None, fail_on: str, as_json: bool, shapes: tuple[str, ...],
          targets_dir: tuple[Path, ...], profiles_dir: tuple[Path, ...]) -> None:
    report = api.check_model(model, target, ConfigSearch(targets_dir, profiles_dir), parse_shapes(shapes), calib)
    if as_json:
        _echo_json(report)
    else:
        _print_check(model, report)
    counts = report["counts"]
    failing = counts["unsupported"] + (counts["fallback"] if fail_on == "fallback" else 0) if fail_on != "never" else 0
    if failing:
        from edgekd.errors import BudgetViolated

        raise BudgetViolated(f"check failed: {model} has {counts['unsupported']} unsupported and {counts['fallback']} fallback "
                             f"node(s) on {report['target']} (--fail-on {fail_on})", "see the node list; --fail-on never only reports")


def _print_check(model: Path, report: dict[str, Any]) -> None:
    click.echo(f"{model} on {report['target']}: accelerator {report['accelerator']}; fallback {report['fallback']}")
    for node in report["nodes"]:
        reason = f"  ({node['reason']})" if node["reason"] else ""
        click.echo(f"  {node['runs_on']:<12} {node['op_type']:<18} {node['name']}{reason}")
    for note in report.get("notes", []):
        click.echo(f"note: {note}")
    counts = report["counts"]
    click.echo(f"nodes: {counts['accelerator']} on the accelerator, {counts['fallback']} fall back, {counts['unsupported']} unsupported; "
               f"off the accelerator: {100 * report['node_share_off']:.1f}% of nodes, " +
               (f"{100 * report['macs_share_off']:.1f}% of MACs" if report["macs_share_off"] is not None else "MACs n/a (see the note)"))


@cli.command(help=f"Estimate the latency of an ONNX model on a target from its device figures (a model, not a measurement). {EXIT_CODES_HELP}")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", required=True, help="Target name, alias or .toml path.")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), default="int8", show_default=True)
@click.option("--batch", type=click.IntRange(min=1, max=65536), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@shape_option
@search_options
def estimate(model: Path, target: str, precision: str, batch: int, as_json: bool, shapes: tuple[str, ...],
             targets_dir: tuple[Path, ...], profiles_dir: tuple[Path, ...]) -> None:
    result = api.estimate_model(model, target, ConfigSearch(targets_dir, profiles_dir), precision, batch, parse_shapes(shapes))
    if as_json:
        _echo_json(result)
        return
    inputs = ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))}" for i in result["inputs"]["inputs"])
    click.echo(f"{model} on {result['target']}, {precision}, inputs {inputs}: estimated {result['latency_ms']:.4f} ms")
    rows = sorted(result["per_op_type"].items(), key=lambda kv: -kv[1]["ms"])
    for op_type, row in (r for r in rows if r[1]["bound"] != "fused"):
        click.echo(f"  {op_type:<20} {row['ms']:.4f} ms  {row['nodes']} nodes  {row['macs']:,} MACs  {row['bound']}-bound")
    folded = [f"{op_type} x{row['nodes']}" for op_type, row in rows if row["bound"] == "fused"]
    if folded:
        click.echo(f"  cost nothing (folded or fused away, see per_node notes in --json): {', '.join(folded)}")
    click.echo("estimated, not measured: " + "; ".join(result["assumptions"][:3]))


@cli.command(help="Latency of a build's engine or of an ONNX model: SingleStream (batch 1: p50/p90/p99, CV, raw samples), "
             "Offline (throughput at the best batch), for decoders time to first token and decode tokens/s, and the top "
             "ops by time, measured here for x86 targets; estimated for device-only targets unless --device runs the "
             "build's bundle on the device. A build folder's report "
             f"gets the new numbers. {EXIT_CODES_HELP}")
@click.argument("path", type=click.Path(exists=True, path_type=Path), metavar="BUILD_DIR|MODEL")
@click.option("--target", "-t", help="Target name, alias or .toml path (default for a build: its own target).")
@click.option("--profile", "-p", help="Profile whose [recipe.bench] sets the run lengths (default: the build's, else 'default').")
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(BENCH_SCENARIOS),
              help="Scenarios to run (repeat for several; default: the profile's). TimeToFirstToken and "
                   "DecodeTokensPerSecond run for decoder models only.")
@click.option("--threads", type=click.IntRange(min=0), help="Intra-op threads (default: the build's tuned or the target's).")
@click.option("--device", help="Run the build's bundle on a device instead: ssh://user@host[:port], adb://SERIAL or local://DIR.")
@click.option("--runs", type=click.IntRange(min=10, max=1_000_000), help="Timed runs on the device (--device only).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the result JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@shape_option
@search_options
def bench(path: Path, target: str | None, profile: str | None, scenarios: tuple[str, ...], threads: int | None, device: str | None,
          runs: int | None, out: Path | None, as_json: bool, shapes: tuple[str, ...], targets_dir: tuple[Path, ...],
          profiles_dir: tuple[Path, ...]) -> None:
    if threads is not None:
        from edgekd.common.host import check_threads

        check_threads(threads, "--threads")  # before anything is loaded
    if device:
        result = api.bench_on_device(path, device, runs)
    else:
        with ProgressBar(enabled=not as_json) as bar:
            result = api.bench_here(path, target, profile, ConfigSearch(targets_dir, profiles_dir), threads,
                                    list(scenarios) or None, bar.step, parse_shapes(shapes))
    if out:
        atomic_write_text(out, json.dumps(result, indent=1))
    if as_json:
        _echo_json(result)
        return
    click.echo(bench_summary(path, result))
    if path.is_dir():
        click.echo(f"result written into {path / 'report.json'}" + (" under device_results" if device else " (latency)"))


@cli.command(help="CI regression gate: CANDIDATE against BASELINE (build folders or report.json files): the profile's "
             "budgets, and latency p90 (bootstrap confidence interval over the raw samples), the engine's task metric (accuracy or perplexity) and size "
             "regressions. See docs/ci.md. Exit codes: 0 pass, 1 a check failed, 2 bad input.")
@click.argument("candidate", type=click.Path(path_type=Path))
@click.option("--baseline", required=True, type=click.Path(path_type=Path), help="The build to compare against.")
@click.option("--profile", "-p", help="Profile name or .toml path for budgets and [gate] (default: the candidate's own).")
@click.option("--max-latency-increase-pct", "max_latency_p90_increase_pct", type=float, help="Override [gate] max_latency_p90_increase_pct.")
@click.option("--max-accuracy-drop-pt", type=float, help="Override [gate] max_accuracy_drop_pt (tasks measured by accuracy).")
@click.option("--max-perplexity-increase-pct", type=float, help="Override [gate] max_perplexity_increase_pct (tasks measured by perplexity).")
@click.option("--max-size-increase-pct", type=float, help="Override [gate] max_size_increase_pct.")
@click.option("--max-ttft-increase-pct", type=float, help="Override [gate] max_ttft_increase_pct (decoders).")
@click.option("--max-decode-tokens-per-s-decrease-pct", type=float, help="Override [gate] max_decode_tokens_per_s_decrease_pct (decoders).")
@click.option("--max-peak-memory-increase-pct", type=float, help="Override [gate] max_peak_memory_increase_pct.")
@click.option("--confidence", type=float, help="Override [gate] confidence (two-sided, e.g. 0.95).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML here.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), help="Write a Markdown table here (PR comment).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def gate(candidate: Path, baseline: Path, profile: str | None, junit: Path | None, markdown: Path | None, as_json: bool,
         **thresholds: float | None) -> None:
    """`thresholds`: the [gate] fields given on the command line (None: the profile's)."""
    from edgekd.errors import BudgetViolated
    from edgekd.gate import run_gate, write_outputs
    from edgekd.gate.render import summary

    result = run_gate(candidate, baseline, profile, **thresholds)
    write_outputs(result, markdown, junit)
    click.echo(json.dumps(result.to_json(), indent=1) if as_json else summary(result))
    if result.failed:
        raise BudgetViolated(f"gate failed: {', '.join(c.name for c in result.failed)}", "see the table above or --markdown")


@cli.command(help=f"Distill the student on N processes with torchrun (DDP; gloo on CPU, nccl on GPU). {EXIT_CODES_HELP}")
@click.option("--nproc", type=click.IntRange(min=1, max=1024), required=True, help="Processes (torchrun --nproc-per-node).")
@click.option("--target", "-t", default="x86", show_default=True, help="Target (for the student search).")
@click.option("--profile", "-p", default="default", show_default=True, help="Profile name or .toml path.")
@click.option("--project", type=click.Path(dir_okay=False, path_type=Path), help="Project file (default ./edgekd.toml, else the built-in example).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default build/<target>-ddp).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Stage cache.")
def distill(nproc: int, target: str, profile: str, project: Path | None, out: Path | None, cache_dir: Path | None) -> None:
    result = api.distill_ddp(nproc, target, profile, project, out, cache_dir, log=_err)
    _echo_json({k: v for k, v in result.items() if k != "losses"} | {"final_loss": result["losses"][-1]})


@cli.command(help=f"Write a logits file (top-k soft labels) for the project's training split from an ONNX teacher. {EXIT_CODES_HELP}")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The .npz logits file to write.")
@click.option("--k", type=click.IntRange(min=1, max=1_000_000), default=5, show_default=True, help="Classes kept per sample.")
@click.option("--project", type=click.Path(dir_okay=False, path_type=Path), help="Project file (its data factory).")
def logits(model: Path, out: Path, k: int, project: Path | None) -> None:
    _echo_json(api.write_teacher_logits(model, out, k, project))


def _listing(kind: str) -> click.Group:
    @click.group(name=kind, invoke_without_command=True, help=f"List {kind} (or `{kind} show NAME`).")
    @click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
    @search_options
    @click.pass_context
    def group(ctx: click.Context, as_json: bool, targets_dir: tuple[Path, ...], profiles_dir: tuple[Path, ...]) -> None:
        ctx.obj = ConfigSearch(targets_dir, profiles_dir)
        if ctx.invoked_subcommand is not None:
            return
        rows = api.list_configs(kind, ctx.obj)
        if as_json:
            _echo_json(rows)
            return
        for row in rows:
            extra = f" [{row['runtime']}]" + (f" aliases: {', '.join(row['aliases'])}" if row.get("aliases") else "") if "runtime" in row else ""
            click.echo(f"{row['name']:<22} {row.get('description', 'INVALID: ' + row.get('error', ''))}{extra}")

    @group.command(name="show", help=f"Show one of the {kind}, resolved (aliases too).")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
    @search_options
    @click.pass_obj
    def show(search: ConfigSearch, name: str, as_json: bool, targets_dir: tuple[Path, ...], profiles_dir: tuple[Path, ...]) -> None:
        search = ConfigSearch(search.targets_dirs + targets_dir, search.profiles_dirs + profiles_dir)
        data = api.show_config(kind, name, search)
        if as_json:
            _echo_json(data)
        else:
            click.echo(f"{data.pop('name')} ({data.pop('file')}; {data.pop('via')})")
            click.echo(json.dumps(data, indent=2))

    return group


cli.add_command(_listing("targets"))
cli.add_command(_listing("profiles"))


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one line (no traceback; under --verbose the user's own frames
    when their code raised); bugs print a traceback and exit 70."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in VERBOSE_FLAGS for a in args)
    try:
        with contained(_cache_root(args)):  # libraries write into the cache and a temp folder removed at exit
            cli.main(args=[a for a in args if a not in VERBOSE_FLAGS], prog_name="edgekd", standalone_mode=False)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        _err("edgekd: aborted")
        return ABORTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USER
    except EdgekdError as exc:
        return _user_error(exc, verbose)
    except Exception as exc:
        mapped = blame(exc)  # the user's code or paths raised it: a user error, not a bug
        if mapped is not None:
            return _user_error(mapped, verbose, exc)
        traceback.print_exc()
        _err(f"edgekd: internal error (exit {EXIT_INTERNAL}); please report it with the traceback above")
        return EXIT_INTERNAL


def _cache_root(args: list[str]) -> Path:
    """The stage cache a command line names (--cache-dir), else $EDGEKD_CACHE_DIR or the default."""
    for i, arg in enumerate(args):
        if arg == "--cache-dir" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--cache-dir="):
            return Path(arg.split("=", 1)[1])
    return default_root()


def _user_error(exc: EdgekdError, verbose: bool, raised: BaseException | None = None) -> int:
    if verbose:
        print_frames(raised or exc)
    _err(f"edgekd: error: {exc.one_line()}")
    return exc.exit_code


def run() -> None:
    """Console-script entry point. Ctrl-C ends at once with 130, stdio flushed: CPython 3.11 exits by SIGINT (-2)
    where a KeyboardInterrupt was ever printed (one in a destructor), even one edgekd caught (gh-128130 area)."""
    code = main()
    if code == ABORTED:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
