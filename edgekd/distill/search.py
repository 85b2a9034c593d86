"""Latency-aware student search: before any training, pick the largest member of a student family
(edgekd.distill.students) that fits the latency and size budgets on the target.

Each (width, depth) candidate is built untrained, its params and MACs counted, exported to ONNX
with the pipeline's exporter (edgekd.graph.export.export_onnx; BatchNorm is folded into the convs first,
which ONNX Runtime's optimizer and quant_pre_process do anyway, and which about halves the export time)
and quantized to INT8 QDQ with the target's recipe (edgekd.graph.quantize.quantize_int8:
quant_pre_process + onnxruntime quantize_static), calibrated on random data. Then it is costed:

- `measured` (x86, runtime "onnxruntime-cpu", measure_x86): the INT8 graph is timed here, in this
  process, with the target's session settings and edgekd.perf.measure.sample under SEARCH_BENCH (50
  warm-up runs, then 200 timed runs at batch 1); the latency is their p90, as the bench stage's
  `latency_p90_ms` budget is. A few hundred runs rank candidates; the bench stage measures the
  trained student properly, in a fresh process, until p90 is stable.
- `estimated` (every other case): the roofline model edgekd.analysis.estimate with the target's
  [device] figures at int8, batch 1, on the same INT8 QDQ graph the bench stage estimates, every
  node on the accelerator (the check stage's placement does not exist yet).

Random calibration data and untrained weights are fine for this: they set only the values of scales
and zero points, not the graph, the tensor shapes or the kernels the runtime runs, so the timing,
the estimate and the file size are those of the trained student. The size is that of the INT8 file
(MB = 10^6 bytes), the file the quantize stage's `size_mb` budget checks.

The pick is the member with the most MACs (then params) whose latency <= latency_budget_ms and
size <= size_budget_mb; a budget left as None is not checked. If none fits, NoStudentFits (a
BudgetViolated) says how far the smallest candidate is from the budget, and carries the result.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import numpy as np

from edgekd.common.tempdirs import temp_dir
from edgekd.common.toolchain import torch_threads
from edgekd.config.models import BenchConfig, QuantizeConfig
from edgekd.config.target import SessionConfig, TargetQuantize
from edgekd.distill.students import FAMILIES, build_student, describe
from edgekd.errors import BudgetViolated, ConfigError
from edgekd.graph.export import INPUT_NAME, export_onnx

if TYPE_CHECKING:
    from torch import nn

    from edgekd.analysis.device import DeviceModel

DEFAULT_WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.4)
DEFAULT_DEPTHS = (0.5, 1.0)
DEFAULT_CANDIDATES: tuple[tuple[float, float], ...] = tuple((w, d) for w in DEFAULT_WIDTHS for d in DEFAULT_DEPTHS)
SEARCH_BENCH = BenchConfig(warmup_runs=50, min_runs=200, max_runs=200, max_seconds=10.0)
CALIBRATION_SAMPLES = 8  # random inputs, uniform in [0, 1)
RUNTIMES = ("onnxruntime-cpu", "qnn-htp", "tensorrt")
Method = Literal["measured", "estimated"]


@dataclass
class Candidate:
    """One untrained family member, as a cost function sees it; the ONNX files are made on demand."""

    family: str
    width: float
    depth: float
    input_shape: tuple[int, ...]
    params: int
    macs: int
    model: nn.Module
    workdir: Path
    opset: int = 18
    recipe: TargetQuantize = field(default_factory=TargetQuantize)
    _fp32: Path | None = field(default=None, repr=False)
    _int8: Path | None = field(default=None, repr=False)

    @property
    def stem(self) -> str:
        return f"{self.family}-w{self.width:g}-d{self.depth:g}"

    def onnx_fp32(self) -> Path:
        """The fp32 ONNX (BatchNorm folded into the convs), exported on first use."""
        if self._fp32 is None:
            path = self.workdir / f"{self.stem}.onnx"
            export_onnx(_fold_batchnorm(self.model), self.input_shape, path, self.opset)
            self._fp32 = path
        return self._fp32

    def onnx_int8(self) -> Path:
        """The INT8 QDQ ONNX (the target's recipe, random calibration data), made on first use."""
        if self._int8 is None:
            from edgekd.graph.quantize import quantize_int8

            path = self.workdir / f"{self.stem}_int8.onnx"
            quantize_int8(self.onnx_fp32(), path, {INPUT_NAME: calibration_inputs(self.input_shape)},
                          QuantizeConfig(calibration_samples=CALIBRATION_SAMPLES), self.recipe)
            self._int8 = path
        return self._int8


@dataclass(frozen=True)
class Cost:
    """What a cost function returns for one candidate: latency (ms) and size (MB), each with how."""

    latency_ms: float
    latency_method: Method
    latency_how: str
    size_mb: float
    size_method: Method
    size_how: str
    details: dict[str, Any] = field(default_factory=dict)  # e.g. p50_ms, runs


CostFn = Callable[[Candidate], Cost]


@dataclass(frozen=True)
class CandidateResult:
    width: float
    depth: float
    params: int
    macs: int
    cost: Cost
    fits: bool
    why_not: list[str]  # empty when it fits
    seconds: float  # wall time spent on this candidate (build, export, quantize, cost)

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "depth": self.depth, "params": self.params, "macs": self.macs,
                **{k: v for k, v in asdict(self.cost).items()}, "fits": self.fits, "why_not": self.why_not,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class SearchResult:
    family: str
    input_shape: tuple[int, ...]
    num_classes: int
    target_runtime: str
    latency_budget_ms: float | None
    size_budget_mb: float | None
    candidates: list[CandidateResult]
    chosen: CandidateResult | None
    seconds: float

    @property
    def student_args(self) -> dict[str, Any]:
        """Args for the family's project factory that build the chosen member."""
        if self.chosen is None:
            raise ValueError("no candidate fits: there is no chosen student")
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "width": self.chosen.width, "depth": self.chosen.depth}

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family, "factory": f"edgekd.distill.students:{self.family}",
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "target_runtime": self.target_runtime,
            "budgets": {"latency_ms": self.latency_budget_ms, "size_mb": self.size_budget_mb},
            "rule": "most MACs (then params) among the candidates within every budget given",
            "chosen": None if self.chosen is None else {"width": self.chosen.width, "depth": self.chosen.depth},
            "candidates": [c.to_json() for c in self.candidates],
            "seconds": round(self.seconds, 3),
        }


