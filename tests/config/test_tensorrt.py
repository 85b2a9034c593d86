"""edgekd/config/tensorrt.py: a target's [tensorrt] table and its cross-field rules."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgekd.config.tensorrt import TensorRTConfig, version_tuple


def test_defaults_are_a_trt10_int8_gpu_build():
    cfg = TensorRTConfig(trt_major=10)
    assert (cfg.precision, cfg.dla_core, cfg.gpu_fallback, cfg.builder_optimization_level) == ("int8", None, False, 3)
    assert cfg.min_trt_version == "10.0.0" and cfg.device_description == "GPU"


def test_a_jetson_dla_target():
    cfg = TensorRTConfig(trt_major=10, jetpack="6.2", dla_core=1, gpu_fallback=True, also_fp16=True, power_mode="MAXN")
    assert cfg.device_description == "DLA core 1 with GPU fallback"


def test_unknown_keys_are_rejected_and_the_model_is_frozen():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TensorRTConfig(trt_major=10, int8=True)
    cfg = TensorRTConfig(trt_major=10)
    with pytest.raises(ValidationError):
        cfg.dla_core = 0  # type: ignore[misc]


@pytest.mark.parametrize("kw, match", [
    ({"trt_major": 9}, "Input should be 10 or 11"),
    ({"trt_major": 10, "precision": "fp32"}, "'int8' or 'fp16'"),
    ({"trt_major": 10, "builder_optimization_level": 6}, "less than or equal to 5"),
    ({"trt_major": 10, "jetpack": "6.2", "dla_core": 2}, "less than or equal to 1"),
    ({"trt_major": 10, "jetpack": "six"}, "should match pattern"),
    ({"trt_major": 10, "workspace_mib": 0}, "greater than or equal to 1"),
])
def test_field_bounds(kw, match):
    with pytest.raises(ValidationError, match=match):
        TensorRTConfig(**kw)


@pytest.mark.parametrize("kw, match", [
    ({"trt_major": 10, "gpu_fallback": True}, "gpu_fallback applies only to DLA builds"),
    ({"trt_major": 10, "dla_core": 0}, "dla_core needs jetpack"),
    ({"trt_major": 11, "precision": "fp16"}, "TensorRT 11 has no --fp16"),
    ({"trt_major": 11, "also_fp16": True}, "also_fp16 applies only to trt_major = 10"),
    ({"trt_major": 10, "precision": "fp16", "also_fp16": True}, "also_fp16 applies only"),
    ({"trt_major": 11, "jetpack": "6.2"}, "JetPack 6.2 does not ship TensorRT 11"),
    ({"trt_major": 11, "jetpack": "7.2", "dla_core": 0}, "DLA with TensorRT 11 needs TensorRT >= 11.4.1"),
])
def test_cross_field_rules(kw, match):
    with pytest.raises(ValidationError, match=match):
        TensorRTConfig(**kw)


def test_trt11_dla_needs_11_4_1():
    cfg = TensorRTConfig(trt_major=11, jetpack="7.2.2", dla_core=0)
    assert cfg.min_trt_version == "11.4.1"
    assert TensorRTConfig(trt_major=11).min_trt_version == "11.0.0"


def test_version_tuple():
    assert version_tuple("7.2") == (7, 2, 0) and version_tuple("10.16.1") == (10, 16, 1)
    assert version_tuple("7.2") < version_tuple("7.2.2")
