"""Fixtures for the data sources' tests: a word-level tokenizer trained here on a few sentences (saved
as tokenizer.json and as a save_pretrained folder) and small labelled text files in every format."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

SENTENCES = [
    "the cat sat on the mat", "a dog ran in the park", "the bird sang a song", "rain fell on the quiet town",
    "children played in the park", "the old man read the paper", "my cat likes warm milk", "the sun rose over the hills",
    "the dog barked at the mailman", "she painted the fence green",
    "a small boat crossed the lake", "we walked to the market",
]
LABELS = ["pets", "pets", "nature", "nature", "city", "city", "pets", "nature", "pets", "city", "nature", "city"]
SPLIT_ROWS = {"train": slice(0, 8), "calib": slice(8, 10), "test": slice(10, 12)}


@dataclass(frozen=True)
class TokenizerFiles:
    json_file: Path
    folder: Path


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory: pytest.TempPathFactory) -> TokenizerFiles:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tokenizer")
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    json_file = root / "tokenizer.json"
    tokenizer.save(str(json_file))
    folder = root / "tokenizer-folder"
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(str(folder))
    return TokenizerFiles(json_file, folder)


def rows(split: str, int_labels: bool = False) -> list[dict[str, object]]:
    names = sorted(set(LABELS))
    picked = zip(SENTENCES[SPLIT_ROWS[split]], LABELS[SPLIT_ROWS[split]])
    return [{"text": text, "label": names.index(label) if int_labels else label} for text, label in picked]


def write_split(folder: Path, split: str, fmt: str, int_labels: bool = False) -> Path:
    """One split of the labelled sentences as a json-lines, csv, parquet or text file."""
    data = rows(split, int_labels)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in data))
    elif fmt == "csv":
        path = folder / f"{split}.csv"
        path.write_text("text,label\n" + "".join(f"{row['text']},{row['label']}\n" for row in data))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = folder / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(data), path)
    else:
        path = folder / f"{split}.txt"
        path.write_text("".join(f"{row['text']}\n" for row in data))
    return path


@pytest.fixture
def write_files(tmp_path: Path):
    """write_files(fmt, int_labels=False) -> {split: (path,)} in tmp_path/data."""

    def write(fmt: str, int_labels: bool = False) -> dict[str, tuple[Path, ...]]:
        return {split: (write_split(tmp_path / "data", split, fmt, int_labels),) for split in SPLIT_ROWS}

    return write


@dataclass(frozen=True)
class Corpus:
    sentences: list[str]
    labels: list[str]

    def split(self, name: str) -> tuple[list[str], list[str]]:
        return self.sentences[SPLIT_ROWS[name]], self.labels[SPLIT_ROWS[name]]


@pytest.fixture
def corpus() -> Corpus:
    return Corpus(SENTENCES, LABELS)
