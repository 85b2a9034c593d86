"""Counts and sizes a user gives in a project, profile or target file are bounded: zero or negative
and absurdly large values (a typo with extra zeros) are refused when the file loads."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgekd.config.models import BenchConfig, DataConfig, DistillConfig, QuantizeConfig, TrainConfig, TuneConfig
from edgekd.config.target import SessionConfig, TuneSpace

CASES = [
    (TrainConfig, "epochs", [0, 10**9]), (TrainConfig, "batch_size", [0, 10**9]), (TrainConfig, "seed", [-1, 2**40]),
    (DistillConfig, "epochs", [0, 10**9]), (DistillConfig, "batch_size", [0, 10**9]), (DistillConfig, "seed", [-1, 2**40]),
    (QuantizeConfig, "calibration_samples", [0, 10**12]),
    (BenchConfig, "max_runs", [0, 10**12]), (BenchConfig, "offline_max_batch", [0, 10**9]), (BenchConfig, "profile_runs", [-1, 10**12]),
    (BenchConfig, "prompt_tokens", [0, 10**9]), (TuneConfig, "rounds", [0, 10**9]), (TuneConfig, "runs_per_round", [0, 10**12]),
    (SessionConfig, "intra_op_num_threads", [-1, 10**4]), (SessionConfig, "inter_op_num_threads", [-1, 10**4]),
]


@pytest.mark.parametrize("model, field, bad", CASES, ids=[f"{m.__name__}.{f}" for m, f, _ in CASES])
def test_out_of_range_values_are_refused(model: type, field: str, bad: list[int]) -> None:
    for value in bad:
        with pytest.raises(ValidationError, match=field):
            model.model_validate({field: value})


def test_data_sizes_are_bounded() -> None:
    for field in ("max_length", "shuffle_buffer"):
        with pytest.raises(ValidationError, match=field):
            DataConfig.model_validate({"factory": "m:f", field: 10**12})


def test_tune_thread_lists_are_bounded() -> None:
    with pytest.raises(ValidationError, match="thread counts"):
        TuneSpace.model_validate({"intra_op_num_threads": [1, 100_000]})
    assert TuneSpace.model_validate({"intra_op_num_threads": [1, 0]}).intra_op_num_threads == [1, 0]


def test_a_weight_only_embedding_candidate_takes_4_bits() -> None:
    from edgekd.config.target import WeightOnlySpec

    assert WeightOnlySpec.model_validate({"bits": 4, "block_size": 128, "embedding": True}).embedding
    with pytest.raises(ValidationError, match="embedding = true takes bits = 4"):
        WeightOnlySpec.model_validate({"bits": 8, "embedding": True})
