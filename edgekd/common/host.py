"""Limits of this host that settings a user gives must respect: thread counts are bounded by the
cores this process may use (os.sched_getaffinity, else os.cpu_count): `--threads 10000` would start
thousands of threads that fight over a few cores for minutes, and measure nothing useful."""
from __future__ import annotations

from edgekd.common.toolchain import usable_cores
from edgekd.errors import ConfigError


def check_threads(n: int, what: str) -> int:
    """`n` if it is a thread count this host can run (0: every usable core); else ConfigError
    (exit 2) naming `what` and the core count."""
    cores = usable_cores()
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"{what} = {n!r}: a thread count is a whole number >= 0", f"give 1 to {cores} (0: every usable core)")
    if n > cores:
        raise ConfigError(f"{what} = {n}: more threads than the {cores} core(s) this process may use on this host",
                          f"give at most {cores} (0: every usable core)")
    return n
