"""One runtime's tuning candidates in a child process of the timing worker (edgekd.perf.interleaved):
the child opens and warms up its runners once, then times one candidate per command, so candidates of
different runtimes never share a process while the rounds stay interleaved.

Protocol (JSON lines): the parent writes the setup {"candidates", "feeds", "warmup_runs"} on the
child's stdin, then {"time": index, "runs": n} per block, {"feeds": path, "warmup_runs": n} to time
on another feed from then on (the same open runners, warmed up on it), and {"quit": true} at the end;
the child answers each line on stdout, prefixed with REPLY ({"ready": true}, then {"samples_ms": [...]},
or {"error": "..."}), so anything a runtime prints to stdout is skipped."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.runners import ONNXRUNTIME, open_runner, settings_from
from edgekd.perf.timing import time_runs

REPLY = "@@edgekd-group "


def first_rows(feeds: str) -> dict[str, np.ndarray]:
    """The first sample of every input in a feeds .npz (samples on axis 0)."""
    with np.load(Path(feeds), allow_pickle=False) as archive:
        return {name: archive[name][:1] for name in archive.files}


class LocalGroup:
    """Candidates of one runtime opened in this process."""

    def __init__(self, candidates: list[dict[str, Any]], feed: Mapping[str, np.ndarray], warmup: int) -> None:
        self.runners = [open_runner(c.get("runtime", ONNXRUNTIME), Path(c["model"]), settings_from(c.get("runtime", ONNXRUNTIME), c["session"]))
                        for c in candidates]
        self._warm(feed, warmup)

    def use(self, feeds: str, warmup: int) -> None:
        """Time on the first sample of the feeds file `feeds` from now on, each runner warmed up on it
        first (opening a session costs far more than a run: a decoder's prompt pass reuses the sessions
        its decode step was timed on)."""
        self._warm(first_rows(feeds), warmup)

    def _warm(self, feed: Mapping[str, np.ndarray], warmup: int) -> None:
        self.feed = feed
        for runner in self.runners:
            for _ in range(warmup):
                runner.run(feed)

    def time(self, index: int, runs: int) -> list[float]:
        runner = self.runners[index]
        return time_runs(lambda: runner.run(self.feed), runs)

    def close(self) -> None:
        self.runners.clear()


class ChildGroup:
    """Parent side: the child process and its command pipe (the same `time`/`close` as LocalGroup)."""

    def __init__(self, candidates: list[dict[str, Any]], feeds: str, warmup: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekd.perf.runtime_group"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        try:
            self._ask({"candidates": candidates, "feeds": feeds, "warmup_runs": warmup})
        except RuntimeError:
            self.close()
            raise

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                reply = json.loads(line[len(REPLY):])
                if "error" in reply:
                    raise RuntimeError(f"timing child process: {reply['error']}")
                return reply
        raise RuntimeError(f"timing child process exited {self.proc.wait()} without answering")

    def time(self, index: int, runs: int) -> list[float]:
        return list(self._ask({"time": index, "runs": runs})["samples_ms"])

    def use(self, feeds: str, warmup: int) -> None:
        self._ask({"feeds": feeds, "warmup_runs": warmup})

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):  # the child has gone (its stdin closed)
                pass
            self.proc.wait()


def _reply(message: dict[str, Any]) -> None:
    print(REPLY + json.dumps(message), flush=True)


def main() -> None:
    """Child side: set up from the first stdin line, then answer timing commands until "quit"."""
    setup = json.loads(sys.stdin.readline())
    try:
        group = LocalGroup(setup["candidates"], first_rows(setup["feeds"]), setup["warmup_runs"])
    except Exception as e:  # the parent raises it with the message: a candidate the runtime cannot open
        _reply({"error": f"{type(e).__name__}: {e}"})
        return
    _reply({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("quit"):
            break
        if "feeds" in command:
            group.use(command["feeds"], int(command["warmup_runs"]))
            _reply({"ready": True})
            continue
        _reply({"samples_ms": group.time(int(command["time"]), int(command["runs"]))})


if __name__ == "__main__":
    main()
