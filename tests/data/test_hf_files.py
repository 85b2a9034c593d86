"""edgekd/data/hf_files.py: local json/csv/parquet/text files streamed through `datasets`, with a
tokenizer trained here (conftest), for text classification and language modelling."""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from edgekd.data.hf_files import TOKENIZE_ROWS, FileSettings, HFFilesSource
from edgekd.errors import DataError

Files = dict[str, tuple[Path, ...]]


def classify(files: Files, tokenizer: Path, **changes: Any) -> FileSettings:
    return replace(FileSettings(files=files, tokenizer=tokenizer, label_column="label", max_length=8), **changes)


def concat(source: HFFilesSource, split: str, batch_size: int, seed: int | None = None) -> dict[str, np.ndarray]:
    batches = list(source.batches(split, batch_size, seed=seed))
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_text_classification_batches(fmt: str, write_files, tokenizer_files, corpus) -> None:
    int_labels = fmt == "csv"  # csv: class ids; json and parquet: class names
    source = HFFilesSource(classify(write_files(fmt, int_labels), tokenizer_files.json_file))
    assert source.num_samples("train") is None
    batches = list(source.batches("train", 3))
    assert [len(b["index"]) for b in batches] == [3, 3, 2] and source.num_samples("train") == 8
    assert set(batches[0]) == {"input_ids", "token_type_ids", "attention_mask", "labels", "index"}
    assert all(arr.dtype == np.int64 for arr in batches[0].values())
    assert batches[0]["input_ids"].shape == batches[0]["attention_mask"].shape == (3, 8)
    texts, names = corpus.split("train")
    out = concat(source, "train", 3)
    np.testing.assert_array_equal(out["labels"], [sorted(set(names)).index(name) for name in names])
    np.testing.assert_array_equal(out["index"], np.arange(8))
    decoded = [source.tokenizer.decode(ids, skip_special_tokens=True) for ids in out["input_ids"]]
    assert decoded == [" ".join(text.split()[:8]) for text in texts]
    np.testing.assert_array_equal(out["attention_mask"].sum(axis=1), [min(len(t.split()), 8) for t in texts])
    spec = source.spec()
    assert spec.input_names == ("input_ids", "token_type_ids", "attention_mask")
    assert spec.inputs[0].shape == (8,) and spec.num_classes == 3 and spec.vocab_size == len(source.tokenizer)


def test_tokenizer_folder_matches_tokenizer_json_and_truncates(write_files, tokenizer_files) -> None:
    files = write_files("json")
    a = concat(HFFilesSource(classify(files, tokenizer_files.json_file, max_length=5)), "calib", 4)
    b = concat(HFFilesSource(classify(files, tokenizer_files.folder, max_length=5)), "calib", 4)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert a["input_ids"].shape == (2, 5) and a["attention_mask"].all()  # 6-word sentences cut to 5 tokens


def test_labels_setting_fixes_the_class_order(write_files, tokenizer_files, corpus) -> None:
    order = ("pets", "nature", "city")
    source = HFFilesSource(classify(write_files("json"), tokenizer_files.json_file, labels=order))
    _, names = corpus.split("test")
    np.testing.assert_array_equal(concat(source, "test", 8)["labels"], [order.index(n) for n in names])
    assert source.spec().num_classes == 3


