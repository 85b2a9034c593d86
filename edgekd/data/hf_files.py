"""Local data files (json/jsonl, csv, parquet, text) streamed through Hugging Face `datasets`
(`load_dataset(format, data_files=..., streaming=True)`) and tokenized batch by batch.

Text classification (a label column): "input_ids", "attention_mask" (and whatever else the tokenizer
returns, e.g. "token_type_ids"), padded/truncated to `max_length`, plus int64 "labels". String labels
map to ids in the order of `labels`, or by default the sorted distinct labels of the train split
(found by streaming the label column once); int labels are the ids.

Language modelling (no label column): each split's texts are tokenized in order, concatenated, and cut
into blocks of `max_length` tokens (blank texts are skipped) ("input_ids", "attention_mask" of ones; the tail shorter than a
block is dropped, as in transformers' run_clm). There is no "labels": the targets are input_ids
shifted. "index" counts blocks.

Shuffling (`seed`) goes through a seeded shuffle buffer of `shuffle_buffer` rows (blocks). The
fingerprint hashes the files' bytes (read in chunks), the tokenizer's files and the settings.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import IterableDataset, load_dataset
from datasets import config as datasets_config
from datasets.exceptions import DatasetsError
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from edgekd.data.sources import (
    DEFAULT_SHUFFLE_BUFFER,
    INDEX,
    LABELS,
    SPLITS,
    ArraySpec,
    Batch,
    DataSource,
    Digest,
    SourceSpec,
    buffer_shuffle,
    check_split,
    chunks,
)
from edgekd.data.views import TEACHER_PREFIX
from edgekd.errors import DataError

FORMATS = ("json", "csv", "parquet", "text")
EXTENSIONS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
READ_CHUNK_BYTES = 1 << 20
TOKENIZE_ROWS = 256  # rows tokenized together while building language-modelling blocks
READ_ERRORS = (DatasetsError, ValueError, OSError)  # malformed files (pyarrow's ArrowInvalid is a ValueError)


@dataclass(frozen=True)
class FileSettings:
    """Everything HFFilesSource needs; `files` per split ("train", "calib", "test"), paths absolute."""

    files: Mapping[str, tuple[Path, ...]]
    tokenizer: Path
    format: str | None = None  # None: from the files' extension
    text_column: str = "text"
    label_column: str | None = None  # None: language modelling
    labels: tuple[str, ...] | None = None
    max_length: int = 128
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    teacher_text_column: str | None = None  # cross-input: the teacher's view of each sample (edgekd.data.views)
    teacher_max_length: int | None = None  # its tokens (default max_length)

    def key(self, file_format: str) -> str:
        """The settings that shape the batches, for the fingerprint (file names, not where they are)."""
        return json.dumps({
            "format": file_format, "text_column": self.text_column, "label_column": self.label_column,
            "labels": self.labels, "max_length": self.max_length, "tokenizer": self.tokenizer.name,
            "teacher_text_column": self.teacher_text_column, "teacher_max_length": self.teacher_max_length,
            "files": {split: [path.name for path in self.files[split]] for split in SPLITS},
        }, sort_keys=True)


def resolve_format(settings: FileSettings) -> str:
    """The files' format: as given, or from their extensions (all alike)."""
    if settings.format is not None:
        if settings.format not in FORMATS:
            raise DataError(f"unknown data format '{settings.format}'", f"use one of {', '.join(FORMATS)}")
        return settings.format
    found = {EXTENSIONS.get(path.suffix.lower()) for split in SPLITS for path in settings.files[split]}
    if None in found or len(found) != 1:
        names = sorted({path.name for split in SPLITS for path in settings.files[split]})
        raise DataError(f"cannot tell the format of data files {names}", f"set data.format to one of {', '.join(FORMATS)}")
    return str(found.pop())