class NoStudentFits(BudgetViolated):
    """No candidate of the family fits the budgets; `result` holds every candidate's numbers."""

    def __init__(self, message: str, hint: str, result: SearchResult) -> None:
        super().__init__(message, hint)
        self.result = result


# ---------------------------------------------------------------- cost functions


def calibration_inputs(input_shape: tuple[int, ...], count: int = CALIBRATION_SAMPLES, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *input_shape), dtype=np.float32)


def measured_x86(session: SessionConfig | None = None, bench: BenchConfig = SEARCH_BENCH) -> CostFn:
    """Time each candidate's INT8 graph on this host with ONNX Runtime CPU (see the module docstring)."""
    cfg = session or SessionConfig()

    def cost(c: Candidate) -> Cost:
        from edgekd.backends.ort.session import open_session, runtime_description
        from edgekd.common.toolchain import cpu_model
        from edgekd.deploy.run_on_device import summarize
        from edgekd.perf.measure import sample

        int8 = c.onnx_int8()
        ort_session = open_session(int8, cfg)
        feed = {ort_session.get_inputs()[0].name: calibration_inputs(c.input_shape, 1, seed=1)}
        stats = summarize(sample(lambda: ort_session.run(None, feed), bench))
        how = (f"p90 of {stats['runs']} runs after {bench.warmup_runs} warm-up, batch 1, in-process, "
               f"{runtime_description(cfg)}, on {cpu_model()}; INT8 QDQ graph of the untrained student "
               f"({c.recipe.activation_type}/{c.recipe.weight_type}, random calibration data)")
        return Cost(stats["p90_ms"], "measured", how, int8.stat().st_size / 1e6, "measured", _SIZE_HOW,
                    {"p50_ms": stats["p50_ms"], "runs": stats["runs"]})

    return cost


