"""How edgekd reaches a device: `parse_device(url)` gives a Transport for `ssh://user@host[:port]`,
`adb://SERIAL` or `local://PATH` (an existing folder on this host standing in for a device).

Every command is an argv list run without a shell on this host. ssh and `adb shell` are the
exception we cannot avoid: both JOIN their remote-command arguments with spaces into ONE line that
the device's shell parses. So the remote command is passed as separate argv elements, each one
through `shlex.quote`, and the device's shell splits the line back into exactly those arguments.
Never build that line by pasting strings together.

Remote paths (work folders, files to pull) must be plain (letters, digits, `_ . / @ + -`): scp
passes them through the remote shell in its legacy mode and literally in SFTP mode, so no quoting
suits both; edgekd's own work folders (`/tmp/edgekd-<hex>`) always are.
"""
from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import urlsplit

from edgekd.errors import ConfigError, EdgekdError, ToolchainMissing

FORMS = "use ssh://user@host[:port], adb://SERIAL (as `adb devices` lists it) or local://PATH"
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$|^[0-9A-Fa-f:.]+$")  # a name, IPv4, or IPv6 without brackets
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_REMOTE_PATH = re.compile(r"^[A-Za-z0-9_./@+][A-Za-z0-9_./@+-]*$")
_SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]  # never prompt for a password: fail instead


class DeviceError(EdgekdError):
    """Reaching the device, copying to or from it, or running on it failed."""


def remote_command(argv: list[str], cwd: str) -> list[str]:
    """The argv elements that ssh / adb shell join into the device's command line:
    `cd CWD && ARGV...`, every user-supplied part through shlex.quote."""
    return ["cd", shlex.quote(cwd), "&&", *(shlex.quote(arg) for arg in argv)]


def check_remote_path(path: str) -> str:
    if not _REMOTE_PATH.match(path):
        raise DeviceError(f"remote path {path!r} has characters edgekd does not send to a device",
                          hint="use letters, digits and _ . / @ + - only")
    return path


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolchainMissing(f"'{name}' is not on PATH; edgekd needs it to reach the device", hint)
    return found


