"""Hostile file and folder names (`;`, `$(...)`, backticks, quotes, newlines) never run a command on
the device side: fake `ssh`, `scp` and `adb` executables on PATH record their argv and then do what the
real ones do (ssh and `adb shell` join the remote words with spaces into one line for the device's
`sh -c`), and the local:// transport runs for real. Every argv element must arrive intact and no
marker file may appear."""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from test_remote_bench import make_build

from edgekd.remote.bench import bench_on_device
from edgekd.remote.transports import parse_device

FAKE = """#!{python}
import json, os, shutil, subprocess, sys
with open(os.environ["FAKE_DEVICE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv) + "\\n")
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
if tool == "ssh":  # ssh [options] -- DEST WORDS...: sshd joins WORDS with spaces for the login shell
    words = args[args.index("--") + 2:]
    sys.exit(subprocess.run(["sh", "-c", " ".join(words)]).returncode)
if tool == "scp":  # scp -r [options] -- SOURCE TARGET, one side HOST:PATH
    source, target = (a.split(":", 1)[1] if ":" in a and not a.startswith("/") else a for a in args[args.index("--") + 1:])
    copy = shutil.copytree if os.path.isdir(source) else shutil.copy
    copy(source, os.path.join(target, os.path.basename(source)) if target.endswith("/") else target)
    sys.exit(0)
serial_free = args[2:]  # adb -s SERIAL COMMAND ...
if serial_free[0] == "shell":  # adb shell joins its words with spaces, like ssh
    sys.exit(subprocess.run(["sh", "-c", " ".join(serial_free[1:])]).returncode)
if serial_free[0] in ("push", "pull"):
    source, target = serial_free[1:]
    copy = shutil.copytree if os.path.isdir(source) else shutil.copy
    copy(source, os.path.join(target, os.path.basename(source)) if target.endswith("/") else target)
    sys.exit(0)
sys.exit(2)
"""


def hostile_words(marker: Path) -> list[str]:
    return [f"x; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", f"a\ntouch {marker}", f"a' ; touch {marker}; '",
            f'" ; touch {marker}; "', f"a && touch {marker}", f"a | touch {marker}", "", "  spaced  ", "*", "$HOME", "-rf"]


RECORD = "import json, sys; json.dump(sys.argv[1:], open('args.json', 'w'))"


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ssh, scp and adb on PATH as recorders; returns their log (one JSON argv per line)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ssh", "scp", "adb"):
        path = bindir / tool
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "argv.log"
    monkeypatch.setenv("FAKE_DEVICE_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def run_hostile(url: str, tmp_path: Path, device_root: Path | None = None) -> tuple[list[str], Path]:
    """Run RECORD with hostile arguments in the device's work folder `/work` (a local:// device's
    `device_root/work`) or, over the fakes, this host's tmp_path/work."""
    marker = tmp_path / "pwned"
    remote = "/work" if device_root else str(tmp_path / "work")
    work = device_root / "work" if device_root else tmp_path / "work"
    work.mkdir()
    words = hostile_words(marker)
    proc = parse_device(url).run([sys.executable, "-c", RECORD, *words], cwd=remote)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((work / "args.json").read_text()) == words  # every argument intact
    assert not marker.exists()
    return words, marker


def test_ssh_run_keeps_hostile_arguments_as_arguments(fakes: Path, tmp_path: Path) -> None:
    run_hostile("ssh://me@device", tmp_path)
    argv = json.loads(fakes.read_text().splitlines()[-1])
    assert argv[0].endswith("ssh") and "--" in argv and "me@device" in argv


def test_adb_shell_keeps_hostile_arguments_as_arguments(fakes: Path, tmp_path: Path) -> None:
    run_hostile("adb://emulator-5554", tmp_path)
    argv = json.loads(fakes.read_text().splitlines()[-1])
    assert argv[1:4] == ["-s", "emulator-5554", "shell"]


@pytest.mark.parametrize("url", ["ssh://device", "adb://SERIAL1"])
def test_pushing_and_pulling_a_hostile_file_name(fakes: Path, tmp_path: Path, url: str) -> None:
    marker = tmp_path / "pwned"
    name = f"model; touch {marker} $(touch {marker})`touch {marker}`.onnx".replace("/", "_")
    local = tmp_path / "out" / name
    local.parent.mkdir()
    local.write_bytes(b"onnx")
    remote = tmp_path / "remote"
    transport = parse_device(url)
    transport.push(local, str(remote))
    assert (remote / name).read_bytes() == b"onnx"
    assert not marker.exists()
    logged = [json.loads(line) for line in fakes.read_text().splitlines()]
    assert any(str(local) in argv for argv in logged)  # the name travelled as one argv element


def test_local_device_with_hostile_names(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    device = tmp_path / f"dev; touch {marker} $(touch {marker})".replace("/", "_")
    device.mkdir()
    run_hostile(f"local://{device}", tmp_path, device)
    transport = parse_device(f"local://{device}")
    local = tmp_path / f"`touch {marker}`\n.bin".replace("/", "_")
    local.write_bytes(b"x")
    transport.push(local, "/tmp/w")
    transport.pull(f"/tmp/w/{local.name}", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == b"x" and not marker.exists()


def test_bench_of_a_hostile_build_folder_on_a_hostile_device_folder(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = f"x; touch {marker} $(touch {marker}) `touch {marker}`".replace("/", "_")
    build = make_build(tmp_path / f"build {evil}")
    device = tmp_path / f"device {evil}"
    device.mkdir()
    result = bench_on_device(build, f"local://{device}", runs=3)
    assert result["latency"]["runs"] == 3 and not marker.exists()
    assert not any(p.name == "pwned" for p in tmp_path.rglob("*"))
    shutil.rmtree(device)
