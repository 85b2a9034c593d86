"""edgekd.tasks.image_classification: today's contract (input "input", logits, a dynamic batch)
and a Hugging Face image model under its own input name."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from task_models import CLASSES, OPSET, TinyCNN

from edgekd.tasks import ImageClassification, get_task


def test_todays_contract() -> None:
    task = get_task("classification", input_shape=[1, 28, 28], num_classes=10)
    (image,), (logits,) = task.inputs(), task.outputs()
    assert (image.name, image.dtype, image.shape, image.role) == ("input", "float32", ("batch_size", 1, 28, 28), "image")
    assert (logits.name, logits.shape) == ("logits", ("batch_size", 10))
    assert task.axis_sizes() == {} and task.input_shape == (1, 28, 28)


def test_a_flat_input_is_a_float_input() -> None:
    (spec,) = ImageClassification((64,), CLASSES).inputs()
    assert spec.shape == ("batch_size", 64) and spec.role == "float"


def test_dummy_images_are_standard_normal_and_labels_valid() -> None:
    batch = ImageClassification((3, 16, 16), 7).dummy_batch(16, seed=2)
    images = batch["input"]
    assert images.shape == (16, 3, 16, 16) and images.dtype == np.float32
    assert abs(images.mean()) < 0.05 and abs(images.std() - 1.0) < 0.05
    assert batch["labels"].dtype == np.int64 and set(batch["labels"]) <= set(range(7))


def test_export_keeps_the_model_in_the_mode_it_was(tmp_path) -> None:
    model = TinyCNN(8).train()
    ImageClassification((1, 8, 8), CLASSES).export(model, tmp_path / "cnn.onnx", OPSET)
    assert model.training
    dims = onnx.load(str(tmp_path / "cnn.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch_size", 1, 8, 8]


def test_a_vit_runs_and_exports_under_pixel_values(tmp_path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=CLASSES)).eval()
    task = ImageClassification((1, 8, 8), CLASSES, input_name="pixel_values")
    feeds = task.dummy_inputs(3)
    task.export(model, tmp_path / "vit.onnx", OPSET)
    (logits,) = ort.InferenceSession(str(tmp_path / "vit.onnx"), providers=["CPUExecutionProvider"]).run(["logits"], feeds)
    with torch.no_grad():
        np.testing.assert_allclose(logits, task.forward(model, feeds).numpy(), atol=1e-4)