def _call(argv: list[str], what: str, hint: str) -> subprocess.CompletedProcess[str]:
    """Run a transfer step (argv list, no shell); a non-zero exit is a DeviceError naming the step."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise DeviceError(f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}", hint)
    return proc


class Transport(ABC):
    """A device edgekd can copy files to, run a command on, and copy files back from."""

    work_root: str = "/tmp"  # where work folders go on the device

    @abstractmethod
    def push(self, local: Path, remote_dir: str) -> None:
        """Copy a file or folder to `remote_dir/<its name>` (remote_dir is created)."""

    @abstractmethod
    def run(self, argv: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
        """Run argv in `cwd` on the device; stdout/stderr captured as text; never raises on exit code."""

    @abstractmethod
    def pull(self, remote_file: str, local: Path) -> None:
        """Copy one file from the device to `local`."""

    @abstractmethod
    def describe(self) -> str:
        """Which device this is, as a report says it."""


class SshTransport(Transport):
    def __init__(self, host: str, user: str | None = None, port: int | None = None) -> None:
        self.host, self.user, self.port = host, user, port

    def _dest(self, bracket_ipv6: bool = False) -> str:
        host = f"[{self.host}]" if bracket_ipv6 and ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host

    def _hint(self) -> str:
        port = f"-p {self.port} " if self.port else ""
        return f"check that `ssh {port}{self._dest()} true` works without a password prompt (keys or ssh-agent)"

    def _ssh(self, argv: list[str], cwd: str | None = None) -> list[str]:
        ssh = _tool("ssh", "install an OpenSSH client (Debian: apt-get install openssh-client)")
        port = ["-p", str(self.port)] if self.port else []
        remote = remote_command(argv, cwd) if cwd is not None else [shlex.quote(arg) for arg in argv]
        return [ssh, *port, *_SSH_OPTIONS, "--", self._dest(), *remote]

    def _scp(self, source: str, target: str) -> list[str]:
        scp = _tool("scp", "install an OpenSSH client (Debian: apt-get install openssh-client)")
        port = ["-P", str(self.port)] if self.port else []  # scp's port flag is -P (-p preserves times)
        return [scp, "-r", *port, *_SSH_OPTIONS, "--", source, target]

    def push(self, local: Path, remote_dir: str) -> None:
        check_remote_path(remote_dir)
        _call(self._ssh(["mkdir", "-p", "--", remote_dir]), f"creating {remote_dir} on {self.describe()}", self._hint())
        _call(self._scp(str(local), f"{self._dest(True)}:{remote_dir}/"), f"copying {local} to {self.describe()}", self._hint())

    def run(self, argv: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
        check_remote_path(cwd)
        return subprocess.run(self._ssh(argv, cwd), capture_output=True, text=True, check=False)

    def pull(self, remote_file: str, local: Path) -> None:
        check_remote_path(remote_file)
        _call(self._scp(f"{self._dest(True)}:{remote_file}", str(local)), f"copying {remote_file} from {self.describe()}", self._hint())

    def describe(self) -> str:
        return f"ssh {self._dest()}" + (f" port {self.port}" if self.port else "")


class AdbTransport(Transport):
    work_root = "/data/local/tmp"  # Android has no /tmp; this is the shell user's writable folder

    def __init__(self, serial: str) -> None:
        self.serial = serial

    def _adb(self, *args: str) -> list[str]:
        adb = _tool("adb", "install Android platform-tools (Debian: apt-get install adb) and put adb on PATH")
        return [adb, "-s", self.serial, *args]

    def _hint(self) -> str:
        return f"check that `adb devices` lists {self.serial} as 'device' (connected, authorized)"

    def push(self, local: Path, remote_dir: str) -> None:
        check_remote_path(remote_dir)
        _call(self._adb("shell", "mkdir", "-p", shlex.quote(remote_dir)), f"creating {remote_dir} on {self.describe()}", self._hint())
        _call(self._adb("push", str(local), f"{remote_dir}/"), f"copying {local} to {self.describe()}", self._hint())

    def run(self, argv: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
        # Exit codes come back with adb's shell protocol v2 (Android 7+); older devices always give 0,
        # which is why callers also validate what the command wrote.
        check_remote_path(cwd)
        return subprocess.run(self._adb("shell", *remote_command(argv, cwd)), capture_output=True, text=True, check=False)

    def pull(self, remote_file: str, local: Path) -> None:
        check_remote_path(remote_file)
        _call(self._adb("pull", remote_file, str(local)), f"copying {remote_file} from {self.describe()}", self._hint())

    def describe(self) -> str:
        return f"adb device {self.serial}"


class LocalTransport(Transport):
    """A folder on this host standing in for a device's file system: remote path /tmp/x is
    ROOT/tmp/x. Commands run on this host, with this Python for `python3`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _map(self, remote: str) -> Path:
        path = (self.root / remote.lstrip("/")).resolve()
        if path != self.root.resolve() and self.root.resolve() not in path.parents:
            raise DeviceError(f"remote path {remote!r} leaves the local device folder {self.root}")
        return path

    def push(self, local: Path, remote_dir: str) -> None:
        target = self._map(remote_dir)
        target.mkdir(parents=True, exist_ok=True)
        if local.is_dir():
            shutil.copytree(local, target / local.name, dirs_exist_ok=True)
        else:
            shutil.copy2(local, target / local.name)

    def run(self, argv: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable if i == 0 and arg == "python3" else arg for i, arg in enumerate(argv)]
        return subprocess.run(argv, cwd=self._map(cwd), capture_output=True, text=True, check=False)

    def pull(self, remote_file: str, local: Path) -> None:
        source = self._map(remote_file)
        if not source.is_file():
            raise DeviceError(f"{remote_file} not found on {self.describe()}")
        shutil.copyfile(source, local)

    def describe(self) -> str:
        return f"this host ({socket.gethostname()}) in local folder {self.root}"


def parse_device(url: str) -> Transport:
    """`ssh://user@host[:port]`, `adb://SERIAL` or `local://PATH` -> its Transport; else ConfigError."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ConfigError(f"device {url!r} is not a device URL", FORMS)
    if scheme == "ssh":
        return _parse_ssh(url)
    if scheme == "adb":
        if not _SERIAL.match(rest):
            raise ConfigError(f"device {url!r}: {rest!r} is not an adb serial", FORMS)
        return AdbTransport(rest)
    if scheme == "local":
        root = Path(rest).expanduser().absolute()
        if not root.is_dir():  # never created: a typo must not leave a folder behind
            raise ConfigError(f"device {url!r}: folder {root} does not exist", "create it (mkdir -p) or give an existing folder")
        return LocalTransport(root)
    raise ConfigError(f"device {url!r}: unknown scheme '{scheme}'", FORMS)


def _parse_ssh(url: str) -> SshTransport:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"device {url!r}: bad port ({exc})", FORMS) from exc
    host, user = parts.hostname, parts.username
    if parts.password is not None:
        raise ConfigError(f"device {url!r}: passwords in device URLs are not supported", "use ssh keys or ssh-agent")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"device {url!r}: an ssh device URL has no path, query or fragment", FORMS)
    if not host or not _HOST.match(host):
        raise ConfigError(f"device {url!r}: {host!r} is not a host name or address", FORMS)
    if user is not None and not _USER.match(user):
        raise ConfigError(f"device {url!r}: {user!r} is not a user name", FORMS)
    if port == 0:
        raise ConfigError(f"device {url!r}: port 0 is not a port", FORMS)
    return SshTransport(host, user, port)
