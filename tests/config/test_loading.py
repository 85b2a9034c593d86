"""edgekd/config/loading.py: errors naming file and key, search order, names, aliases, project fallback."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgekd.config import loading
from edgekd.config.loading import (
    BUILTIN_EXAMPLE,
    ConfigSearch,
    builtin_dir,
    load_model,
    load_profile,
    load_project,
    load_target,
)
from edgekd.config.models import Profile, Project
from edgekd.config.target import Target
from edgekd.errors import ConfigError

AVX2 = frozenset({"avx2", "fma", "sse4_2"})
AVX512_VNNI = AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGEKD_TARGETS_PATH", raising=False)
    monkeypatch.delenv("EDGEKD_PROFILES_PATH", raising=False)
    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(tmp_path / "cache"))


def target_toml(description: str, aliases: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> str:
    return (f'description = "{description}"\nruntime = "onnxruntime-cpu"\nprecisions = ["fp32", "int8"]\n'
            f"aliases = {list(aliases)!r}\n[host]\ncpu_flags = {list(flags)!r}\n").replace("'", '"')


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ load_model errors


def test_load_model_returns_config_and_sha256_of_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "t.toml", target_toml("mine"))
    target, digest = load_model(path, Target, "target")
    assert target.description == "mine"
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_is_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_model(path, Profile, "profile")
    assert str(path) in str(info.value)
    assert "profile" in (info.value.hint or "")


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", 'description = "x"\nruntime = \n')
    with pytest.raises(ConfigError) as info:
        load_model(path, Target, "target")
    assert str(path) in str(info.value)
    assert "not valid TOML" in str(info.value)
    assert "line 2" in str(info.value)  # tomllib's position is passed on


def test_non_utf8_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'description = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_model(path, Target, "target")


def test_unknown_key_error_names_file_and_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "[budgets]\nsize_mb = 1.0\nlatency_p99_ms = 2.0\n")
    with pytest.raises(ConfigError) as info:
        load_model(path, Profile, "profile")
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "key 'budgets.latency_p99_ms': unknown key" in message
    assert "budgets, recipe" in (info.value.hint or "")  # lists the valid top-level keys


def test_wrong_value_error_names_key(tmp_path: Path) -> None:
    path = write(tmp_path / "t.toml", target_toml("t") + '[session]\nintra_op_num_threads = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_model(path, Target, "target")
    assert "key 'session.intra_op_num_threads'" in str(info.value)
    assert str(path) in str(info.value)


def test_several_problems_are_all_named(tmp_path: Path) -> None:
    path = write(tmp_path / "t.toml", 'runtime = "onnxruntime-cpu"\nprecisions = ["fp64"]\nbogus = 1\n')
    with pytest.raises(ConfigError) as info:
        load_model(path, Target, "target")
    message = str(info.value)
    for key in ("description", "precisions.0", "bogus"):
        assert f"key '{key}'" in message


def test_teacher_source_error_names_teacher_key(tmp_path: Path) -> None:
    text = BUILTIN_EXAMPLE.read_text(encoding="utf-8").replace("[teacher.train]", 'checkpoint = "w.safetensors"\n[teacher.train]')
    path = write(tmp_path / "edgekd.toml", text)
    with pytest.raises(ConfigError) as info:
        load_model(path, Project, "project")
    assert "key 'teacher'" in str(info.value)
    assert "exactly one" in str(info.value)


def test_config_error_one_line_has_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", "nonsense = 1\n")
    with pytest.raises(ConfigError) as info:
        load_model(path, Profile, "profile")
    line = info.value.one_line()
    assert "\n" not in line and "(hint: " in line


# ------------------------------------------------------------------ search path order


def test_dirs_order_explicit_then_env_then_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given, env1, env2 = tmp_path / "given", tmp_path / "env1", tmp_path / "env2"
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", os.pathsep.join([str(env1), "", str(env2)]))
    search = ConfigSearch(targets_dirs=(given,))
    assert search.dirs("targets") == [given, env1, env2, builtin_dir("targets")]
    assert search.dirs("profiles") == [builtin_dir("profiles")]


def test_explicit_dir_beats_env_beats_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "given" / "x86-avx2.toml", target_toml("from given"))
    write(tmp_path / "env" / "x86-avx2.toml", target_toml("from env"))
    write(tmp_path / "env" / "only-env.toml", target_toml("only in env"))
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", str(tmp_path / "env"))

    with_given = ConfigSearch(targets_dirs=(tmp_path / "given",))
    assert load_target("x86-avx2", with_given).config.description == "from given"
    assert load_target("only-env", with_given).config.description == "only in env"
    assert load_target("x86-avx2", ConfigSearch()).config.description == "from env"

    monkeypatch.delenv("EDGEKD_TARGETS_PATH")
    shipped = load_target("x86-avx2", ConfigSearch())
    assert shipped.path == builtin_dir("targets") / "x86-avx2.toml"
    assert shipped.via == "name" and shipped.name == "x86-avx2"


def test_first_env_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a" / "mine.toml", 'description = "from a"\n')
    write(tmp_path / "b" / "mine.toml", 'description = "from b"\n')
    monkeypatch.setenv("EDGEKD_PROFILES_PATH", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    resolved = load_profile("mine", ConfigSearch())
    assert resolved.config.description == "from a"
    assert resolved.path == tmp_path / "a" / "mine.toml"


def test_profile_env_path_beats_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "env" / "default.toml", 'description = "team default"\n')
    monkeypatch.setenv("EDGEKD_PROFILES_PATH", str(tmp_path / "env"))
    assert load_profile("default", ConfigSearch()).config.description == "team default"
    write(tmp_path / "given" / "default.toml", 'description = "given default"\n')
    search = ConfigSearch(profiles_dirs=(tmp_path / "given",))
    assert load_profile("default", search).config.description == "given default"


def test_missing_search_dirs_are_skipped(tmp_path: Path) -> None:
    search = ConfigSearch(targets_dirs=(tmp_path / "does-not-exist",))
    assert set(search.files("targets")) == {p.stem for p in builtin_dir("targets").glob("*.toml")}


def test_load_by_path_bypasses_search(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere" / "custom.toml", target_toml("custom"))
    resolved = load_target(str(path), ConfigSearch())
    assert (resolved.name, resolved.path, resolved.via) == ("custom", path, "path")
    profile_path = write(tmp_path / "strict.toml", "[budgets]\nsize_mb = 0.5\n")
    assert load_profile(str(profile_path), ConfigSearch()).config.budgets.size_mb == 0.5


# ------------------------------------------------------------------ unknown names


def test_unknown_target_suggests_nearest() -> None:
    with pytest.raises(ConfigError) as info:
        load_target("x86-avx512", ConfigSearch())
    assert "unknown target 'x86-avx512'" in str(info.value)
    assert "x86-avx512-vnni" in (info.value.hint or "")
    assert (info.value.hint or "").startswith("did you mean")


def test_unknown_profile_suggests_nearest() -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("defualt", ConfigSearch())
    assert "did you mean default" in (info.value.hint or "")
    assert "known: ci, default" in str(info.value)


def test_unknown_name_with_nothing_near_points_to_listing() -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("zzzzzzzzzzzz", ConfigSearch())
    assert "`edgekd profiles` lists them" in (info.value.hint or "")


def test_unknown_target_lists_aliases_among_known() -> None:
    with pytest.raises(ConfigError) as info:
        load_target("arm64", ConfigSearch())
    known = str(info.value).split("(known: ", 1)[1].rstrip(")").split(", ")
    assert "x86" in known
    assert {p.stem for p in builtin_dir("targets").glob("*.toml")} <= set(known)


# ------------------------------------------------------------------ aliases


@pytest.mark.parametrize(("flags", "expected"), [(AVX2, "x86-avx2"), (AVX512_VNNI, "x86-avx512-vnni")])
def test_x86_alias_picks_most_specific_fitting_shipped_target(
        monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], expected: str) -> None:
    monkeypatch.setattr(loading, "cpu_flags", lambda: flags)
    resolved = load_target("x86", ConfigSearch())
    assert resolved.name == expected
    assert resolved.path == builtin_dir("targets") / f"{expected}.toml"
    assert resolved.via.startswith("alias 'x86': this host has ")
    assert resolved.sha256 == hashlib.sha256(resolved.path.read_bytes()).hexdigest()


def test_alias_with_no_fitting_target_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset({"sse2"}))
    with pytest.raises(ConfigError) as info:
        load_target("x86", ConfigSearch())
    message = str(info.value)
    assert "alias 'x86' fits no target" in message
    assert "x86-avx2 needs avx2 fma" in message
    assert "--target" in (info.value.hint or "")


def test_alias_resolution_among_custom_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "targets"
    write(folder / "generic.toml", target_toml("generic", ("board",)))
    write(folder / "fast.toml", target_toml("fast", ("board",), ("neon",)))
    write(folder / "fastest.toml", target_toml("fastest", ("board",), ("neon", "dotprod")))
    write(folder / "unrelated.toml", target_toml("unrelated", ("other",), ("neon", "dotprod", "sve")))
    search = ConfigSearch(targets_dirs=(folder,))

    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset({"neon", "dotprod", "sve"}))
    assert load_target("board", search).name == "fastest"
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset({"neon"}))
    assert load_target("board", search).name == "fast"
    monkeypatch.setattr(loading, "cpu_flags", lambda: frozenset())
    resolved = load_target("board", search)
    assert resolved.name == "generic"
    assert "no special CPU flags" in resolved.via


def test_name_takes_precedence_over_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "targets"
    write(folder / "x86.toml", target_toml("named x86"))
    monkeypatch.setattr(loading, "cpu_flags", lambda: AVX512_VNNI)
    resolved = load_target("x86", ConfigSearch(targets_dirs=(folder,)))
    assert resolved.config.description == "named x86" and resolved.via == "name"


# ------------------------------------------------------------------ project


def test_load_project_explicit_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "edgekd.toml", BUILTIN_EXAMPLE.read_text(encoding="utf-8").replace('name = "digits"', 'name = "cwd"'))
    path = write(tmp_path / "sub" / "other.toml", BUILTIN_EXAMPLE.read_text(encoding="utf-8").replace('name = "digits"', 'name = "given"'))
    resolved = load_project(path)
    assert (resolved.name, resolved.via, resolved.path) == ("given", "--project", path.resolve())


def test_load_project_falls_back_to_cwd_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "edgekd.toml", BUILTIN_EXAMPLE.read_text(encoding="utf-8").replace('name = "digits"', 'name = "here"'))
    resolved = load_project(None)
    assert (resolved.name, resolved.via, resolved.path) == ("here", "./edgekd.toml", (tmp_path / "edgekd.toml").resolve())


def test_load_project_falls_back_to_builtin_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = load_project(None)
    assert resolved.name == "digits"
    assert resolved.path == BUILTIN_EXAMPLE.resolve()
    assert resolved.via.startswith("built-in example")


def test_load_project_errors_name_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "edgekd.toml", BUILTIN_EXAMPLE.read_text(encoding="utf-8") + "\n[export]\nopset = 17\n")
    with pytest.raises(ConfigError) as info:
        load_project(None)
    assert "edgekd.toml: key 'export': unknown key" in str(info.value)


# ------------------------------------------------------------------ shipped files


def _shipped(kind: str) -> list[Path]:
    return sorted(builtin_dir(kind).glob("*.toml"))


def test_shipped_dirs_are_not_empty() -> None:
    assert _shipped("targets") and _shipped("profiles")


@pytest.mark.parametrize("path", _shipped("targets"), ids=lambda p: p.name)
def test_every_shipped_target_validates(path: Path) -> None:
    target, _ = load_model(path, Target, "target")
    assert load_target(path.stem, ConfigSearch()).config == target


@pytest.mark.parametrize("path", _shipped("profiles"), ids=lambda p: p.name)
def test_every_shipped_profile_validates(path: Path) -> None:
    profile, _ = load_model(path, Profile, "profile")
    assert load_profile(path.stem, ConfigSearch()).config == profile


def test_builtin_example_project_validates() -> None:
    project, _ = load_model(BUILTIN_EXAMPLE, Project, "project")
    assert project.name == "digits"