def estimated(device: DeviceModel, precision: str = "int8") -> CostFn:
    """Estimate each candidate's INT8 graph on `device` with the roofline model."""

    def cost(c: Candidate) -> Cost:
        from edgekd.analysis.estimate import estimate

        int8 = c.onnx_int8()
        result = estimate(int8, device, precision, 1)
        how = (f"roofline model edgekd.analysis.estimate, [device] {device.name}, {precision}, batch 1, "
               "every node on the accelerator; INT8 QDQ graph of the untrained student")
        return Cost(result.latency_ms, "estimated", how, int8.stat().st_size / 1e6, "measured", _SIZE_HOW)

    return cost


_SIZE_HOW = "size of the INT8 QDQ ONNX file quantized here (same tensors as the trained student's; MB = 10^6 bytes)"


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Conv2d directly followed by a BatchNorm2d (inside a Sequential)
    replaced by one conv with the BatchNorm folded in (eval-mode statistics)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module)
        merged: list[nn.Module] = []
        i = 0
        while i < len(children):
            if (isinstance(children[i], nn.Conv2d) and i + 1 < len(children)
                    and isinstance(children[i + 1], nn.BatchNorm2d)):
                merged.append(fuse_conv_bn_eval(children[i], children[i + 1]))
                i += 2
            else:
                merged.append(children[i])
                i += 1
        if len(merged) != len(children):
            for name in list(module._modules):
                del module._modules[name]
            for index, child in enumerate(merged):
                module.add_module(str(index), child)
    return folded


# ---------------------------------------------------------------- the search


def _is_pair(c: object) -> bool:
    return (isinstance(c, (tuple, list)) and len(c) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in c))


def _check(family: str, candidates: list[tuple[float, float]], latency_budget_ms: float | None,
           size_budget_mb: float | None, target_runtime: str) -> list[tuple[float, float]]:
    """The candidates as (width, depth) float pairs, after every argument is checked."""
    if family not in FAMILIES:
        build_student(family, (1, 8, 8), 2)  # raises the ConfigError with the known names
    if not candidates:
        raise ConfigError(f"student search for '{family}': the candidate list is empty",
                          "give (width, depth) pairs, or none for the default grid")
    bad = [c for c in candidates if not _is_pair(c)]
    if bad:
        raise ConfigError(f"student search for '{family}': candidates must be (width, depth) pairs of numbers > 0, "
                          f"got {bad[:3]}")
    for key, value in (("latency_budget_ms", latency_budget_ms), ("size_budget_mb", size_budget_mb)):
        if value is not None and not value > 0:
            raise ConfigError(f"student search: {key} must be > 0 (or None for no budget), got {value}")
    if target_runtime not in RUNTIMES:
        raise ConfigError(f"student search: unknown target runtime '{target_runtime}' (known: {', '.join(RUNTIMES)})")
    return [(float(w), float(d)) for w, d in candidates]


def _why_not(cost: Cost, latency_budget_ms: float | None, size_budget_mb: float | None) -> list[str]:
    why = []
    if latency_budget_ms is not None and cost.latency_ms > latency_budget_ms:
        why.append(f"latency {cost.latency_ms:.4g} ms ({cost.latency_method}) > budget {latency_budget_ms:g} ms")
    if size_budget_mb is not None and cost.size_mb > size_budget_mb:
        why.append(f"size {cost.size_mb:.4g} MB > budget {size_budget_mb:g} MB")
    return why


def _pick_cost_fn(target_runtime: str, device_model: DeviceModel | None, measure_x86: bool,
                  session: SessionConfig | None) -> CostFn:
    if target_runtime == "onnxruntime-cpu" and measure_x86:
        return measured_x86(session)
    if device_model is None:
        raise ConfigError(f"student search for runtime '{target_runtime}': nothing is measured here"
                          f"{'' if target_runtime != 'onnxruntime-cpu' else ' (measure_x86 is off)'} "
                          "and there are no [device] figures to estimate latency with",
                          "give the target's [device] table (device_model)")
    return estimated(device_model)