def test_language_modelling_blocks(write_files, tokenizer_files, corpus) -> None:
    source = HFFilesSource(FileSettings(files=write_files("text"), tokenizer=tokenizer_files.folder, max_length=5))
    out = concat(source, "train", 4)
    assert set(out) == {"input_ids", "attention_mask", "index"}  # no labels: targets are input_ids shifted
    words = " ".join(corpus.split("train")[0]).split()
    blocks = len(words) // 5
    assert out["input_ids"].shape == (blocks, 5) and out["attention_mask"].all()
    tokens = [source.tokenizer.convert_ids_to_tokens(row.tolist()) for row in out["input_ids"]]
    assert [token for block in tokens for token in block] == words[: blocks * 5]
    assert source.num_samples("train") == blocks
    spec = source.spec()
    assert spec.labels is None and spec.num_classes is None and spec.input_names == ("input_ids", "attention_mask")
    assert "language modelling" in source.describe()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_seeded_shuffle_is_reproducible_and_complete(fmt: str, write_files, tokenizer_files) -> None:
    label = {"label_column": "label"} if fmt == "json" else {"max_length": 3}
    settings = FileSettings(files=write_files(fmt), tokenizer=tokenizer_files.json_file, shuffle_buffer=4, **label)
    source = HFFilesSource(settings)
    plain = concat(source, "train", 2)
    a, b, c = (concat(source, "train", 2, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a["index"], b["index"])
    assert sorted(a["index"].tolist()) == list(range(len(plain["index"])))
    assert not np.array_equal(a["index"], plain["index"]) and not np.array_equal(a["index"], c["index"])
    np.testing.assert_array_equal(a["input_ids"], plain["input_ids"][a["index"]])  # rows travel with their index


class Counting(HFFilesSource):
    """Counts the rows pulled from the files."""

    pulled = 0

    def rows(self, split: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        for row in super().rows(split, columns):
            Counting.pulled += 1
            yield row


def test_first_batch_reads_one_batch_of_rows(tmp_path: Path, tokenizer_files) -> None:
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": "the cat sat", "label": i % 2}) + "\n" for i in range(20000)))
    small = (big.with_name("small.jsonl"),)
    small[0].write_text(json.dumps({"text": "a dog", "label": 1}) + "\n")
    source = Counting(classify({"train": (big,), "calib": small, "test": small}, tokenizer_files.json_file, labels=("a", "b")))
    Counting.pulled = 0
    assert len(next(source.batches("train", 4))["index"]) == 4 and Counting.pulled == 4
    lm = Counting(FileSettings(files={"train": (big,), "calib": small, "test": small}, tokenizer=tokenizer_files.json_file, max_length=4))
    Counting.pulled = 0
    next(lm.batches("train", 2))
    assert Counting.pulled <= TOKENIZE_ROWS


def test_fingerprint_hashes_bytes_tokenizer_and_settings(tmp_path: Path, write_files, tokenizer_files) -> None:
    files = write_files("json")
    settings = classify(files, tokenizer_files.json_file)
    base = HFFilesSource(settings).fingerprint()
    assert len(base) == 64 and HFFilesSource(settings).fingerprint() == base
    moved = tmp_path / "moved"
    shutil.copytree(files["train"][0].parent, moved)
    same = {split: (moved / paths[0].name,) for split, paths in files.items()}
    assert HFFilesSource(classify(same, tokenizer_files.json_file)).fingerprint() == base  # names and bytes, not places
    assert HFFilesSource(replace(settings, max_length=9)).fingerprint() != base
    assert HFFilesSource(replace(settings, tokenizer=tokenizer_files.folder)).fingerprint() != base
    data = bytearray(files["test"][0].read_bytes())
    data[data.index(b"lake")] = ord("m")  # one byte: "lake" -> "make"
    files["test"][0].write_bytes(bytes(data))
    assert HFFilesSource(settings).fingerprint() != base


def test_missing_file_unknown_format_and_missing_column(tmp_path: Path, write_files, tokenizer_files) -> None:
    files = write_files("json")
    with pytest.raises(DataError, match=r"data file .*nope.jsonl \(split 'calib'\) does not exist"):
        HFFilesSource(classify({**files, "calib": (tmp_path / "nope.jsonl",)}, tokenizer_files.json_file))
    with pytest.raises(DataError, match="unknown data format 'xml'") as info:
        HFFilesSource(classify(files, tokenizer_files.json_file, format="xml"))
    assert "json, csv, parquet, text" in (info.value.hint or "")
    odd = tmp_path / "train.dat"
    odd.write_text("x\n")
    with pytest.raises(DataError, match=r"cannot tell the format of data files .*train.dat"):
        HFFilesSource(classify({**files, "train": (odd,)}, tokenizer_files.json_file))
    with pytest.raises(DataError, match=r"split 'train' \(train.jsonl\) has no column 'sentiment' \(columns: text, label\)"):
        HFFilesSource(classify(files, tokenizer_files.json_file, label_column="sentiment"))
    with pytest.raises(DataError, match="format 'text' has no label column 'label'"):
        HFFilesSource(classify(write_files("text"), tokenizer_files.json_file))


def test_bad_rows_and_labels(tmp_path: Path, write_files, tokenizer_files) -> None:
    files = write_files("json")
    weather = tmp_path / "weather.jsonl"
    weather.write_text(json.dumps({"text": "it rained", "label": "weather"}) + "\n")
    source = HFFilesSource(classify({**files, "test": (weather,)}, tokenizer_files.json_file))
    with pytest.raises(DataError, match=r"split 'test' \(weather.jsonl\) row 0: label 'weather' is not one of the 3 classes"):
        next(source.batches("test", 2))
    floats = tmp_path / "floats.jsonl"
    floats.write_text(json.dumps({"text": "it rained", "label": 0.5}) + "\n")
    with pytest.raises(DataError, match="column 'label' holds float labels"):
        HFFilesSource(classify({**files, "train": (floats,)}, tokenizer_files.json_file)).spec()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": oops\n')
    with pytest.raises(DataError, match=r"cannot read split 'train' \(broken.jsonl\) as json"):
        HFFilesSource(classify({**files, "train": (broken,)}, tokenizer_files.json_file))
    lm = HFFilesSource(FileSettings(files=write_files("text"), tokenizer=tokenizer_files.json_file, max_length=1000))
    with pytest.raises(DataError, match="fewer than max_length = 1000 tokens"):
        next(lm.batches("calib", 2))


def test_tokenizer_errors(tmp_path: Path, write_files, tokenizer_files) -> None:
    files = write_files("json")
    with pytest.raises(DataError, match="tokenizer .*missing.json does not exist"):
        HFFilesSource(classify(files, tmp_path / "missing.json"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not a tokenizer")
    with pytest.raises(DataError, match="cannot load tokenizer .*garbage.json"):
        HFFilesSource(classify(files, garbage))
    no_pad = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_files.json_file))
    no_pad.backend_tokenizer.no_padding()
    no_pad.backend_tokenizer.save(str(tmp_path / "no_pad.json"))
    with pytest.raises(DataError, match="has no pad token") as info:
        HFFilesSource(classify(files, tmp_path / "no_pad.json"))
    assert "padding" in (info.value.hint or "")
    lm = HFFilesSource(FileSettings(files=write_files("text"), tokenizer=tmp_path / "no_pad.json", max_length=4))
    assert next(lm.batches("train", 1))["input_ids"].shape == (1, 4)  # blocks need no padding