def open_streaming(file_format: str, files: list[str]) -> IterableDataset:
    """`load_dataset(format, data_files=files, streaming=True)` without the download-count request
    datasets sends to the network for its packaged loaders (3 s stalls offline; local files need none)."""
    counting = getattr(datasets_config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    datasets_config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        return load_dataset(file_format, data_files=files, split="train", streaming=True)
    finally:
        datasets_config.HF_UPDATE_DOWNLOAD_COUNTS = counting


def check_files(settings: FileSettings) -> None:
    for split in SPLITS:
        paths = settings.files.get(split, ())
        if not paths:
            raise DataError(f"no data files for split '{split}'", "give files for train, calib and test")
        for path in paths:
            if not path.is_file():
                raise DataError(f"data file {path} (split '{split}') does not exist", "check data.files")


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """A tokenizer folder (save_pretrained) or a `tokenizers` tokenizer.json file, offline."""
    hint = "give a tokenizer folder (save_pretrained) or a tokenizer.json file"
    if not path.exists():
        raise DataError(f"tokenizer {path} does not exist", hint)
    try:
        if path.is_dir():
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    except Exception as exc:  # tokenizers raises plain Exception for a file it cannot parse
        raise DataError(f"cannot load tokenizer {path}: {exc}".replace("\n", " "), hint) from exc


def hash_file(digest: Digest, path: Path) -> None:
    digest.update(f"{path.name}:{path.stat().st_size};".encode())
    with path.open("rb") as handle:
        while block := handle.read(READ_CHUNK_BYTES):
            digest.update(block)


def hash_tokenizer(digest: Digest, path: Path) -> None:
    """A tokenizer.json, or every file of a tokenizer folder (sorted by relative name)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        hash_file(digest, file)


class HFFilesSource(DataSource):
    """Local files per split through `datasets` streaming; see the module docstring."""

    def __init__(self, settings: FileSettings) -> None:
        check_files(settings)
        self.settings = settings
        self.format = resolve_format(settings)
        if self.format == "text" and settings.label_column is not None:
            raise DataError(f"format 'text' has no label column '{settings.label_column}'", "use json, csv or parquet for text classification")
        self.tokenizer = load_tokenizer(settings.tokenizer)
        if settings.label_column is not None and self.tokenizer.pad_token is None:
            raise DataError(f"tokenizer {settings.tokenizer} has no pad token", "enable padding in the tokenizer (or set its pad_token) before saving it")
        self.counted: dict[str, int] = {}
        self.label_table: dict[Any, int] | None = None
        self.num_classes_value: int | None = None
        for split in SPLITS:
            self.check_columns(split)

    @property
    def classifies(self) -> bool:
        return self.settings.label_column is not None

    def where(self, split: str) -> str:
        return f"split '{split}' ({', '.join(path.name for path in self.settings.files[split])})"

    def rows(self, split: str, columns: list[str] | None = None) -> Generator[dict[str, Any], None, None]:
        """The split's rows in file order, streamed."""
        files = [str(path) for path in self.settings.files[split]]
        try:
            dataset = open_streaming(self.format, files)
            if columns is not None:
                dataset = dataset.select_columns(columns)
            yield from dataset
        except READ_ERRORS as exc:
            raise DataError(f"cannot read {self.where(split)} as {self.format}: {exc}".replace("\n", " "), "check the files and data.format") from exc

    def check_columns(self, split: str) -> None:
        """The first row has the text (and label) column; an empty split is an error."""
        rows = self.rows(split)
        first = next(rows, None)
        rows.close()
        if first is None:
            raise DataError(f"{self.where(split)} has no rows", "every split needs samples")
        needed = [self.settings.text_column] + ([self.settings.label_column] if self.settings.label_column else [])
        needed += [self.settings.teacher_text_column] if self.settings.teacher_text_column else []
        missing = [column for column in needed if column not in first]
        if missing:
            raise DataError(f"{self.where(split)} has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(first)})",
                            "set data.text_column / data.label_column / data.teacher_text_column to columns of the files")

    def labels_of(self) -> dict[Any, int]:
        """Label value -> class id; computed once (string labels without `labels`: one pass over train)."""
        if self.label_table is not None:
            return self.label_table
        column = str(self.settings.label_column)
        if self.settings.labels is not None:
            table: dict[Any, int] = {name: i for i, name in enumerate(self.settings.labels)}
            num_classes = len(table)
        else:
            values = {row[column] for row in self.rows("train", [column])}
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
                table, num_classes = {}, int(max(values)) + 1
            elif all(isinstance(v, str) for v in values):
                table = {name: i for i, name in enumerate(sorted(values))}
                num_classes = len(table)
            else:
                kinds = sorted({type(v).__name__ for v in values})
                raise DataError(f"{self.where('train')} column '{column}' holds {', '.join(kinds)} labels", "use string or integer class labels")
        self.label_table, self.num_classes_value = table, num_classes
        return table

    def label_ids(self, values: list[Any], indices: list[int], split: str) -> np.ndarray:
        table, num_classes = self.labels_of(), self.num_classes_value
        ids = []
        for value, index in zip(values, indices):
            label = table.get(value) if isinstance(value, str) else value
            if label is None or isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < int(num_classes or 0):
                raise DataError(f"{self.where(split)} row {index}: label {value!r} is not one of the {num_classes} classes",
                                "list every class in data.labels (in id order), or fix the row")
            ids.append(int(label))
        return np.asarray(ids, dtype=np.int64)

    def encode(self, texts: list[Any], indices: list[int], split: str, max_length: int | None = None) -> Batch:
        for text, index in zip(texts, indices):
            if not isinstance(text, str):
                raise DataError(f"{self.where(split)} row {index}: text is {type(text).__name__}, not a string", "fill or drop the row")
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=max_length or self.settings.max_length,
                                 return_tensors="np")
        return {name: np.asarray(values, dtype=np.int64) for name, values in encoded.items()}

    def classify_batches(self, split: str, batch_size: int, seed: int | None) -> Iterator[Batch]:
        text_column, label_column, teacher_column = self.settings.text_column, str(self.settings.label_column), self.settings.teacher_text_column
        columns = [text_column, label_column] + ([teacher_column] if teacher_column and teacher_column != text_column else [])
        rows: Iterator[tuple[int, dict[str, Any]]] = enumerate(self.rows(split, columns))
        if seed is not None:
            rows = buffer_shuffle(rows, self.settings.shuffle_buffer, seed)
        count = 0
        for chunk in chunks(rows, batch_size):
            indices = [index for index, _ in chunk]
            batch = self.encode([row[text_column] for _, row in chunk], indices, split)
            if teacher_column:
                teacher = self.encode([row[teacher_column] for _, row in chunk], indices, split, self.settings.teacher_max_length)
                batch.update({TEACHER_PREFIX + name: values for name, values in teacher.items()})
            batch[LABELS] = self.label_ids([row[label_column] for _, row in chunk], indices, split)
            batch[INDEX] = np.asarray(indices, dtype=np.int64)
            count += len(chunk)
            yield batch
        self.counted[split] = count

    def blocks(self, split: str) -> Iterator[np.ndarray]:
        """Blocks of max_length token ids, in order; holds at most one block plus one group of rows' tokens."""
        size, tokens = self.settings.max_length, []
        texts = (row[self.settings.text_column] for row in self.rows(split, [self.settings.text_column]))
        for group in chunks((text for text in texts if isinstance(text, str) and text.strip()), TOKENIZE_ROWS):
            for ids in self.tokenizer(group)["input_ids"]:
                tokens.extend(ids)
            while len(tokens) >= size:
                yield np.asarray(tokens[:size], dtype=np.int64)
                del tokens[:size]

    def lm_batches(self, split: str, batch_size: int, seed: int | None) -> Iterator[Batch]:
        blocks: Iterator[tuple[int, np.ndarray]] = enumerate(self.blocks(split))
        if seed is not None:
            blocks = buffer_shuffle(blocks, self.settings.shuffle_buffer, seed)
        count = 0
        for chunk in chunks(blocks, batch_size):
            ids = np.stack([block for _, block in chunk])
            count += len(chunk)
            yield {"input_ids": ids, "attention_mask": np.ones_like(ids), INDEX: np.asarray([i for i, _ in chunk], dtype=np.int64)}
        if count == 0:
            raise DataError(f"{self.where(split)} has fewer than max_length = {self.settings.max_length} tokens", "lower data.max_length or add text")
        self.counted[split] = count

    def batches(self, split: str, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        check_split(split, batch_size)
        if self.classifies:
            return self.classify_batches(split, batch_size, seed)
        return self.lm_batches(split, batch_size, seed)

    def num_samples(self, split: str) -> int | None:
        """Rows (classification) or blocks (language modelling) once a full pass has run, else None."""
        check_split(split, 1)
        return self.counted.get(split)

    def spec(self) -> SourceSpec:
        length, vocab = self.settings.max_length, len(self.tokenizer)
        if not self.classifies:
            inputs: tuple[ArraySpec, ...] = (ArraySpec("input_ids", "int64", (length,)), ArraySpec("attention_mask", "int64", (length,)))
            return SourceSpec(inputs, None, None, vocab)
        names = self.encode(["x"], [0], "train")
        inputs = tuple(ArraySpec(name, "int64", (length,)) for name in names)
        self.labels_of()
        return SourceSpec(inputs, ArraySpec(LABELS, "int64", ()), self.num_classes_value, vocab)

    def compute_fingerprint(self) -> str:
        digest = hashlib.sha256(self.settings.key(self.format).encode())
        for split in SPLITS:
            digest.update(f"split {split};".encode())
            for path in self.settings.files[split]:
                hash_file(digest, path)
        digest.update(b"tokenizer;")
        hash_tokenizer(digest, self.settings.tokenizer)
        return digest.hexdigest()

    def describe(self) -> str:
        task = f"text classification ('{self.settings.text_column}' -> '{self.settings.label_column}')" if self.classifies else "language modelling"
        files = "/".join(str(len(self.settings.files[split])) for split in SPLITS)
        teacher = ""
        if self.settings.teacher_text_column:
            teacher = (f"; the teacher reads '{self.settings.teacher_text_column}' "
                       f"(max_length {self.settings.teacher_max_length or self.settings.max_length}), the student '{self.settings.text_column}'")
        return (f"{self.format} files (train/calib/test {files} files), {task}, tokenizer {self.settings.tokenizer.name}, "
                f"max_length {self.settings.max_length}{teacher}")
