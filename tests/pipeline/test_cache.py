"""edgekd/pipeline/cache.py: entries appear whole (after staging with a manifest) or not at all."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd.pipeline.cache import MANIFEST, StageCache, default_root, make_key


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StageCache:
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))
    return StageCache(default_root())


def leftovers(cache: StageCache) -> list[Path]:
    staging = cache.root / ".staging"
    return list(staging.iterdir()) if staging.is_dir() else []


def test_default_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c"
    monkeypatch.delenv("EDGEKD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "edgekd"


def test_successful_staging_commits_entry(cache: StageCache) -> None:
    with cache.staging("export", "k1") as scratch:
        (scratch / "student.onnx").write_bytes(b"onnx")
        (scratch / MANIFEST).write_text(json.dumps({"metrics": {"a": 1}}))
        assert cache.lookup("export", "k1") is None  # not visible while staging
        assert not cache.entry("export", "k1").exists()
    entry = cache.entry("export", "k1")
    assert entry == cache.root / "export" / "k1"
    assert (entry / "student.onnx").read_bytes() == b"onnx"
    assert cache.lookup("export", "k1") == {"metrics": {"a": 1}}
    assert leftovers(cache) == []


def test_staging_without_manifest_commits_nothing(cache: StageCache) -> None:
    with pytest.raises(RuntimeError, match="stage export finished without writing its manifest"):
        with cache.staging("export", "k1") as scratch:
            (scratch / "student.onnx").write_bytes(b"onnx")
    assert not cache.entry("export", "k1").exists()
    assert cache.lookup("export", "k1") is None
    assert leftovers(cache) == []


def test_exception_in_stage_removes_scratch_and_propagates(cache: StageCache) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with cache.staging("distill", "k2") as scratch:
            (scratch / MANIFEST).write_text("{}")
            (scratch / "student.safetensors").write_bytes(b"half")
            raise Boom
    assert not cache.entry("distill", "k2").exists()
    assert leftovers(cache) == []


def test_keyboard_interrupt_also_cleans_up(cache: StageCache) -> None:
    with pytest.raises(KeyboardInterrupt):
        with cache.staging("distill", "k2") as scratch:
            (scratch / MANIFEST).write_text("{}")
            raise KeyboardInterrupt
    assert not cache.entry("distill", "k2").exists()
    assert leftovers(cache) == []


def test_existing_entry_is_kept(cache: StageCache) -> None:
    for content in ("first", "second"):
        with cache.staging("quantize", "k") as scratch:
            (scratch / "out.txt").write_text(content)
            (scratch / MANIFEST).write_text(json.dumps({"content": content}))
    assert (cache.entry("quantize", "k") / "out.txt").read_text() == "first"
    assert cache.lookup("quantize", "k") == {"content": "first"}
    assert leftovers(cache) == []


def test_entries_are_per_stage_and_key(cache: StageCache) -> None:
    for stage, key in (("a", "k"), ("b", "k"), ("a", "j")):
        with cache.staging(stage, key) as scratch:
            (scratch / MANIFEST).write_text(json.dumps([stage, key]))
    assert cache.lookup("a", "k") == ["a", "k"]
    assert cache.lookup("b", "k") == ["b", "k"]
    assert cache.lookup("a", "j") == ["a", "j"]
    assert cache.lookup("b", "j") is None


def test_lookup_corrupt_manifest_is_a_miss(cache: StageCache) -> None:
    entry = cache.entry("bench", "k")
    entry.mkdir(parents=True)
    (entry / MANIFEST).write_text("{not json")
    assert cache.lookup("bench", "k") is None
    (entry / MANIFEST).unlink()
    assert cache.lookup("bench", "k") is None


def test_make_key_is_stable_and_order_independent() -> None:
    a = {"distill": {"epochs": 3, "lr": 0.1}, "data": "abc", "tools": ["torch 2"]}
    b = {"tools": ["torch 2"], "data": "abc", "distill": {"lr": 0.1, "epochs": 3}}
    assert make_key(a) == make_key(b) == make_key(json.loads(json.dumps(a)))
    assert len(make_key(a)) == 64 and int(make_key(a), 16) >= 0


@pytest.mark.parametrize(
    "changed",
    [
        {"distill": {"epochs": 4, "lr": 0.1}, "data": "abc", "tools": ["torch 2"]},
        {"distill": {"epochs": 3, "lr": 0.1}, "data": "abd", "tools": ["torch 2"]},
        {"distill": {"epochs": 3, "lr": 0.1}, "data": "abc", "tools": ["torch 2.1"]},
        {"distill": {"epochs": 3, "lr": 0.1}, "data": "abc", "tools": ["torch 2"], "extra": None},
        {"distill": {"epochs": 3}, "data": "abc", "tools": ["torch 2"]},
        {"distill": {"epochs": "3", "lr": 0.1}, "data": "abc", "tools": ["torch 2"]},
    ],
)
def test_make_key_changes_with_any_input(changed: dict[str, object]) -> None:
    base = {"distill": {"epochs": 3, "lr": 0.1}, "data": "abc", "tools": ["torch 2"]}
    assert make_key(changed) != make_key(base)


def test_make_key_accepts_paths() -> None:
    assert make_key({"p": Path("/a/b")}) == make_key({"p": "/a/b"})
    assert make_key({"p": Path("/a/b")}) != make_key({"p": Path("/a/c")})
