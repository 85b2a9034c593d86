"""edgekd.perf.memory_batches: a tuning request whose sessions would not fit in memory together is timed
in batches that do (a 135 M decoder's tuner was killed for memory with every session open), each
candidate exactly once, in request order; the tuner's record says the rounds interleave per batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from test_interleaved import ORT, _model

from edgekd.perf import memory_batches as mb


def _file(path: Path, size: int) -> dict[str, str]:
    path.write_bytes(b"\0" * size)
    return {"model": str(path)}


def test_candidates_are_grouped_in_order_under_the_budget(tmp_path: Path) -> None:
    entries = [_file(tmp_path / f"m{i}.onnx", size) for i, size in enumerate([100, 100, 300, 50, 1000, 10])]
    ir = tmp_path / "ir.xml"
    ir.write_bytes(b"\0" * 10)
    (tmp_path / "ir.bin").write_bytes(b"\0" * 90)
    (tmp_path / "m0.onnx.data").write_bytes(b"\0" * 20)  # external data beside m0 counts
    assert mb.model_bytes(ir) == 100 and mb.model_bytes(Path(entries[0]["model"])) == 120
    budget = int(mb.SESSION_FACTOR * 400)
    groups = mb.memory_batches(entries + [{"model": str(ir)}], budget)
    assert [i for g in groups for i in g] == list(range(7))  # each once, in order
    assert groups == [[0, 1], [2, 3], [4], [5, 6]]  # 1000 alone: larger than the budget, a batch of its own
    assert mb.memory_batches(entries) == [list(range(6))]  # a few bytes: one batch with this host's memory


def test_run_rounds_times_every_candidate_across_batches_and_says_so(tmp_path: Path, monkeypatch) -> None:
    from edgekd.backends.ort.prune import run_rounds

    model, feeds = _model(tmp_path)
    entries = [{"model": str(model), "session": ORT}, {"model": str(model), "session": {**ORT, "graph_optimization_level": "extended"}},
               {"model": str(model), "session": {**ORT, "intra_op_num_threads": 2}}]
    one_each = mb.SESSION_FACTOR * mb.model_bytes(model) / mb.SHARE * 1.5  # room for one session at a time
    monkeypatch.setattr(mb, "available_bytes", lambda: int(one_each))
    notes: list[str] = []
    feed = {k: v[:1] for k, v in np.load(feeds).items()}
    samples, wall = run_rounds(entries, (2, 3, 1), feed, tmp_path, "engine tuning", notes)
    assert [len(s) for s in samples] == [6, 6, 6] and wall > 0
    assert len(notes) == 1 and "3 candidates timed in 3 batches" in notes[0] and "interleave within a batch" in notes[0]
