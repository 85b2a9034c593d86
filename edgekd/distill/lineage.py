"""Who taught whom: the teacher's identity (content hash) and the distillation generation of a build.

A teacher trained from labels is generation 0; a student distilled from a generation-g teacher is
generation g + 1. Every teacher-assistant link counts as one distillation, an ensemble is as old as
its oldest member, and a teacher file made by edgekd says its own generation (ONNX metadata_props
`edgekd.generation`, or the `edgekd.graph.provenance` JSON in a safetensors header, which a build writes
into student.safetensors). A file that does not say is taken as generation 0, and reported so.

Everything here comes from the project config and the teacher files it names, never from absolute
paths or clocks, so what goes into cached artefacts (notes, weights metadata, ONNX props) depends only
on what the stage cache keys hold."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.common.fsutil import sha256_bytes, sha256_file

if TYPE_CHECKING:
    from edgekd.config.models import TeacherSpec
    from edgekd.stages.context import Context

GENERATION = "edgekd.generation"  # the key in ONNX metadata_props and in the safetensors provenance JSON
WEIGHTS_KEY = "edgekd.graph.provenance"  # the one safetensors header key: a header with several keys is not byte-stable
TRAINED_HERE = "trained from labels in this build"
LOGITS_UNKNOWN = "unknown, assumed 0: logits file format 1 carries no generation"
API_UNKNOWN = "unknown, assumed 0: an API teacher's responses say nothing of how its model was trained"
DECAY_FROM = 2  # the first generation the build warns about


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


@functools.lru_cache(maxsize=64)
def _facts(path: str, size: int, mtime_ns: int, kind: str) -> tuple[str, str | None]:
    """sha256 of a teacher file and the generation it declares (None: it declares none)."""
    file = Path(path)
    if kind == "onnx":
        from edgekd.graph.provenance import read_onnx_props

        declared = read_onnx_props(file).get(GENERATION)
    elif kind == "torch":  # a safetensors checkpoint
        from edgekd.distill.weights import read_metadata

        try:
            declared = json.loads(read_metadata(file).get(WEIGHTS_KEY, "{}")).get(GENERATION)
        except (json.JSONDecodeError, AttributeError):
            declared = None
    else:
        declared = None
    return sha256_file(file), declared


def file_facts(path: Path, kind: str) -> tuple[str, str | None]:
    """sha256 of a teacher file of `kind` (torch checkpoint, onnx, logits) and the generation it declares."""
    stat = path.stat()
    return _facts(str(path), stat.st_size, stat.st_mtime_ns, kind)


def _generation(declared: str | None, where: str) -> tuple[int, str]:
    if declared is None:
        return 0, f"unknown, assumed 0: no {GENERATION} in {where}"
    if not declared.isdigit():
        return 0, f"unknown, assumed 0: {GENERATION} in {where} is {declared!r}, not a whole number"
    return int(declared), f"{GENERATION} in {where}"


def _entry(kind: str, what: str, file: Path | None, sha256: str, sha256_of: str, generation: tuple[int, str]) -> dict[str, Any]:
    entry = {"kind": kind, "what": what, "sha256": sha256, "sha256_of": sha256_of,
             "generation": generation[0], "generation_source": generation[1]}
    return entry | ({"file": str(file)} if file is not None else {})


def _combined(kind: str, what: str, members: list[dict[str, Any]]) -> dict[str, Any]:
    sha = sha256_bytes(canonical([[m["weight"], m["sha256"]] for m in members]))
    oldest = max(m["generation"] for m in members)
    return {**_entry(kind, what, None, sha, "the members' [weight, sha256] pairs (canonical JSON)",
                     (oldest, "the highest generation among the members")), "members": members}


def _folder(ctx: Context, relative: str, key: str) -> dict[str, Any]:
    """A Hugging Face model folder used as it is: its files' hashes, and the generation its
    model.safetensors declares (edgekd writes it there when it saves a student as a folder)."""
    from edgekd.distill.hf_models import folder_digest

    folder = ctx.resolve_path(relative)
    weights = folder / "model.safetensors"
    declared = file_facts(weights, "torch")[1] if weights.is_file() else None
    return _entry("torch", f"Hugging Face model folder {relative}", folder, sha256_bytes(canonical(folder_digest(folder))),
                  "the folder's config, weight and tokenizer files (canonical JSON of their sha256)",
                  _generation(declared, f"{key}.hf.path's model.safetensors metadata"))


def _spec(ctx: Context, spec: TeacherSpec, key: str) -> dict[str, Any]:
    from edgekd.distill.sources import project_file

    if spec.kind == "torch" and spec.train is not None:
        recipe = {"factory": spec.factory, "args": spec.args, "train": spec.train.model_dump(), "data_sha256": ctx.data_sha256}
        return _entry("torch", f"torch module {spec.factory}({spec.args}), {TRAINED_HERE}", None, sha256_bytes(canonical(recipe)),
                      "factory, args, [teacher.train] settings and data sha256 (canonical JSON): the teacher is trained in the build",
                      (0, TRAINED_HERE))
    if spec.kind == "torch" and spec.checkpoint is None and spec.hf is not None and spec.hf.path is not None:
        return _folder(ctx, spec.hf.path, key)
    if spec.kind == "torch":
        path = project_file(ctx, spec.checkpoint, f"{key}.checkpoint")
        sha, declared = file_facts(path, "torch")
        return _entry("torch", f"torch module {spec.factory}({spec.args}), checkpoint {spec.checkpoint}", path, sha,
                      "the checkpoint file", _generation(declared, "the checkpoint's safetensors metadata"))
    if spec.kind == "onnx":
        path = project_file(ctx, spec.onnx, f"{key}.onnx")
        sha, declared = file_facts(path, "onnx")
        return _entry("onnx", f"ONNX model {spec.onnx}", path, sha, "the ONNX file", _generation(declared, "the ONNX metadata_props"))
    if spec.kind == "api":
        path = project_file(ctx, spec.responses, f"{key}.responses")
        return _entry("api", f"API responses {spec.responses}", path, file_facts(path, "api")[0], "the responses file",
                      (0, API_UNKNOWN))
    files = []
    for name, weight in zip(spec.logits, spec.logit_weights or [1.0] * len(spec.logits)):
        path = project_file(ctx, name, f"{key}.logits")
        files.append({**_entry("logits", f"logits file {name}", path, file_facts(path, "logits")[0], "the logits file", (0, LOGITS_UNKNOWN)),
                      "weight": weight})
    if len(files) == 1:
        return {k: v for k, v in files[0].items() if k != "weight"}
    return _combined("logits", f"{len(files)} logits files (weighted mean of probabilities)", files)


def teacher(ctx: Context) -> dict[str, Any]:
    """The configured teacher: kind, what, sha256 (and of what), generation (and where it was read)."""
    cfg = ctx.project.teacher
    if cfg.kind != "ensemble":
        return _spec(ctx, cfg, "teacher")
    members = [{**_spec(ctx, m, f"teacher.members[{i}]"), "weight": m.weight} for i, m in enumerate(cfg.members)]
    return _combined("ensemble", f"ensemble of {len(members)} teachers (weighted mean of probabilities)", members)


def _parent(role: str, source: dict[str, Any]) -> dict[str, Any]:
    return {"role": role, "what": source["what"], "sha256": source["sha256"], "generation": source["generation"],
            "generation_source": source["generation_source"]}


def lineage(ctx: Context, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The student's generation, its direct parents and the whole chain teacher -> assistants -> student."""
    source = source or teacher(ctx)
    first = source["generation"]
    links = ctx.project.teacher.assistants
    chain = [{"role": "teacher", "what": source["what"], "generation": first}]
    chain += [{"role": f"assistant {i}", "what": f"torch module {a.factory}({a.args}), distilled in the build", "generation": first + i}
              for i, a in enumerate(links, start=1)]
    generation = first + len(links) + 1
    chain.append({"role": "student", "what": "the student of this build", "generation": generation})
    if links:
        last = chain[-2]
        parents = [{"role": last["role"], "what": last["what"], "sha256": None, "generation": last["generation"],
                    "generation_source": f"{len(links)} distillation(s) after the generation-{first} teacher"}]
    elif "members" in source:
        parents = [_parent(f"teacher member {i}", m) for i, m in enumerate(source["members"])]
    else:
        parents = [_parent("teacher", source)]
    return {"generation": generation, "teacher_generation": first, "parents": parents, "chain": chain}


def warnings(lin: dict[str, Any]) -> list[str]:
    """The generation-decay warning, from generation DECAY_FROM on."""
    if lin["generation"] < DECAY_FROM:
        return []
    path = " -> ".join(f"{link['role']} (generation {link['generation']})" for link in lin["chain"])
    return [f"generation {lin['generation']} student: distilled from a teacher that was itself distilled ({path}); quality tends "
            "to decay over generations of distillation, so compare this student with a generation-0 teacher trained from labels, "
            "not only with its direct teacher"]
