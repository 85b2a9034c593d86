"""edgekd/graph/provenance.py and edgekd/distill/lineage.py: edgekd.* metadata_props in every ONNX file of a real
build, the stamping itself (graph and other props kept, manifests re-hashed), and generation counting
for every kind of teacher."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import write
from onnx import TensorProto, helper

from edgekd.common.fsutil import sha256_file
from edgekd.distill import lineage
from edgekd.distill import provenance as build_provenance
from edgekd.graph import provenance

ROOT = Path(__file__).parents[2]
EXAMPLE = (ROOT / "edgekd" / "examples" / "digits.toml").read_text()
TEACHER_BLOCK = EXAMPLE[EXAMPLE.index("[teacher]"):EXAMPLE.index("[student]")]
KEYS = {"edgekd.version", "edgekd.producer", "edgekd.generation", "edgekd.teacher_kind", "edgekd.teacher_sha256",
        "edgekd.data_sha256", "edgekd.distill"}


def _edgekd_props(path: Path) -> dict[str, str]:
    return {k: v for k, v in provenance.read_onnx_props(path).items() if k.startswith("edgekd.")}


def _tiny_model(path: Path, props: dict[str, str] | None = None) -> Path:
    """A real one-node ONNX model (Identity over [N, 1, 8, 8])."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def _context(tmp_path: Path, teacher: str, extra: str = ""):
    from edgekd.api import resolve_inputs
    from edgekd.config.loading import ConfigSearch

    project = write(tmp_path / "edgekd.toml", EXAMPLE.replace(TEACHER_BLOCK, teacher + "\n") + extra)
    return resolve_inputs("x86", "ci", project, ConfigSearch())


# ------------------------------------------------------------------ a real build


@pytest.mark.slow
def test_every_onnx_of_a_build_carries_the_provenance(cold_build):
    assert cold_build.code == 0, cold_build.err
    out, report = cold_build.out_dir, cold_build.report
    models = sorted(out.rglob("*.onnx"))
    compiled = [m for m in models if m.parent.name in ("engine", "bundle")]
    assert {"student.onnx", "student_int8.onnx"} <= {m.name for m in models} and any(m.parent.name == "engine" for m in compiled)
    for model in models:
        props = _edgekd_props(model)
        target = model in compiled
        assert set(props) == KEYS | ({"edgekd.target", "edgekd.runtime"} if target else set()), model
        assert props["edgekd.generation"] == "1"
        assert props["edgekd.teacher_sha256"] == report["provenance"]["teacher"]["sha256"]
        assert props["edgekd.data_sha256"] == report["provenance"]["data"]["sha256"]
        assert json.loads(props["edgekd.distill"]) == report["provenance"]["distill"]
        if target:
            assert props["edgekd.target"] == report["target"]["name"] and props["edgekd.runtime"] == report["target"]["runtime"]
    engine = json.loads((out / "engine.json").read_text())
    assert all(sha256_file(out / name) == sha for name, sha in engine["files"].items())  # stamped before they were hashed
    int8 = provenance.read_onnx_props(out / "student_int8.onnx")
    assert int8["onnx.quant.pre_process"] == "onnxruntime.quant"  # onnxruntime's own props are kept


@pytest.mark.slow
def test_weights_carry_the_generation(cold_build):
    from edgekd.distill.weights import read_metadata

    student = json.loads(read_metadata(cold_build.out_dir / "student.safetensors")[lineage.WEIGHTS_KEY])
    teacher = json.loads(read_metadata(cold_build.out_dir / "teacher.safetensors")[lineage.WEIGHTS_KEY])
    assert student["edgekd.generation"] == "1" and teacher["edgekd.generation"] == "0"
    assert student == _edgekd_props(cold_build.out_dir / "student.onnx") | {"edgekd.producer": student["edgekd.producer"]}


@pytest.mark.slow
def test_props_are_deterministic(cold_build, tmp_path):
    """What the export stage stamped equals what the props give now: no clock, no path."""
    ctx = _context(tmp_path, TEACHER_BLOCK)
    assert build_provenance.props(ctx, "export") == _edgekd_props(cold_build.out_dir / "student.onnx")


