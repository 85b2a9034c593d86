"""Resolve the `"package.module:function"` strings that projects use to name their code."""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from edgekd.common.blame import user_code
from edgekd.errors import ConfigError


def resolve(spec: str, key: str, source: str) -> Callable[..., Any]:
    """The callable `spec` names; errors name the config `key` in `source` (a file)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{source}: key '{key}' = '{spec}': cannot import module '{module_name}' ({exc})",
            "make the module importable (installed, or on PYTHONPATH)",
        ) from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError(f"{source}: key '{key}' = '{spec}': module '{module_name}' has no callable '{attr}'", "check the function name after ':'")
    return func


def call(spec: str, args: dict[str, Any], key: str, source: str, defaults: dict[str, Any] | None = None) -> Any:
    """Call the factory with the config's args; args that do not fit its signature are a user
    error, and so is anything raised inside the factory (edgekd.common.blame: exit 2 naming the
    factory, its own traceback frames under --verbose). `defaults` fill the factory's
    parameters of those names that the args leave out (e.g. a task's num_classes, vocab_size)."""
    func = resolve(spec, key, source)
    params = inspect.signature(func).parameters
    args = {**{k: v for k, v in (defaults or {}).items() if k in params and k not in args}, **args}
    try:
        inspect.signature(func).bind(**args)
    except TypeError as exc:
        raise ConfigError(f"{source}: key '{key}' = '{spec}' rejected its args {args} ({exc})", f"fix [{key.rsplit('.', 1)[0]}.args]") from None
    with user_code(f"{source}: key '{key}' = '{spec}'"):
        return func(**args)
