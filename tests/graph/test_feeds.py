"""edgekd/graph/feeds.py and feedgen.py: generated feeds that real models accept, and data folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import ConfigError
from edgekd.graph.feeds import (
    load_feed_folder,
    make_feeds,
    random_feedset,
    read_feed_arrays,
)
from edgekd.graph.resolve import load_inputs


def test_text_feeds_are_what_a_request_sends(zoo) -> None:
    inputs = load_inputs(zoo("bert", "optimum"))
    feeds = make_feeds(inputs)
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape == (1, 128)
    assert 0 <= feeds["input_ids"].min() and feeds["input_ids"].max() < 1000  # the embedding table's rows
    assert len(np.unique(feeds["input_ids"])) > 50  # drawn, not constant
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()
    assert make_feeds(inputs)["input_ids"].tolist() == feeds["input_ids"].tolist()  # seeded


def test_rows_go_on_the_batch_axis_and_past_is_empty(zoo) -> None:
    inputs = load_inputs(zoo("gpt2", "optimum"))
    feeds = make_feeds(inputs, rows=4)
    assert feeds["input_ids"].shape == (4, 128) and feeds["past_key_values.1.value"].shape == (4, 2, 0, 16)
    assert feeds["position_ids"][3].tolist() == list(range(128))
    data = random_feedset(inputs, 3)
    assert len(data) == 3 and not data.fit_for_accuracy and data.labels is None
    assert [a["input_ids"].shape for a in data.batches(2)] == [(2, 128), (1, 128)]


def _save(folder: Path, **arrays: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    return folder


def test_data_folder_of_npy_and_npz(zoo, tmp_path: Path) -> None:
    inputs = load_inputs(zoo("distilbert", "optimum"), {"input_ids": (1, 8), "attention_mask": (1, 8)})
    folder = _save(tmp_path / "d", input_ids=np.arange(24, dtype=np.int32).reshape(3, 8), labels=np.array([0, 1, 2]))
    np.savez(folder / "more.npz", attention_mask=np.ones((3, 8), np.int64))
    data = load_feed_folder(folder, inputs)
    assert data.arrays["input_ids"].dtype == np.int64  # int32 -> int64, a safe cast
    assert data.labels.tolist() == [0, 1, 2] and len(data) == 3 and data.fit_for_accuracy
    assert "3 samples from" in data.description and "with labels" in data.description
    arrays, labels = read_feed_arrays(folder)
    assert set(arrays) == {"input_ids", "attention_mask"} and labels is not None


@pytest.mark.parametrize("arrays,error", [
    ({"input_ids": np.zeros((2, 8), np.int64)}, r"no data for input\(s\) attention_mask"),
    ({"input_ids": np.zeros((2, 9), np.int64), "attention_mask": np.ones((2, 9), np.int64)}, "has 9 on axis 1, the model's input takes 8"),
    ({"input_ids": np.zeros((2, 8), np.float32), "attention_mask": np.ones((2, 8), np.int64)}, "holds float32, but the model's input"),
    ({"input_ids": np.zeros(8, np.int64), "attention_mask": np.ones((2, 8), np.int64)}, "has rank 1"),
    ({"input_ids": np.zeros((2, 8), np.int64), "attention_mask": np.ones((3, 8), np.int64)}, "different sample counts"),
    ({"input_ids": np.zeros((2, 8), np.int64), "attention_mask": np.ones((2, 8), np.int64), "labels": np.zeros(2, np.float32)}, "labels are float32"),
])
def test_data_folder_errors_name_the_folder_and_the_input(zoo, tmp_path: Path, arrays: dict, error: str) -> None:
    inputs = load_inputs(zoo("distilbert", "optimum"), {"input_ids": (1, 8), "attention_mask": (1, 8)})
    with pytest.raises(ConfigError, match=error):
        load_feed_folder(_save(tmp_path / "d", **arrays), inputs)


def test_missing_or_empty_or_unreadable_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_feed_arrays(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no .npy/.npz files"):
        read_feed_arrays(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.npy").write_text("not numpy")
    with pytest.raises(ConfigError, match="not a readable numpy file"):
        read_feed_arrays(tmp_path / "bad")
