"""The model files benchmarks/peers_real.py times, per architecture: the fp32 ONNX (optimum-onnx's
exporter on edgekd.examples.zoo's random-weight model folder; the decoder: benchmarks/decoder_exporters'
random Llama exported with its KV cache by edgekd.tasks.export), the named-input feeds of each timed
case (.npz), the MACs of each case (edgekd.analysis.graph), and the peers' quantized models:
optimum-onnx's ORTQuantizer with its preset for this CPU, NNCF INT8 for OpenVINO, and
onnxruntime-genai's builder for the decoder. Failures are returned with the step that failed."""
from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEQUENCE = 128  # DistilBERT's sequence (issue 16)
DECODER_FULL = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 2048}  # SmolLM-135M's shape
DECODER_TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 256}
# name -> (zoo architecture, kind); "decoder" is not from the zoo (onnxruntime-genai's builder needs a Llama)
MODELS = {"resnet18": ("resnet", "image"), "mobilenet_v2": ("mobilenet_v2", "image"), "efficientnet_b0": ("efficientnet", "image"),
          "vit_tiny": ("vit", "image"), "distilbert": ("distilbert", "text"), "decoder": ("llama", "decoder"),
          "decoder_tied": ("llama", "decoder")}  # the same Llama with its head tied to the token embedding, as SmolLM's is


@dataclass(frozen=True)
class PrepSettings:
    quick: bool  # tiny zoo sizes, short sequences
    workdir: Path
    calib_rows: int  # calibration rows for every static quantizer (the same generated rows for all)

    @property
    def size(self) -> str:
        return "tiny" if self.quick else "full"

    @property
    def sequence(self) -> int:
        return 16 if self.quick else SEQUENCE

    @property
    def decoder_config(self) -> dict[str, Any]:
        return DECODER_TINY if self.quick else DECODER_FULL


@dataclass
class Prepared:
    """One architecture's files. `cases`: timed case -> feed .npz (one case, "single", except the
    decoder's "prefill" and "decode"); `macs`: case -> MACs or the reason they are not known."""

    name: str
    kind: str
    hf_dir: Path
    model_class: str
    onnx: Path
    cases: dict[str, Path] = field(default_factory=dict)
    macs: dict[str, int | str] = field(default_factory=dict)
    calib: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""
    genai_feed: Path | None = None  # decoder: token ids for onnxruntime-genai (prompt, step, prefill)

    @property
    def transformer(self) -> bool:
        """ViT, DistilBERT and the decoder: optimum's dynamic preset, NNCF's model_type TRANSFORMER."""
        return self.kind in ("text", "decoder") or self.name.startswith("vit")


def _shapes(feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(array.shape) for name, array in feed.items()}


def case_macs(onnx_path: Path, feed: dict[str, np.ndarray]) -> int | str:
    """MACs of one inference at the feed's shapes (edgekd.analysis.graph.graph_costs), or why not."""
    import onnx

    from edgekd.analysis.graph import graph_costs
    from edgekd.graph.resolve import resolve_inputs

    try:
        model = onnx.load(str(onnx_path))
        inputs = resolve_inputs(model, onnx_path, overrides=_shapes(feed))
        return int(sum(c.macs for c in graph_costs(model, inputs=inputs).nodes))
    except Exception as exc:  # noqa: BLE001  (reported in the results as why MACs are missing)
        return f"not available: graph_costs failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"


def _generated(onnx_path: Path, shapes: dict[str, tuple[int, ...]], rows: int | None, seed: int) -> dict[str, np.ndarray]:
    """edgekd's generated feeds (edgekd.graph.feeds: ids in the vocabulary, masks of ones, normal images)."""
    import onnx

    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.resolve import resolve_inputs

    inputs = resolve_inputs(onnx.load(str(onnx_path), load_external_data=False), onnx_path, overrides=shapes)
    return make_feeds(inputs, rows, seed)


def prepare_zoo(name: str, s: PrepSettings) -> Prepared:
    from edgekd.examples import zoo

    arch_name, kind = MODELS[name]
    arch = zoo.ARCHS[arch_name]
    onnx_path = zoo.export(arch_name, s.workdir / "zoo", size=s.size, exporter="optimum")
    p = Prepared(name, kind, s.workdir / "zoo" / f"{arch_name}-{s.size}-hf", arch.model_class, onnx_path,
                 description=f"{arch.description or arch_name} ({s.size} zoo size), random weights, optimum-onnx export")
    shapes: dict[str, tuple[int, ...]] = {"input_ids": (1, s.sequence), "attention_mask": (1, s.sequence)} if kind == "text" else {}
    feed = _generated(onnx_path, shapes, None, 0)
    p.cases["single"] = s.workdir / f"{name}_feed.npz"
    np.savez(p.cases["single"], **feed)
    p.macs["single"] = case_macs(onnx_path, feed)
    p.calib = _generated(onnx_path, _shapes(feed) if shapes else {}, s.calib_rows, 1)
    return p