def _cost_all(family: str, input_shape: tuple[int, ...], num_classes: int, pairs: list[tuple[float, float]],
              latency_budget_ms: float | None, size_budget_mb: float | None, workdir: Path, opset: int,
              recipe: TargetQuantize, cost_fn: CostFn, log: Callable[[str], None] | None) -> list[CandidateResult]:
    import torch

    seen: dict[str, tuple[float, float, Cost]] = {}  # architecture -> the first candidate costed with it
    rows: list[CandidateResult] = []
    for width, depth in pairs:
        t0 = time.perf_counter()
        with torch.random.fork_rng():  # untrained weights, seeded, without touching the caller's RNG
            torch.manual_seed(0)
            model = build_student(family, input_shape, num_classes, width, depth)
        counts = describe(model, input_shape)
        arch = repr(model)
        if arch in seen:
            w0, d0, cost = seen[arch]
            cost = replace(cost, latency_how=f"same architecture as width {w0:g}, depth {d0:g}: {cost.latency_how}")
        else:
            cost = cost_fn(Candidate(family, width, depth, input_shape, counts["params"], counts["macs"], model, workdir,
                                     opset, recipe))
            seen[arch] = (width, depth, cost)
        why = _why_not(cost, latency_budget_ms, size_budget_mb)
        rows.append(CandidateResult(width, depth, counts["params"], counts["macs"], cost, not why, why,
                                    time.perf_counter() - t0))
        if log is not None:
            log(f"  {family} width {width:g} depth {depth:g}: {counts['macs']:,} MACs, {cost.latency_ms:.4g} ms "
                f"({cost.latency_method}), {cost.size_mb:.3g} MB -> {'fits' if not why else '; '.join(why)}")
    return rows


def search_student(family: str, input_shape: tuple[int, ...], num_classes: int,
                   candidates: list[tuple[float, float]] | None = None, latency_budget_ms: float | None = None,
                   size_budget_mb: float | None = None, target_runtime: str = "onnxruntime-cpu",
                   device_model: DeviceModel | None = None, measure_x86: bool = True, workdir: Path | None = None,
                   *, session: SessionConfig | None = None, recipe: TargetQuantize | None = None, opset: int = 18,
                   cost_fn: CostFn | None = None, log: Callable[[str], None] | None = None) -> SearchResult:
    """Cost every candidate (default DEFAULT_CANDIDATES) and pick the largest that fits (module
    docstring). `session`, `recipe` and `opset` are the target's ([session], [quantize], opset);
    `cost_fn` replaces the measured/estimated costing (tests inject a fake one); `log` gets one line
    per candidate. The ONNX files (`<family>-w<width>-d<depth>[_int8].onnx`) are left in `workdir`;
    with workdir None they go to a temporary folder, removed afterwards."""
    started = time.perf_counter()
    input_shape = tuple(input_shape)
    pairs = _check(family, list(DEFAULT_CANDIDATES if candidates is None else candidates), latency_budget_ms,
                   size_budget_mb, target_runtime)
    cost_fn = cost_fn or _pick_cost_fn(target_runtime, device_model, measure_x86, session)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(temp_dir("search"))
        workdir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(torch_threads(1))
        rows = _cost_all(family, input_shape, num_classes, pairs, latency_budget_ms, size_budget_mb, workdir, opset,
                         recipe or TargetQuantize(), cost_fn, log)
    fitting = [r for r in rows if r.fits]
    chosen = max(fitting, key=lambda r: (r.macs, r.params)) if fitting else None
    result = SearchResult(family, input_shape, num_classes, target_runtime, latency_budget_ms, size_budget_mb,
                          rows, chosen, time.perf_counter() - started)
    if chosen is None:
        smallest = min(rows, key=lambda r: (r.macs, r.params))
        versus = []
        if latency_budget_ms is not None:
            versus.append(f"latency {smallest.cost.latency_ms:.4g} ms ({smallest.cost.latency_method}) vs budget "
                          f"{latency_budget_ms:g} ms")
        if size_budget_mb is not None:
            versus.append(f"size {smallest.cost.size_mb:.4g} MB vs budget {size_budget_mb:g} MB")
        raise NoStudentFits(
            f"no {family} student fits the budgets: the smallest candidate (width {smallest.width:g}, depth "
            f"{smallest.depth:g}, {smallest.macs:,} MACs) has {'; '.join(versus)}",
            "raise the budget, add smaller (width, depth) candidates, or choose a lighter student family", result)
    return result
