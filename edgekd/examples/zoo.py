"""Reference architectures users deploy, built from Hugging Face `transformers` configs with random
weights (nothing is downloaded), saved as local model folders and exported the two ways users
export them: optimum-onnx's exporter (`optimum.exporters.onnx.main_export` on the local folder,
which also writes the model's config.json beside model.onnx) and `torch.onnx.export`.

Two sizes per architecture: "tiny" (a few layers, narrow: for tests) and "full" (the published
architecture's real size: for benchmarks). Random weights are fine for latency and op support; the
numbers they produce mean nothing for accuracy. BatchNorm statistics are set from generated images
(as training would set them) so that activations keep their scale through the network and quantized
graphs can be compared with float ones at all.

    from edgekd.examples import zoo
    path = zoo.export("bert", tmp_dir, size="tiny", exporter="optimum")   # -> tmp_dir/bert-optimum/model.onnx

Needs `transformers` and, for the optimum exporter, `optimum-onnx` (`pip install 'edgekd[hf]'`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import quiet, require

SEED = 0
NORM_BATCHES = 4  # batches of 2 generated images that set BatchNorm statistics (_settle_batch_norms)
OPSET = 18
EXPORTERS = ("optimum", "torch")


@dataclass(frozen=True)
class Arch:
    """One architecture: its transformers config class and model class, the optimum task, and the
    config arguments per size."""

    config_class: str
    model_class: str
    task: str  # optimum's task name
    tiny: dict[str, Any]
    full: dict[str, Any] = field(default_factory=dict)
    kind: str = "image"  # image | text | decoder
    description: str = ""


_TEXT = {"vocab_size": 1000, "max_position_embeddings": 256}
ARCHS: dict[str, Arch] = {
    "resnet": Arch("ResNetConfig", "ResNetForImageClassification", "image-classification",
                   {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic",
                    "num_labels": 10, "image_size": 64},
                   {"embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [2, 2, 2, 2],
                    "layer_type": "basic", "num_labels": 1000, "image_size": 224},  # ResNetConfig has no image_size: the torch export's input size
                   description="ResNet-18 (full): basic blocks, depths 2-2-2-2"),
    "mobilenet_v2": Arch("MobileNetV2Config", "MobileNetV2ForImageClassification", "image-classification",
                         {"depth_multiplier": 0.35, "image_size": 64, "num_labels": 10},
                         {"depth_multiplier": 1.0, "image_size": 224, "num_labels": 1001},
                         description="MobileNetV2 1.0 at 224 (full)"),
    "efficientnet": Arch("EfficientNetConfig", "EfficientNetForImageClassification", "image-classification",
                         {"width_coefficient": 0.25, "depth_coefficient": 0.25, "image_size": 64, "hidden_dim": 320,
                          "num_labels": 10},
                         {"width_coefficient": 1.0, "depth_coefficient": 1.0, "image_size": 224, "hidden_dim": 1280,
                          "dropout_rate": 0.2, "num_labels": 1000},
                         description="EfficientNet-B0 (full): width 1.0, depth 1.0, 224"),
    "vit": Arch("ViTConfig", "ViTForImageClassification", "image-classification",
                {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64, "num_labels": 10},
                {"image_size": 224, "patch_size": 16, "hidden_size": 192, "num_hidden_layers": 12,
                 "num_attention_heads": 3, "intermediate_size": 768, "num_labels": 1000},
                description="ViT-Tiny/16 at 224 (full): 12 layers, hidden 192, 3 heads"),
    "bert": Arch("BertConfig", "BertForSequenceClassification", "text-classification",
                 {**_TEXT, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                  "num_labels": 3},
                 {"num_labels": 2}, kind="text", description="BERT-base (full): 12 layers, hidden 768"),
    "distilbert": Arch("DistilBertConfig", "DistilBertForSequenceClassification", "text-classification",
                       {**_TEXT, "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "num_labels": 3},
                       {"num_labels": 2}, kind="text", description="DistilBERT-base (full): 6 layers, hidden 768"),
    "gpt2": Arch("GPT2Config", "GPT2LMHeadModel", "text-generation-with-past",
                 {"vocab_size": 1000, "n_positions": 256, "n_embd": 32, "n_layer": 2, "n_head": 2},
                 {"n_layer": 6}, kind="decoder", description="GPT-2 with 6 layers (full; distilgpt2's shape), KV cache"),
}


def build(name: str, size: str = "tiny") -> Any:
    """The transformers model for `name` at `size`, random weights seeded with SEED, in eval mode."""
    transformers = require("transformers", "building reference architectures")
    torch = require("torch", "building reference architectures")
    arch = ARCHS[name]
    args = arch.tiny if size == "tiny" else arch.full
    config = getattr(transformers, arch.config_class)(**args)
    torch.manual_seed(SEED)
    model = getattr(transformers, arch.model_class)(config)
    _settle_batch_norms(name, model)
    return model.eval()


def _settle_batch_norms(name: str, model: Any) -> None:
    """Give every BatchNorm torch's initial scale and shift, and set its running statistics from
    generated images (train-mode forwards of NORM_BATCHES batches, cumulative average), as training
    leaves them. With transformers' initial statistics (mean 0, variance 1), small random conv
    weights (and, in EfficientNet, scales drawn from N(0, 0.02)) activations shrink layer after layer:
    a random MobileNetV2's logits were ~1e-22 and EfficientNet-B0's ~1e-35, which no INT8 grid holds
    (NNCF's INT8 MobileNetV2 gave all zeros) and no float comparison means anything. Weights stay random."""
    torch = require("torch", "building reference architectures")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_parameters()  # torch's init: scale 1, shift 0 (transformers' EfficientNet draws the scale from N(0, 0.02))
        norm.momentum = None  # cumulative moving average over the batches
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    with torch.no_grad():
        for _ in range(NORM_BATCHES):
            inputs, _ = _dummy(name, model)
            model(**{k: torch.randn(v.shape, generator=generator) for k, v in inputs.items()})
    for norm in norms:
        norm.momentum = 0.1  # the torch default, as a trained model's config has it


def save(name: str, folder: Path, size: str = "tiny") -> Path:
    """The model saved as a local Hugging Face folder (config.json + weights): what from_pretrained
    and optimum's exporter read."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "config.json").is_file():
        build(name, size).save_pretrained(str(folder))
    return folder


def _export_optimum(name: str, hf_dir: Path, out_dir: Path) -> Path:
    require("optimum.exporters.onnx", "exporting with optimum-onnx (pip install 'edgekd[hf]')")
    from optimum.exporters.onnx import main_export

    with quiet():
        main_export(str(hf_dir), output=str(out_dir), task=ARCHS[name].task, opset=OPSET, local_files_only=True,
                    library_name="transformers", do_validation=False)
    return out_dir / "model.onnx"


def _dummy(name: str, model: Any) -> tuple[dict[str, Any], dict[str, dict[int, str]]]:
    """Example inputs for torch.onnx.export and their dynamic axes, as a user writes them."""
    torch = require("torch", "torch.onnx export")
    cfg, arch = model.config, ARCHS[name]
    if arch.kind == "image":
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        return {"pixel_values": torch.randn(2, cfg.num_channels, size, size)}, {"pixel_values": {0: "batch"}}
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    axes = {0: "batch", 1: "sequence"}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, {"input_ids": axes, "attention_mask": axes}


def _logits_module(model: Any, names: list[str]) -> Any:
    """`model` as torch.onnx sees it in user export scripts: positional tensors in, logits out."""
    torch = require("torch", "torch.onnx export")

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(names, tensors))).logits

    return Logits().eval()


def _export_torch(name: str, model: Any, out_dir: Path) -> Path:
    """torch.onnx.export with torch 2.13's default exporter (torch.export-based) of a module that
    returns the logits, with a dynamic batch (and sequence) axis; decoders export without a cache."""
    torch = require("torch", "torch.onnx export")
    from torch.export import Dim

    inputs, axes = _dummy(name, model)
    model.config.use_cache = False
    dims = {"batch": Dim("batch", min=1, max=1024), "sequence": Dim("sequence", min=2, max=model.config.max_position_embeddings
                                                                   if hasattr(model.config, "max_position_embeddings") else 256)}
    shapes = tuple({axis: dims[label] for axis, label in axes[n].items()} for n in inputs)
    path = out_dir / "model.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet(), torch.no_grad():
        torch.onnx.export(_logits_module(model, list(inputs)), tuple(inputs.values()), str(path), input_names=list(inputs),
                          output_names=["logits"], dynamic_shapes=(shapes,), opset_version=OPSET, external_data=False)
    return path


def export(name: str, root: Path, size: str = "tiny", exporter: str = "optimum") -> Path:
    """Build `name` at `size`, save it under `root/<name>-<size>-hf`, export it with `exporter`
    into `root/<name>-<size>-<exporter>/model.onnx` (re-used when it exists) and return that path."""
    if name not in ARCHS:
        raise KeyError(f"unknown architecture {name!r}; one of {', '.join(ARCHS)}")
    if exporter not in EXPORTERS:
        raise KeyError(f"unknown exporter {exporter!r}; one of {', '.join(EXPORTERS)}")
    out_dir = root / f"{name}-{size}-{exporter}"
    path = out_dir / "model.onnx"
    if path.is_file():
        return path
    if exporter == "optimum":
        return _export_optimum(name, save(name, root / f"{name}-{size}-hf", size), out_dir)
    return _export_torch(name, build(name, size), out_dir)