def prepare_decoder(s: PrepSettings, prompt: int, past: int, name: str = "decoder") -> Prepared:
    """The random Llama (benchmarks/decoder_exporters.make_llama), its with-past export, and the
    feeds of one prefill of `prompt` tokens and one decode step after `past` cached tokens;
    "decoder_tied": its head tied to the token embedding (SmolLM-135M's is)."""
    import onnxruntime as ort
    from decoder_exporters import feeds, make_llama
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekd.tasks import CausalLM
    from edgekd.tasks.export import export_hf

    tied = name == "decoder_tied"
    cfg, stem = {**s.decoder_config, "tie_word_embeddings": tied}, "llama-tied" if tied else "llama"
    hf_dir, onnx_path = s.workdir / f"{stem}-hf", s.workdir / f"{stem}-optimum" / "model.onnx"
    if not (hf_dir / "config.json").is_file():
        make_llama(hf_dir, cfg)
    if not onnx_path.is_file():
        model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
        export_hf(model, CausalLM(vocab_size=cfg["vocab_size"], max_length=prompt), onnx_path, 17, with_past=True)
    if not (onnx_path.parent / "config.json").is_file():  # beside the export, as optimum-cli writes it: edgekd compile reads it
        AutoConfig.from_pretrained(hf_dir).save_pretrained(onnx_path.parent)
    p = Prepared(name, "decoder", hf_dir, "LlamaForCausalLM", onnx_path,
                 description=(f"Llama, {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, vocab {cfg['vocab_size']} "
                              f"({'tiny' if s.quick else 'SmolLM-135M shape'}), {'head tied to the token embedding' if tied else 'untied head'}, "
                              "random weights, KV-cache export (edgekd.tasks.export)"))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for case, (length, cached) in {"prefill": (prompt, 0), "decode": (1, past)}.items():
        feed = feeds(session, length, cached, rng, cfg)
        p.cases[case] = s.workdir / f"{name}_{case}_feed.npz"
        np.savez(p.cases[case], **feed)
        p.macs[case] = case_macs(onnx_path, feed)
    ids = rng.integers(0, cfg["vocab_size"], (1, past + 1))
    p.genai_feed = s.workdir / f"{name}_genai_feed.npz"
    np.savez(p.genai_feed, prompt=ids[:, :past], step=ids[:, past:], prefill=ids[:, :prompt])
    return p


def optimum_preset(static: bool) -> tuple[Any, str]:
    """optimum-onnx's AutoQuantizationConfig preset for this CPU (/proc/cpuinfo flags): avx512_vnni,
    avx512 or avx2; per_channel as in optimum's examples."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from edgekd.common.toolchain import cpu_flags

    flags = cpu_flags()
    name = "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"
    return getattr(AutoQuantizationConfig, name)(is_static=static, per_channel=True), f"AutoQuantizationConfig.{name}(is_static={static}, per_channel=True)"


def optimum_quantized(p: Prepared, out: Path, static: bool) -> tuple[Path, dict[str, Any]]:
    """ORTQuantizer on the fp32 ONNX: static (AutoCalibrationConfig.minmax over the calibration rows,
    ORTQuantizer.fit) for CNNs, dynamic for transformers (ViT, DistilBERT, the decoder; issue 16)."""
    from datasets import Dataset
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig

    src = out / "optimum_in"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(p.onnx, src / p.onnx.name)
    quantizer = ORTQuantizer.from_pretrained(src, file_name=p.onnx.name)
    qconfig, preset = optimum_preset(static)
    recipe = {"preset": preset, "format": str(qconfig.format), "per_channel": qconfig.per_channel, "reduce_range": qconfig.reduce_range,
              "activations": f"{qconfig.activations_dtype} symmetric={qconfig.activations_symmetric}",
              "weights": f"{qconfig.weights_dtype} symmetric={qconfig.weights_symmetric}"}
    ranges = None
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints progress
        if static:
            dataset = Dataset.from_dict({k: list(v) for k, v in p.calib.items()}).with_format("numpy")
            ranges = quantizer.fit(dataset=dataset, calibration_config=AutoCalibrationConfig.minmax(dataset),
                                   onnx_augmented_model_name=out / "optimum_augmented.onnx")
            recipe["calibration"] = f"AutoCalibrationConfig.minmax, ORTQuantizer.fit on {len(dataset)} generated rows (batch 1)"
        save_dir = quantizer.quantize(qconfig, save_dir=out / "optimum_out", calibration_tensors_range=ranges)
    return Path(save_dir) / f"{p.onnx.stem}_quantized.onnx", recipe


def openvino_int8(p: Prepared, out: Path) -> tuple[Path, str]:
    """NNCF INT8 IR: nncf.quantize (edgekd.backends.openvino.quantize.quantize_nncf: NNCF's performance
    preset for CNNs, model_type TRANSFORMER for ViT/BERT) over the calibration rows; decoders:
    nncf.compress_weights (its INT8 weight-only default, the documented path for LLMs)."""
    from edgekd.backends.openvino.quantize import NncfRecipe, quantize_nncf

    xml = out / "openvino_int8.xml"
    out.mkdir(parents=True, exist_ok=True)
    if p.kind == "decoder":
        import nncf
        import openvino as ov

        ov.save_model(nncf.compress_weights(ov.Core().read_model(str(p.onnx))), str(xml))
        return xml, "nncf.compress_weights defaults (INT8_ASYM weights, float activations), saved with ov.save_model"
    _, how = quantize_nncf(p.onnx, p.calib, xml, NncfRecipe(transformer=p.transformer))
    return xml, how


def genai_models(p: Prepared, out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """onnxruntime-genai's builder (-e cpu) at fp32 and int4 (benchmarks/decoder_exporters.genai_variants)."""
    from decoder_exporters import genai_variants

    out.mkdir(parents=True, exist_ok=True)
    paths, failures = genai_variants(p.hf_dir, out)
    return {name: path.parent for name, path in paths.items()}, failures
