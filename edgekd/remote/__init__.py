"""Devices edgekd can reach (ssh, adb, a local folder) and latency measured on them.

`parse_device(url)` gives a Transport; `bench_on_device(build_dir, url)` runs a build's bundle there
with edgekd/deploy/run_on_device.py and returns the device's own result.
"""
from __future__ import annotations

from edgekd.remote.bench import RESULT_FILE, bench_on_device
from edgekd.remote.transports import (
    AdbTransport,
    DeviceError,
    LocalTransport,
    SshTransport,
    Transport,
    parse_device,
)

__all__ = ["RESULT_FILE", "AdbTransport", "DeviceError", "LocalTransport", "SshTransport", "Transport", "bench_on_device", "parse_device"]
