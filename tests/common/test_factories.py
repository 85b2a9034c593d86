"""edgekd/common/factories.py: resolving and calling "package.module:function" specs."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

from edgekd.common.factories import call, resolve
from edgekd.errors import ConfigError

SOURCE = "/proj/edgekd.toml"

MODULE = '''
NOT_CALLABLE = 3

def make(width, depth=2):
    return ("made", width, depth)

def buggy(width):
    return len(width)  # TypeError for an int: a bug inside the factory
'''


@pytest.fixture
def factories_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "edgekd_test_user_factories"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_resolve_returns_the_named_callable() -> None:
    from edgekd.examples import digits

    assert resolve("edgekd.examples.digits:load", "data.factory", SOURCE) is digits.load


def test_resolve_missing_module_names_source_key_and_module() -> None:
    with pytest.raises(ConfigError) as info:
        resolve("no_such_pkg_xyz.models:net", "student.factory", SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}: key 'student.factory' = 'no_such_pkg_xyz.models:net'")
    assert "cannot import module 'no_such_pkg_xyz.models'" in message
    assert "PYTHONPATH" in (info.value.hint or "")


def test_resolve_missing_function() -> None:
    with pytest.raises(ConfigError) as info:
        resolve("edgekd.examples.digits:nope", "teacher.factory", SOURCE)
    assert "key 'teacher.factory'" in str(info.value)
    assert "module 'edgekd.examples.digits' has no callable 'nope'" in str(info.value)


def test_resolve_attribute_that_is_not_callable(factories_module: str) -> None:
    with pytest.raises(ConfigError, match="has no callable 'NOT_CALLABLE'"):
        resolve(f"{factories_module}:NOT_CALLABLE", "data.factory", SOURCE)


def test_resolve_user_module_on_path(factories_module: str) -> None:
    func = resolve(f"{factories_module}:make", "student.factory", SOURCE)
    assert func(1) == ("made", 1, 2)


def test_call_passes_args_as_keywords(factories_module: str) -> None:
    assert call(f"{factories_module}:make", {"width": 4, "depth": 7}, "student.factory", SOURCE) == ("made", 4, 7)
    assert call(f"{factories_module}:make", {"width": 4}, "student.factory", SOURCE) == ("made", 4, 2)


def test_call_fills_parameters_the_args_leave_out_from_defaults(factories_module: str) -> None:
    """A task's dims (e.g. num_classes) reach factories that take them; args win; defaults the
    factory does not take are not passed."""
    spec = f"{factories_module}:make"
    assert call(spec, {}, "student.factory", SOURCE, defaults={"width": 5, "num_classes": 10}) == ("made", 5, 2)
    assert call(spec, {"width": 4}, "student.factory", SOURCE, defaults={"width": 5, "depth": 3}) == ("made", 4, 3)


@pytest.mark.parametrize("args", [{"widht": 4}, {}, {"width": 4, "extra": 1}])
def test_call_with_wrong_args_is_config_error(factories_module: str, args: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        call(f"{factories_module}:make", args, "student.factory", SOURCE)
    assert f"{SOURCE}: key 'student.factory' = '{factories_module}:make' rejected its args" in str(info.value)
    assert info.value.hint == "fix [student.args]"


def test_type_error_inside_factory_is_not_blamed_on_args(factories_module: str) -> None:
    """A TypeError raised inside the factory is the factory's (a user error naming it and where it
    raised, its frames kept for --verbose), not a complaint about the args."""
    from edgekd.common.blame import UserCodeError

    with pytest.raises(UserCodeError) as info:
        call(f"{factories_module}:buggy", {"width": 4}, "teacher.factory", SOURCE)
    text = info.value.one_line()
    assert f"key 'teacher.factory' = '{factories_module}:buggy' raised TypeError" in text and "rejected its args" not in text
    assert "\n" not in text and info.value.exit_code == 2 and info.value.frames
