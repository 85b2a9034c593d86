"""edgekd.deploy.tensorrt_decoder: a KV-cache decoder's TensorRT bundle (tiny random HF Llama exported
with past key/values): build_engine.sh holds one min/opt/max profile from a 1-token empty-past step to
the prompt over the fixed context, tuned at the decode step; the decode step and the prefill are
measured by separate trtexec commands with feedgen's inputs; DLA is refused. TensorRT is not here: the
script text, `bash -n` and the manifest are what is checked."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgekd.config.tensorrt import TensorRTConfig
from edgekd.deploy import tensorrt_bundle as tb
from edgekd.errors import EdgekdError
from edgekd.graph.decoder import decoder_shapes, with_past
from edgekd.tasks import CausalLM
from edgekd.tasks.export import export_hf

VOCAB, PROMPT, CONTEXT = 96, 12, 20
PAST = [f"past_key_values.{layer}.{kind}" for layer in (0, 1) for kind in ("key", "value")]


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)).eval()
    task = CausalLM(vocab_size=VOCAB, max_length=16)
    path = tmp_path_factory.mktemp("llama") / "model.onnx"
    export_hf(model, task, path, 17, with_past=True)
    inputs = with_past(task.model_inputs(batch=1), path)
    return path, inputs, decoder_shapes(inputs, PROMPT, CONTEXT)


def option(argv: list[str], name: str) -> dict[str, str]:
    value = next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))
    return dict(item.rsplit(":", 1) for item in value.split(","))


def test_the_build_has_one_profile_from_a_step_to_the_prompt_tuned_at_the_decode_step(decoder, tmp_path: Path) -> None:
    path, inputs, shapes = decoder
    tb.write_bundle(path, tmp_path, TensorRTConfig(trt_major=10), "jetson-orin-agx", inputs, shapes)
    build = json.loads((tmp_path / tb.MANIFEST).read_text())["build"]["argv"]
    low, opt, high = (option(build, f"{k}Shapes") for k in ("min", "opt", "max"))
    assert (low["input_ids"], opt["input_ids"], high["input_ids"]) == ("1x1", "1x1", f"1x{PROMPT}")
    assert (low["attention_mask"], opt["attention_mask"], high["attention_mask"]) == ("1x1", f"1x{CONTEXT}", f"1x{CONTEXT}")
    for name in PAST:
        assert (low[name], opt[name], high[name]) == ("1x2x0x8", f"1x2x{CONTEXT - 1}x8", f"1x2x{CONTEXT - 1}x8")
    assert not any(a.startswith("--shapes=") for a in build)
    script = (tmp_path / tb.SCRIPT).read_text()
    assert f"--optShapes=input_ids:1x1,attention_mask:1x{CONTEXT}," in script and "--int8" in script
    if shutil.which("bash"):
        assert subprocess.run(["bash", "-n", str(tmp_path / tb.SCRIPT)], check=False).returncode == 0


def test_the_decode_step_and_the_prefill_are_measured_apart(decoder, tmp_path: Path) -> None:
    path, inputs, shapes = decoder
    tb.write_bundle(path, tmp_path, TensorRTConfig(trt_major=11), "jetson-orin-agx", inputs, shapes)
    manifest = json.loads((tmp_path / tb.MANIFEST).read_text())
    decode, prefill = manifest["measure"]["argv"], manifest["decoder"]["measure_prefill"]["argv"]
    assert option(decode, "shapes")["past_key_values.0.key"] == f"1x2x{CONTEXT - 1}x8" and option(decode, "shapes")["input_ids"] == "1x1"
    assert option(prefill, "shapes")["input_ids"] == f"1x{PROMPT}" and option(prefill, "shapes")["past_key_values.1.value"] == "1x2x0x8"
    loaded = option(prefill, "loadInputs")
    assert set(loaded) == {"input_ids", "attention_mask"} and all(f.startswith("inputs/prefill/") for f in loaded.values())
    assert set(option(decode, "loadInputs")) == {"input_ids", "attention_mask", *PAST}
    for name, file in {**loaded, **option(decode, "loadInputs")}.items():
        assert (tmp_path / file).stat().st_size > 0 and file in manifest["files"], name
    assert "--int8" not in (tmp_path / tb.SCRIPT).read_text()  # TensorRT 11: strongly typed
    assert manifest["decoder"]["prompt_tokens"] == PROMPT and manifest["decoder"]["context"] == CONTEXT


def test_dla_is_refused_for_a_decoder(decoder, tmp_path: Path) -> None:
    path, inputs, shapes = decoder
    with pytest.raises(EdgekdError, match="DLA takes none"):
        tb.write_bundle(path, tmp_path, TensorRTConfig(trt_major=10, jetpack="6.2", dla_core=0, gpu_fallback=True), "jetson-orin-agx-dla", inputs, shapes)


def test_a_prompt_that_fills_the_context_is_refused(decoder) -> None:
    _, inputs, _ = decoder
    with pytest.raises(ValueError, match="shorter than its context"):
        decoder_shapes(inputs, CONTEXT, CONTEXT)
