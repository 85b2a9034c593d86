"""The x86 compile's onnxruntime-genai folders: genai_config.json beside the engine (engine/, the graph as
this host's ONNX Runtime optimized it) and beside the bundle's portable graph (bundle/), so that
`og.Model(folder)` generates with edgekd's engine (edgekd.deploy.genai_folder says what is read from
where). The figures the graph does not give come from the build: the context length from the model's
declared positions, the query heads of an unfused attention and the special token ids from the model's
transformers config, the token ids of a distillation build from its tokenizer."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.deploy.genai_folder import GENAI_CONFIG, NotGenai, genai_layout, write_genai_config

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context

_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _token_ids(ctx: Context) -> dict[str, Any]:
    """bos/eos/pad ids: the build's tokenizer's where it has one (what the engine's token ids mean), else the model config's."""
    tokenizer = getattr(getattr(ctx, "data_source", None), "tokenizer", None)
    found: dict[str, Any] = {}
    for source in (tokenizer, ctx.model_config):
        for key in _TOKENS:
            value = getattr(source, key, None) if source is not None else None
            if key not in found and (isinstance(value, int) or (isinstance(value, list) and value and all(isinstance(v, int) for v in value))):
                found[key] = value
    return found


def write_genai_folders(ctx: Context, model: Path, folders: list[tuple[Path, str, int]]) -> list[str]:
    """genai_config.json into each (folder, file name of the model there, intra-op threads: 0 leaves genai's
    default) of `folders` for the decoder graph `model`; a note saying what was written, or why not."""
    heads = getattr(ctx.model_config, "num_attention_heads", None) or getattr(ctx.model_config, "n_head", None)
    try:
        layout = genai_layout(model, {i.role: i.name for i in ctx.model_inputs.inputs}, ctx.max_positions, heads if isinstance(heads, int) else None,
                              0, _token_ids(ctx))
    except NotGenai as exc:
        return [f"no onnxruntime-genai folder ({GENAI_CONFIG}) written: {exc}"]
    for folder, filename, threads in folders:
        decoder = layout.config["model"]["decoder"]
        session = {**decoder["session_options"], **({"intra_op_num_threads": threads} if threads else {})}
        config = {**layout.config, "model": {**layout.config["model"], "decoder": {**decoder, "filename": filename, "session_options": session}}}
        write_genai_config(folder, type(layout)(config, layout.shared))
    where = "; ".join(f"{folder.name}/ ({f'{threads} intra-op threads' if threads else 'genai default threads'})"
                      for folder, _, threads in folders)
    return [f"{layout.describe()}; in {where}: onnxruntime_genai.Model(folder) generates with the engine"]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def add_tokenizer(folders: list[Path], sources: list[Path]) -> list[str]:
    """The tokenizer files of the first of `sources` that has a tokenizer.json (the build's saved tokenizer, the
    folder of the model `edgekd compile` was given) into each of `folders` that holds a genai_config.json, where
    onnxruntime_genai.Tokenizer(model) reads them; a note saying so."""
    from edgekd.common.fsutil import atomic_copy

    targets = [f for f in folders if (f / GENAI_CONFIG).is_file()]
    source = next((s for s in sources if (s / TOKENIZER_FILES[0]).is_file()), None)
    if not targets or source is None:
        return []
    for folder in targets:
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                atomic_copy(source / name, folder / name)
    return [f"tokenizer files of {source.name}/ copied beside {GENAI_CONFIG} in {' and '.join(f.name + '/' for f in targets)}: "
            "onnxruntime_genai.Tokenizer(model) encodes and decodes text with them"]
