"""Latency-model figures resolved for an estimate: the host CPU read here, and a target's [device]
figures (edgekd.config.device) scaled to it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgekd.config.device import (  # noqa: F401  (re-exported for the latency model)
    ELEMENT_BYTES,
    PRECISIONS,
    DeviceModel,
    DeviceUnit,
    FallbackModel,
    Precision,
)


@dataclass(frozen=True)
class HostCpu:
    cores: int  # physical cores among the CPUs this process may use
    logical_cpus: int
    clock_mhz: float
    cache_mb: float | None = None  # the last-level cache the first usable CPU sees (shared, not per core)
    cores_source: str = "os.sched_getaffinity + /proc/cpuinfo 'physical id'/'core id'"
    clock_source: str = "/proc/cpuinfo 'cpu MHz' (mean over usable CPUs at read time)"
    cache_source: str = "/sys/devices/system/cpu/cpuN/cache: size of the highest level"


def _last_level_cache_mb(cpu: int) -> float | None:
    """Size of the highest cache level CPU `cpu` sees (sysfs), None where sysfs does not say."""
    base = f"/sys/devices/system/cpu/cpu{cpu}/cache"
    best: tuple[int, float] | None = None
    try:
        for entry in os.listdir(base):
            if not entry.startswith("index"):
                continue
            with open(f"{base}/{entry}/level", encoding="utf-8") as fh:
                level = int(fh.read())
            with open(f"{base}/{entry}/size", encoding="utf-8") as fh:
                text = fh.read().strip()
            units = {"K": 1e-3, "M": 1.0, "G": 1e3}
            size = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text) / 1e6
            if best is None or level > best[0]:
                best = (level, size)
    except (OSError, ValueError):
        return None
    return best[1] if best else None


def read_host_cpu() -> HostCpu:
    """Cores and clock of this host: usable CPUs from os.sched_getaffinity, physical cores from the
    (physical id, core id) pairs of those CPUs in /proc/cpuinfo, clock as their mean "cpu MHz"
    (the value at read time; turbo and throttling are not modelled). Linux only."""
    try:
        usable = set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = set(range(os.cpu_count() or 1))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            blocks = fh.read().strip().split("\n\n")
    except OSError as exc:
        raise RuntimeError(f"cannot read /proc/cpuinfo ({exc}); give cores and clock_mhz in the target's [device]") from exc
    mhz: list[float] = []
    physical: set[tuple[str, str]] = set()
    for block in blocks:
        info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        if "processor" not in info or int(info["processor"]) not in usable:
            continue
        if "cpu MHz" in info:
            mhz.append(float(info["cpu MHz"]))
        physical.add((info.get("physical id", "0"), info.get("core id", info["processor"])))
    if not mhz:
        raise RuntimeError("/proc/cpuinfo gives no 'cpu MHz' for the usable CPUs; give clock_mhz in the target's [device]")
    return HostCpu(cores=len(physical) or len(usable), logical_cpus=len(usable), clock_mhz=sum(mhz) / len(mhz),
                   cache_mb=_last_level_cache_mb(min(usable)))


@dataclass(frozen=True)
class Resolved:
    """Absolute figures of one unit (accelerator or fallback), with where each came from."""

    name: str
    peak_tops: dict[str, float]
    memory_bandwidth_gbs: float
    compute_efficiency: dict[str, float]
    bandwidth_efficiency: float
    layer_overhead_us: float
    switch_overhead_us: float = 0.0
    assumptions: list[str] = field(default_factory=list)
    cache_mb: float | None = None  # weights up to this size stay cached between inferences
    dram_bandwidth_gbs: float | None = None  # where weights are read from when they do not fit
    stream_efficiency: dict[str, float] = field(default_factory=dict)

    def efficiency(self, op_class: str) -> float:
        return self.compute_efficiency.get(op_class, self.compute_efficiency["default"])

    def stream(self, op_class: str) -> float:
        """The fraction of memory_bandwidth_gbs a memory-bound kernel of `op_class` reaches."""
        return self.stream_efficiency.get(op_class, self.bandwidth_efficiency)


def _common_notes(unit: DeviceUnit, key: str) -> list[str]:
    effs = ", ".join(f"{k} {v:g}" for k, v in sorted(unit.compute_efficiency.items()))
    return [f"{key}.compute_efficiency: {effs} (fraction of peak per op class)",
            f"{key}.bandwidth_efficiency = {unit.bandwidth_efficiency:g}"
            + (" (stream_efficiency: " + ", ".join(f"{k} {v:g}" for k, v in sorted(unit.stream_efficiency.items())) + ")"
               if unit.stream_efficiency else ""),
            f"{key}.layer_overhead_us = {unit.layer_overhead_us:g} per executed node"]


def _host_scale(device: DeviceModel, host: HostCpu | None) -> tuple[int, float, HostCpu | None, list[str]]:
    """(cores, clock in Hz, the host read if any, notes) for a host_relative device."""
    if device.cores is not None and device.clock_mhz is not None:
        return device.cores, device.clock_mhz * 1e6, host, [f"cores = {device.cores} ([device] cores)",
                                                           f"clock = {device.clock_mhz:.0f} MHz ([device] clock_mhz)"]
    host = host or read_host_cpu()
    cores, cores_from = (device.cores, "[device] cores") if device.cores else (host.cores, host.cores_source)
    clock_mhz, clock_from = ((device.clock_mhz, "[device] clock_mhz") if device.clock_mhz
                             else (host.clock_mhz, host.clock_source))
    return cores, clock_mhz * 1e6, host, [f"cores = {cores} ({cores_from})", f"clock = {clock_mhz:.0f} MHz ({clock_from})"]


def _host_relative(device: DeviceModel, host: HostCpu | None) -> tuple[dict[str, float], float, tuple[int, float], HostCpu | None, list[str]]:
    """Peaks and cache bandwidth of a host_relative device: per-core-per-cycle figures x cores x clock."""
    assert device.peak_ops_per_cycle_per_core is not None
    cores, hz, host, notes = _host_scale(device, host)
    peaks = {p: ops * cores * hz / 1e12 for p, ops in device.peak_ops_per_cycle_per_core.items()}
    for p, ops in sorted(device.peak_ops_per_cycle_per_core.items()):
        notes.append(f"[device] peak_ops_per_cycle_per_core.{p} = {ops:g} -> peak {peaks[p]:.3g} TOPS "
                     f"({ops:g} x {cores} cores x {hz / 1e6:.0f} MHz)")
    if device.memory_bandwidth_bytes_per_cycle_per_core is not None:
        bw = device.memory_bandwidth_bytes_per_cycle_per_core * cores * hz / 1e9
        notes.append(f"[device] memory_bandwidth_bytes_per_cycle_per_core = "
                     f"{device.memory_bandwidth_bytes_per_cycle_per_core:g} -> {bw:.3g} GB/s")
    else:
        bw = float(device.memory_bandwidth_gbs)  # type: ignore[arg-type]
        notes.append(f"[device] memory_bandwidth_gbs = {bw:g}")
    return peaks, bw, (cores, hz), host, notes


def _cache_tier(device: DeviceModel, scale: tuple[int, float] | None, host: HostCpu | None) -> tuple[float | None, float | None, list[str]]:
    """(cache_mb, DRAM GB/s, notes): where weights that do not fit the cache are read from."""
    if device.dram_bandwidth_gbs is None and device.dram_bandwidth_bytes_per_cycle_per_core is None:
        return None, None, []
    if device.dram_bandwidth_gbs is not None:
        dram, notes = device.dram_bandwidth_gbs, [f"[device] dram_bandwidth_gbs = {device.dram_bandwidth_gbs:g}"]
    else:
        assert scale is not None and device.dram_bandwidth_bytes_per_cycle_per_core is not None
        dram = device.dram_bandwidth_bytes_per_cycle_per_core * scale[0] * scale[1] / 1e9
        notes = [f"[device] dram_bandwidth_bytes_per_cycle_per_core = {device.dram_bandwidth_bytes_per_cycle_per_core:g} "
                 f"-> {dram:.3g} GB/s"]
    if device.cache_mb is not None:
        return device.cache_mb, dram, [*notes, f"[device] cache_mb = {device.cache_mb:g}"]
    if device.host_relative:
        host = host or read_host_cpu()
        if host.cache_mb is not None:
            return host.cache_mb, dram, [*notes, f"cache = {host.cache_mb:g} MB ({host.cache_source})"]
    return None, None, [*notes, "no cache size known ([device] cache_mb): every weight read at the cache bandwidth"]


def resolve(device: DeviceModel, host: HostCpu | None = None) -> Resolved:
    """The accelerator's absolute figures. host_relative devices read this host (or `host`, or the
    device's own `cores`/`clock_mhz`/`cache_mb`) and scale the per-core-per-cycle figures by cores x clock."""
    scale = None
    if device.host_relative:
        peaks, bw, scale, host, notes = _host_relative(device, host)
    else:
        assert device.peak_tops is not None and device.memory_bandwidth_gbs is not None
        peaks, bw = dict(device.peak_tops), device.memory_bandwidth_gbs
        notes = [f"[device] peak_tops.{p} = {v:g}" for p, v in sorted(peaks.items())]
        notes.append(f"[device] memory_bandwidth_gbs = {bw:g}")
    cache_mb, dram, cache_notes = _cache_tier(device, scale, host)
    notes += cache_notes + _common_notes(device, "[device]")
    return Resolved(device.name, peaks, bw, dict(device.compute_efficiency), device.bandwidth_efficiency,
                    device.layer_overhead_us, 0.0, notes, cache_mb, dram, dict(device.stream_efficiency))


def resolve_fallback(fallback: FallbackModel) -> Resolved:
    notes = [f"[device.fallback] peak_tops.{p} = {v:g}" for p, v in sorted(fallback.peak_tops.items())]
    notes.append(f"[device.fallback] memory_bandwidth_gbs = {fallback.memory_bandwidth_gbs:g}")
    notes += _common_notes(fallback, "[device.fallback]")
    notes.append(f"[device.fallback] switch_overhead_us = {fallback.switch_overhead_us:g} per transition")
    return Resolved(fallback.name, dict(fallback.peak_tops), fallback.memory_bandwidth_gbs,
                    dict(fallback.compute_efficiency), fallback.bandwidth_efficiency, fallback.layer_overhead_us,
                    fallback.switch_overhead_us, notes, stream_efficiency=dict(fallback.stream_efficiency))
