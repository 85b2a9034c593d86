"""edgekd.common.blame: the user's code and paths are user errors (exit 2); edgekd's own are bugs."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edgekd.common.blame import UserCodeError, from_os_error, user_code
from edgekd.errors import ConfigError


def _users_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    (tmp_path / "usermod.py").write_text("def explode():\n    raise ZeroDivisionError('my bug')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("usermod")


def test_an_exception_from_the_users_code_names_what_raised_and_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _users_module(tmp_path, monkeypatch)
    with pytest.raises(UserCodeError) as info:
        with user_code("p.toml: key 'teacher.factory' = 'usermod:explode'"):
            mod.explode()
    text = info.value.one_line()
    assert text.startswith("p.toml: key 'teacher.factory' = 'usermod:explode' raised ZeroDivisionError: my bug")
    assert f"{tmp_path / 'usermod.py'}:2 in explode" in text and info.value.exit_code == 2
    assert "usermod.py" in info.value.frames[-1] and not any("/edgekd/" in f for f in info.value.frames)


def test_edgekd_errors_pass_through_user_code_unchanged() -> None:
    with pytest.raises(ConfigError, match="as it was"):
        with user_code("anything"):
            raise ConfigError("as it was")


def test_blame_tells_the_users_exceptions_from_edgekds_bugs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Through the CLI's entry point: a bug in edgekd's code (frames only in the package, the standard
    library and installed packages) is exit 70 with its traceback; the same exception from the user's
    code is exit 2, one line."""
    from edgekd import api
    from edgekd.cli.main import main
    from edgekd.common.blame import PACKAGE_DIR

    ours: dict = {}
    exec(compile("def bug(*args, **kwargs):\n    raise KeyError('an edgekd bug')\n", str(PACKAGE_DIR / "api.py"), "exec"), ours)
    monkeypatch.setattr(api, "list_configs", ours["bug"])
    assert main(["targets"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error" in err
    mod = _users_module(tmp_path, monkeypatch)
    monkeypatch.setattr(api, "list_configs", lambda *a: mod.explode())
    assert main(["targets"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "ZeroDivisionError: my bug" in err and "usermod.py:2" in err


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"), (errno.EROFS, "read-only"),
                                         (errno.ENAMETOOLONG, "file name too long"), (errno.ENOSPC, "no space left")])
def test_os_errors_on_paths_are_user_errors_naming_the_path(code: int, words: str) -> None:
    import os

    mapped = from_os_error(OSError(code, os.strerror(code), "/data/out/report.json"))
    assert mapped is not None and mapped.exit_code == 2
    assert "/data/out/report.json" in str(mapped) and words in str(mapped) and mapped.hint


def test_other_os_errors_are_not_blamed_on_the_user() -> None:
    assert from_os_error(OSError(errno.EBADF, "Bad file descriptor")) is None