@pytest.mark.slow
def test_an_edgekd_onnx_teacher_says_its_generation(cold_build, tmp_path):
    ctx = _context(tmp_path, f'[teacher]\nkind = "onnx"\nonnx = "{cold_build.out_dir / "student.onnx"}"\n')
    source = lineage.teacher(ctx)
    assert source["generation"] == 1 and source["generation_source"] == "edgekd.generation in the ONNX metadata_props"
    lin = lineage.lineage(ctx)
    assert lin["generation"] == 2 and lineage.warnings(lin) and "decay" in lineage.warnings(lin)[0]


# ------------------------------------------------------------------ stamping


def test_stamp_keeps_the_graph_and_other_props(tmp_path):
    import onnxruntime as ort

    path = _tiny_model(tmp_path / "m.onnx", {"onnx.infer": "onnxruntime.quant", "edgekd.stale": "from before"})
    graph = onnx.load(str(path)).graph.SerializeToString()
    provenance.stamp_onnx(path, {"edgekd.generation": "2", "edgekd.version": "x"})
    model = onnx.load(str(path))
    assert model.graph.SerializeToString() == graph
    assert [(p.key, p.value) for p in model.metadata_props] == [("onnx.infer", "onnxruntime.quant"), ("edgekd.generation", "2"),
                                                                ("edgekd.version", "x")]
    stamped = path.read_bytes()
    provenance.stamp_onnx(path, {"edgekd.version": "x", "edgekd.generation": "2"})
    assert path.read_bytes() == stamped  # same props: the file is left as it is
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["edgekd.generation"] == "2"
    x = np.ones((1, 1, 8, 8), np.float32)
    np.testing.assert_array_equal(session.run(None, {"input": x})[0], x)


def test_stamped_inputs_are_copies(tmp_path):
    original = _tiny_model(tmp_path / "student_int8.onnx")
    before = original.read_bytes()
    other = write(tmp_path / "engine.json", "{}")
    with provenance.stamped_inputs({"student_int8.onnx": original, "engine.json": other}, {"edgekd.target": "t"}) as stamped:
        assert stamped["engine.json"] == other and stamped["student_int8.onnx"].name == "student_int8.onnx"
        assert _edgekd_props(stamped["student_int8.onnx"]) == {"edgekd.target": "t"}
        copy = stamped["student_int8.onnx"]
    assert original.read_bytes() == before and not copy.exists()


def test_restamp_outputs_stamps_what_lacks_props_and_rehashes(tmp_path):
    values = {"edgekd.generation": "1", "edgekd.target": "t"}
    for folder in ("engine", "bundle"):
        (tmp_path / folder).mkdir()
    engine = _tiny_model(tmp_path / "engine" / "engine.onnx")
    bundled = _tiny_model(tmp_path / "bundle" / "model.onnx", values)  # already stamped: left alone
    ctx_model = _tiny_model(tmp_path / "bundle" / "m_ctx.onnx")
    write(tmp_path / "bundle" / "bundle.json", json.dumps({"files": {"model.onnx": sha256_file(bundled), "m_ctx.onnx": sha256_file(ctx_model)}}) + "\n")
    write(tmp_path / "engine.json", json.dumps({"runtime": "r", "files": {
        rel: sha256_file(tmp_path / rel) for rel in ("engine/engine.onnx", "bundle/model.onnx", "bundle/m_ctx.onnx", "bundle/bundle.json")}}))
    bundled_bytes = bundled.read_bytes()
    assert provenance.restamp_outputs(tmp_path, values) == ["bundle/m_ctx.onnx", "engine/engine.onnx"]
    assert bundled.read_bytes() == bundled_bytes
    for model in (engine, ctx_model):
        assert _edgekd_props(model) == values
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert all(sha256_file(tmp_path / "bundle" / n) == sha for n, sha in bundle["files"].items())
    manifest = json.loads((tmp_path / "engine.json").read_text())
    assert manifest["runtime"] == "r" and all(sha256_file(tmp_path / n) == sha for n, sha in manifest["files"].items())
    assert provenance.restamp_outputs(tmp_path, values) == []


