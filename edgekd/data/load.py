"""The project's [data] section as a DataSource.

`factory` names a function ('package.module:function', called with `args`) that returns one of:
edgekd.data.Splits (in-memory numpy; checked as today) -> SplitsSource; a mapping
{"train", "calib", "test"} of torch Datasets / IterableDatasets -> TorchSource; a DataSource -> itself.
`files` names local data files per split, read by HFFilesSource. torch and `datasets` are imported
only by the source that needs them.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from edgekd.common.factories import call
from edgekd.config.models import DataConfig
from edgekd.data.sources import DEFAULT_SHUFFLE_BUFFER, SPLITS, DataSource, SplitsSource
from edgekd.data.splits import Splits, check_splits
from edgekd.errors import ConfigError, DataError

RETURNS_HINT = ("return edgekd.data.Splits, a mapping {'train', 'calib', 'test'} of torch Datasets, "
                "or an edgekd.data.sources.DataSource")


def as_source(value: object, source: str, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> DataSource:
    """What a factory returned, as a DataSource; anything else is a DataError naming `source`."""
    if isinstance(value, DataSource):
        return value
    if isinstance(value, Splits):
        return SplitsSource(check_splits(value, source))
    if isinstance(value, Mapping):
        from edgekd.data.torch_source import (
            TorchSource,  # torch only for torch datasets
        )

        return TorchSource(value, source=source, shuffle_buffer=shuffle_buffer)
    raise DataError(f"{source} returned {type(value).__name__}, not data edgekd can stream", RETURNS_HINT)


def resolve_path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def open_files(cfg: DataConfig, base_dir: Path) -> DataSource:
    """HFFilesSource from [data] files (paths relative to `base_dir`)."""
    from edgekd.data.hf_files import (  # `datasets` only for files
        FileSettings,
        HFFilesSource,
    )

    if cfg.files is None or cfg.tokenizer is None:
        raise ConfigError("[data] files need 'files' and 'tokenizer'", "give data.files for train, calib and test, and data.tokenizer")
    files = {}
    for split in SPLITS:
        names = cfg.files[split]  # type: ignore[index]  # keys are checked by DataConfig
        files[split] = tuple(resolve_path(name, base_dir) for name in ([names] if isinstance(names, str) else names))
    settings = FileSettings(
        files=files, tokenizer=resolve_path(cfg.tokenizer, base_dir), format=cfg.format, text_column=cfg.text_column,
        label_column=cfg.label_column, labels=tuple(cfg.labels) if cfg.labels else None, max_length=cfg.max_length,
        shuffle_buffer=cfg.shuffle_buffer, teacher_text_column=cfg.teacher_text_column, teacher_max_length=cfg.teacher_max_length,
    )
    return HFFilesSource(settings)


def open_source(cfg: DataConfig, base_dir: Path, source: str = "the project") -> DataSource:
    """The DataSource the [data] config describes: `files` (relative to `base_dir`, the project
    file's folder) or what `factory` returns; errors name `source` (the project file)."""
    if cfg.files is not None:
        return open_files(cfg, base_dir)
    if cfg.factory is None:
        raise ConfigError("[data] has neither 'factory' nor 'files'", "give exactly one of them")
    value = call(cfg.factory, cfg.args, "data.factory", source)
    return as_source(value, f"{source}: data.factory '{cfg.factory}'", cfg.shuffle_buffer)
