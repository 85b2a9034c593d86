"""edgekd.tasks.export: Dims shared across inputs, optimum's config narrowed to the task, failures."""
from __future__ import annotations

import pytest
import torch
from task_models import CLASSES, IMAGE_SHAPE, LM_DIMS, OPSET, gpt2

from edgekd.graph.export import ExportFailed
from edgekd.tasks import CausalLM, ImageClassification
from edgekd.tasks.export import dynamic_shapes, optimum_config


def test_inputs_share_one_dim_per_axis_name() -> None:
    task = CausalLM(**LM_DIMS)
    ids, mask = dynamic_shapes(task.inputs(), task.axis_sizes())
    assert ids[0] is mask[0] and ids[1] is mask[1]
    assert (ids[0].__name__, ids[1].__name__, ids[1].max) == ("batch_size", "sequence_length", LM_DIMS["max_length"])


def test_optimums_config_is_narrowed_to_the_task_specs() -> None:
    config = optimum_config(gpt2(16), CausalLM(**LM_DIMS))  # optimum's own GPT-2 config adds position_ids
    assert dict(config.inputs) == {"input_ids": {0: "batch_size", 1: "sequence_length"},
                                   "attention_mask": {0: "batch_size", 1: "sequence_length"}}
    assert dict(config.outputs) == {"logits": {0: "batch_size", 1: "sequence_length"}}
    assert set(config.generate_dummy_inputs(framework="pt")) == {"input_ids", "attention_mask"}


class DataDependent(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1)) if x.sum() > 0 else -self.head(x.flatten(1))


def test_a_model_the_exporter_cannot_trace_is_an_export_failure(tmp_path) -> None:
    with pytest.raises(ExportFailed, match="torch.onnx.export of DataDependent for task 'image-classification'"):
        ImageClassification(IMAGE_SHAPE, CLASSES).export(DataDependent(), tmp_path / "m.onnx", OPSET)
