"""edgekd/data/load.py: open_source picks the source from [data] (factory or files) and checks what a
factory returned; DataConfig's factory-or-files rule (edgekd/config/models.py)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from edgekd.config.models import DataConfig
from edgekd.data.hf_files import HFFilesSource
from edgekd.data.load import as_source, open_source
from edgekd.data.sources import SplitsSource
from edgekd.data.torch_source import TorchSource
from edgekd.errors import ConfigError, DataError
from edgekd.examples.digits import load

MODULE = "edgekd_test_data_factories"
FACTORIES = '''
import numpy as np
import torch
from torch.utils.data import TensorDataset

from edgekd.data.sources import SplitsSource
from edgekd.data.splits import Split, Splits


def split(n, dtype=np.float32):
    return Split(np.zeros((n, 2), dtype), np.arange(n, dtype=np.int64) % 2)


def splits(dtype=np.float32):
    return Splits(split(4, dtype), split(2, dtype), split(3, dtype), num_classes=2)


def torch_sets(n=6):
    make = lambda k: TensorDataset(torch.zeros(k, 2), torch.arange(k) % 2)
    return {"train": make(n), "calib": make(2), "test": make(3)}


SOURCE = SplitsSource(splits())


def source():
    return SOURCE


def wrong():
    return [1, 2, 3]


def bad_mapping():
    return {"train": [1], "calib": [1], "test": [1]}


def bad_splits():
    return splits(np.float64)
'''


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / f"{MODULE}.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return MODULE


def factory(spec: str, **args: Any) -> DataConfig:
    return DataConfig(factory=spec, args=args)


def test_digits_factory_gives_a_splits_source_with_the_same_fingerprint(tmp_path: Path) -> None:
    source = open_source(factory("edgekd.examples.digits:load", seed=0), tmp_path)
    assert isinstance(source, SplitsSource)
    assert source.fingerprint() == load(seed=0).sha256()


def test_torch_mapping_and_data_source_factories(factories: str, tmp_path: Path) -> None:
    source = open_source(DataConfig(factory=f"{factories}:torch_sets", args={"n": 5}, shuffle_buffer=7), tmp_path)
    assert isinstance(source, TorchSource) and source.num_samples("train") == 5 and source.shuffle_buffer == 7
    assert f"data.factory '{factories}:torch_sets'" in source.describe()
    module = __import__(factories)
    assert open_source(factory(f"{factories}:source"), tmp_path) is module.SOURCE


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("wrong", "data.factory '{m}:wrong' returned list, not data edgekd can stream"),
        ("bad_mapping", "data.factory '{m}:bad_mapping': split 'train' is a list, not a torch Dataset"),
        ("bad_splits", "data.factory '{m}:bad_splits': split 'train' has x float64"),
    ],
)
def test_factory_returning_the_wrong_thing(factories: str, tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        open_source(factory(f"{factories}:{name}"), tmp_path)
    assert message.format(m=factories) in str(info.value)
    assert info.value.hint


def test_factory_that_cannot_be_called(factories: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key 'data.factory' = 'no_such_module_here:load': cannot import module"):
        open_source(factory("no_such_module_here:load"), tmp_path)
    with pytest.raises(ConfigError, match=f"module '{factories}' has no callable 'missing'"):
        open_source(factory(f"{factories}:missing"), tmp_path)
    with pytest.raises(ConfigError, match=f"key 'data.factory' = '{factories}:torch_sets' rejected its args") as info:
        open_source(factory(f"{factories}:torch_sets", size=3), tmp_path)
    assert info.value.hint == "fix [data.args]"


def test_as_source_passes_sources_through() -> None:
    source = SplitsSource(load())
    assert as_source(source, "x") is source
    with pytest.raises(DataError, match="^proj:data returned int"):
        as_source(3, "proj:data")


def test_files_relative_to_the_project_folder(tmp_path: Path, write_files, tokenizer_files) -> None:
    files = write_files("json")  # tmp_path/data/{train,calib,test}.jsonl
    shutil.copy(tokenizer_files.json_file, tmp_path / "tok.json")
    extra = tmp_path / "data" / "more.jsonl"
    extra.write_text(files["train"][0].read_text())
    cfg = DataConfig(files={"train": ["data/train.jsonl", "data/more.jsonl"], "calib": "data/calib.jsonl", "test": "data/test.jsonl"},
                     tokenizer="tok.json", label_column="label", max_length=6, shuffle_buffer=3)
    source = open_source(cfg, tmp_path)
    assert isinstance(source, HFFilesSource) and source.format == "json" and source.settings.shuffle_buffer == 3
    index = np.concatenate([b["index"] for b in source.batches("train", 5)])
    np.testing.assert_array_equal(index, np.arange(16))  # both train files, in order
    assert source.spec().inputs[0].shape == (6,)
    with pytest.raises(DataError, match="data file .*missing.jsonl \\(split 'test'\\) does not exist"):
        open_source(cfg.model_copy(update={"files": {**cfg.files, "test": "data/missing.jsonl"}}), tmp_path)  # type: ignore[dict-item]


FILES = {"train": "a.jsonl", "calib": "b.jsonl", "test": "c.jsonl"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give exactly one of 'factory' or 'files'"),
        ({"factory": "a:b", "files": FILES, "tokenizer": "t.json"}, "give exactly one of 'factory' or 'files'"),
        ({"files": {"train": "a.jsonl", "test": "c.jsonl"}, "tokenizer": "t.json"}, "missing: calib"),
        ({"files": {**FILES, "calib": []}, "tokenizer": "t.json"}, "missing: calib"),
        ({"files": FILES}, "'files' needs 'tokenizer'"),
        ({"files": FILES, "tokenizer": "t.json", "args": {"n": 1}}, "'args' goes with 'factory'"),
        ({"factory": "a:b", "max_length": 64}, "max_length go with 'files'"),
        ({"files": FILES, "tokenizer": "t.json", "format": "text", "label_column": "y"}, "format = 'text' has no label column"),
        ({"files": FILES, "tokenizer": "t.json", "format": "xml"}, "Input should be 'json', 'csv', 'parquet' or 'text'"),
        ({"files": {**FILES, "validation": "d.jsonl"}, "tokenizer": "t.json"}, "Input should be 'train', 'calib' or 'test'"),
    ],
)
def test_data_config_rules(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DataConfig.model_validate(fields)


def test_data_config_defaults() -> None:
    cfg = DataConfig(factory="a:b")
    assert cfg.files is None and cfg.max_length == 128 and cfg.text_column == "text" and cfg.shuffle_buffer == 1024
    files = DataConfig.model_validate({"files": FILES, "tokenizer": "tok"})
    assert files.factory is None and files.label_column is None
