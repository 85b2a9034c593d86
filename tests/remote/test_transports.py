"""edgekd/remote/transports.py: device URLs, the argv lists ssh/scp/adb get (recorded, not run),
and the local folder transport for real."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgekd.errors import ConfigError, ToolchainMissing
from edgekd.remote import transports
from edgekd.remote.transports import (
    AdbTransport,
    DeviceError,
    LocalTransport,
    SshTransport,
    parse_device,
)

NASTY = ["python3", "run_on_device.py", "--bundle", "my bundle", "--out", "x; rm -rf / #", "$(reboot)", "`id`", "a'b\"c", ""]


class Recorder:
    """Stands in for subprocess.run: records argv and keyword arguments, returns `returncode`."""

    def __init__(self, returncode: int = 0, stderr: str = "") -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.returncode, self.stderr = returncode, stderr

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, self.returncode, "", self.stderr)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(transports.subprocess, "run", rec)
    monkeypatch.setattr(transports.shutil, "which", lambda name: f"/usr/bin/{name}")
    return rec


def assert_plain_argv(rec: Recorder) -> None:
    for argv, kwargs in rec.calls:
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert not kwargs.get("shell", False)


# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize("url, host, user, port", [
    ("ssh://nvidia@orin.local:2222", "orin.local", "nvidia", 2222),
    ("ssh://orin", "orin", None, None),
    ("ssh://me@10.0.0.7", "10.0.0.7", "me", None),
    ("ssh://me@[fe80::1]:22", "fe80::1", "me", 22),
    ("ssh://me@host/", "host", "me", None),
])
def test_ssh_urls(url: str, host: str, user: str | None, port: int | None) -> None:
    t = parse_device(url)
    assert isinstance(t, SshTransport) and (t.host, t.user, t.port) == (host, user, port)


@pytest.mark.parametrize("serial", ["emulator-5554", "R58M12ABCDE", "192.168.1.5:5555"])
def test_adb_urls(serial: str) -> None:
    t = parse_device(f"adb://{serial}")
    assert isinstance(t, AdbTransport) and t.serial == serial and t.work_root == "/data/local/tmp"


def test_local_url(tmp_path: Path) -> None:
    (tmp_path / "device").mkdir()
    t = parse_device(f"local://{tmp_path}/device")
    assert isinstance(t, LocalTransport) and t.root == tmp_path / "device"


def test_local_url_of_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder .*nonexistent/dir does not exist") as raised:
        parse_device(f"local://{tmp_path}/nonexistent/dir")
    assert raised.value.exit_code == 2 and not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize("url", [
    "orin", "", "ftp://host", "ssh://", "ssh://me@host:port", "ssh://me@host:70000", "ssh://me@host:0",
    "ssh://me:secret@host", "ssh://me@host/home/me", "ssh://me@host?x=1", "ssh://-oProxyCommand=sh",
    "ssh://-oProxyCommand=sh@host", "ssh://me@ho st", "adb://", "adb://-s", "adb://a b", "local://",
])
def test_bad_urls_are_one_line_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_device(url)
    line = info.value.one_line()
    assert "\n" not in line and "hint:" in line and info.value.exit_code == 2


# ------------------------------------------------------------------ ssh argv


def test_ssh_run_quotes_every_remote_argument(recorder: Recorder) -> None:
    SshTransport("orin.local", "nvidia", 2222).run(NASTY, cwd="/tmp/edgekd-abc")
    assert_plain_argv(recorder)
    (argv, kwargs), = recorder.calls
    assert argv[:8] == ["/usr/bin/ssh", "-p", "2222", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "--"]
    assert argv[8] == "nvidia@orin.local"
    remote = argv[9:]
    assert remote[:3] == ["cd", "/tmp/edgekd-abc", "&&"] and remote[3:] == [shlex.quote(a) for a in NASTY]
    # what the device's shell sees after ssh joins the elements with spaces: the original argv
    assert shlex.split(" ".join(remote)) == ["cd", "/tmp/edgekd-abc", "&&", *NASTY]
    assert kwargs["capture_output"] and kwargs["text"]


def test_ssh_push_and_pull(recorder: Recorder, tmp_path: Path) -> None:
    t = SshTransport("orin", "nvidia", 2222)
    t.push(tmp_path / "bundle", "/tmp/edgekd-abc")
    t.pull("/tmp/edgekd-abc/result.json", tmp_path / "r.json")
    assert_plain_argv(recorder)
    mkdir, push, pull = (argv for argv, _ in recorder.calls)
    assert mkdir[-6:] == ["--", "nvidia@orin", "mkdir", "-p", "--", "/tmp/edgekd-abc"]
    # scp's port flag is -P; -p would mean "preserve times"
    assert push == ["/usr/bin/scp", "-r", "-P", "2222", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "--",
                    str(tmp_path / "bundle"), "nvidia@orin:/tmp/edgekd-abc/"]
    assert pull[-2:] == ["nvidia@orin:/tmp/edgekd-abc/result.json", str(tmp_path / "r.json")]


def test_ssh_without_port_or_user_leaves_them_to_ssh_config(recorder: Recorder) -> None:
    SshTransport("orin").run(["true"], cwd="/tmp")
    argv = recorder.calls[0][0]
    assert "-p" not in argv and argv[argv.index("--") + 1] == "orin"


def test_ssh_ipv6_is_bracketed_for_scp_only(recorder: Recorder, tmp_path: Path) -> None:
    t = parse_device("ssh://me@[fe80::1]")
    t.push(tmp_path, "/tmp/x")
    mkdir, push = (argv for argv, _ in recorder.calls)
    assert "me@fe80::1" in mkdir and push[-1] == "me@[fe80::1]:/tmp/x/"


def test_failed_transfer_is_a_device_error_with_ssh_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(transports.subprocess, "run", Recorder(255, "debug1: x\nssh: connect to host orin port 22: Connection refused\n"))
    monkeypatch.setattr(transports.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(DeviceError, match="exit 255.*Connection refused") as info:
        SshTransport("orin").push(tmp_path, "/tmp/x")
    assert "BatchMode" not in info.value.one_line() and "ssh orin true" in info.value.one_line()


@pytest.mark.parametrize("path", ["/tmp/a b", "/tmp/$(id)", "/tmp/x;y", "-rf", "/tmp/`id`"])
def test_unplain_remote_paths_are_refused(recorder: Recorder, tmp_path: Path, path: str) -> None:
    with pytest.raises(DeviceError):
        SshTransport("orin").push(tmp_path, path)
    with pytest.raises(DeviceError):
        AdbTransport("emulator-5554").pull(path, tmp_path / "r.json")
    assert recorder.calls == []


@pytest.mark.parametrize("url, tool", [("ssh://orin", "ssh"), ("adb://emulator-5554", "adb")])
def test_missing_client_is_toolchain_missing(monkeypatch: pytest.MonkeyPatch, url: str, tool: str) -> None:
    monkeypatch.setattr(transports.shutil, "which", lambda name: None)
    with pytest.raises(ToolchainMissing, match=f"'{tool}' is not on PATH") as info:
        parse_device(url).run(["true"], cwd="/tmp")
    assert info.value.exit_code == 3 and info.value.hint


# ------------------------------------------------------------------ adb argv


def test_adb_argv(recorder: Recorder, tmp_path: Path) -> None:
    t = AdbTransport("192.168.1.5:5555")
    t.push(tmp_path / "bundle", "/data/local/tmp/edgekd-abc")
    t.run(NASTY, cwd="/data/local/tmp/edgekd-abc")
    t.pull("/data/local/tmp/edgekd-abc/result.json", tmp_path / "r.json")
    assert_plain_argv(recorder)
    mkdir, push, run, pull = (argv for argv, _ in recorder.calls)
    base = ["/usr/bin/adb", "-s", "192.168.1.5:5555"]
    assert mkdir == [*base, "shell", "mkdir", "-p", "/data/local/tmp/edgekd-abc"]
    assert push == [*base, "push", str(tmp_path / "bundle"), "/data/local/tmp/edgekd-abc/"]
    assert run[:4] == [*base, "shell"]
    assert run[4:] == ["cd", "/data/local/tmp/edgekd-abc", "&&", *(shlex.quote(a) for a in NASTY)]
    assert shlex.split(" ".join(run[4:]))[3:] == NASTY
    assert pull == [*base, "pull", "/data/local/tmp/edgekd-abc/result.json", str(tmp_path / "r.json")]


# ------------------------------------------------------------------ local folder, for real


def test_local_transport_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "bundle"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    (tmp_path / "tool.py").write_text("print('x')")
    (tmp_path / "device").mkdir()
    t = parse_device(f"local://{tmp_path}/device")
    t.push(src, "/tmp/w")
    t.push(tmp_path / "tool.py", "/tmp/w")
    assert (tmp_path / "device/tmp/w/bundle/sub/a.txt").read_text() == "a"
    proc = t.run(["python3", "-c", "import os, sys; open('out.txt', 'w').write(sys.executable + '|' + os.getcwd())"], cwd="/tmp/w")
    assert proc.returncode == 0, proc.stderr
    t.pull("/tmp/w/out.txt", tmp_path / "out.txt")
    exe, cwd = (tmp_path / "out.txt").read_text().split("|")
    assert exe == sys.executable and Path(cwd) == (tmp_path / "device/tmp/w").resolve()
    assert "this host" in t.describe() and str(tmp_path / "device") in t.describe()


def test_local_transport_stays_inside_its_folder(tmp_path: Path) -> None:
    t = LocalTransport(tmp_path / "device")
    with pytest.raises(DeviceError, match="leaves the local device folder"):
        t.pull("/tmp/../../../etc/passwd", tmp_path / "p")
    with pytest.raises(DeviceError, match="not found"):
        t.pull("/tmp/none.json", tmp_path / "p")