# ------------------------------------------------------------------ generation counting


def test_teacher_trained_here_is_generation_0(tmp_path):
    ctx = _context(tmp_path, TEACHER_BLOCK)
    lin = lineage.lineage(ctx)
    assert (lin["teacher_generation"], lin["generation"]) == (0, 1) and lineage.warnings(lin) == []
    assert [link["role"] for link in lin["chain"]] == ["teacher", "student"]


def test_files_without_a_generation_are_assumed_0(tmp_path):
    from edgekd.distill.logits_file import write_logits_file

    ctx = _context(tmp_path, f'[teacher]\nkind = "onnx"\nonnx = "{_tiny_model(tmp_path / "t.onnx")}"\n')
    source = lineage.teacher(ctx)
    assert source["generation"] == 0 and source["generation_source"].startswith("unknown, assumed 0")
    assert source["sha256"] == sha256_file(tmp_path / "t.onnx")
    from edgekd.data.sources import read_split
    from edgekd.distill.streaming import train_split_sha256

    labels = read_split(ctx.data_source, "train")["labels"]
    logits = write_logits_file(np.eye(10, dtype=np.float32)[labels] * 5, tmp_path / "l.npz", 3, train_split_sha256(ctx.data_source), "party")
    assert logits.num_samples == len(labels)
    ctx = _context(tmp_path, f'[teacher]\nkind = "logits"\nlogits = ["{tmp_path / "l.npz"}"]\n')
    assert lineage.teacher(ctx)["generation_source"] == lineage.LOGITS_UNKNOWN


def test_checkpoint_generation_is_read_from_the_safetensors_header(tmp_path):
    import torch

    from edgekd.distill.weights import save_weights

    module = torch.nn.Linear(2, 2)
    save_weights(module, tmp_path / "g3.safetensors", {lineage.WEIGHTS_KEY: json.dumps({"edgekd.generation": "3"})})
    save_weights(module, tmp_path / "bad.safetensors", {lineage.WEIGHTS_KEY: json.dumps({"edgekd.generation": "two"})})
    block = '[teacher]\nfactory = "edgekd.examples.digits:student"\nargs = {{ width = 8 }}\ncheckpoint = "{}"\n'
    source = lineage.teacher(_context(tmp_path, block.format(tmp_path / "g3.safetensors")))
    assert source["generation"] == 3 and "safetensors metadata" in source["generation_source"]
    bad = lineage.teacher(_context(tmp_path, block.format(tmp_path / "bad.safetensors")))
    assert bad["generation"] == 0 and "not a whole number" in bad["generation_source"]


def test_ensemble_is_its_highest_member_and_assistants_count(tmp_path):
    old = _tiny_model(tmp_path / "old.onnx", {"edgekd.generation": "2"})
    new = _tiny_model(tmp_path / "new.onnx")
    ensemble = (f'[teacher]\nkind = "ensemble"\n[[teacher.members]]\nkind = "onnx"\nonnx = "{old}"\nweight = 2.0\n'
                f'[[teacher.members]]\nkind = "onnx"\nonnx = "{new}"\n')
    ctx = _context(tmp_path, ensemble)
    lin = lineage.lineage(ctx)
    assert (lin["teacher_generation"], lin["generation"]) == (2, 3)
    assert [(p["role"], p["generation"]) for p in lin["parents"]] == [("teacher member 0", 2), ("teacher member 1", 0)]
    assistants = TEACHER_BLOCK + ('[[teacher.assistants]]\nfactory = "edgekd.examples.digits:student"\nargs = { width = 16 }\n'
                                  '[[teacher.assistants]]\nfactory = "edgekd.examples.digits:student"\nargs = { width = 12 }\n')
    lin = lineage.lineage(_context(tmp_path, assistants))
    assert [link["generation"] for link in lin["chain"]] == [0, 1, 2, 3]
    assert lin["generation"] == 3 and lin["parents"][0]["role"] == "assistant 2" and lin["parents"][0]["sha256"] is None
    assert "decay" in lineage.warnings(lin)[0]
