"""The WordNet supersense example (edgekd/examples/wordnet.py): the reader on the real data files,
the 45 classes, splits by synset, a tokenizer trained on the train split only, and a tiny build of
the project `prepare --tiny` writes. Needs the Debian package wordnet-base (.ci/run installs it)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import run_cli

from edgekd.errors import DataError
from edgekd.examples import wordnet
from edgekd.examples.wordnet import LEXNAMES, Synset, parse_line, prepare, read, split

pytestmark = pytest.mark.skipif(not (wordnet.WORDNET / "data.noun").is_file(),
                                reason=f"WordNet is not installed ({wordnet.WORDNET}/data.noun is absent): apt-get install wordnet-base")

WORDNET_30_SYNSETS = 117659  # WordNet 3.0: 82,115 noun + 13,767 verb + 18,156 adj + 3,621 adv


@pytest.fixture(scope="module")
def synsets() -> list[Synset]:
    return list(read())


def real_line(part: str, offset: str) -> str:
    with (wordnet.WORDNET / f"data.{part}").open() as handle:
        return next(line for line in handle if line.startswith(offset + " "))


def test_a_verb_line_gives_its_lemmas_gloss_and_supersense():
    synset = parse_line(real_line("verb", "00001740"))
    assert synset is not None and synset.id == "00001740-v" and synset.label == "verb.body"
    assert synset.lemmas == ("breathe", "take a breath", "respire", "suspire")
    assert synset.gloss.startswith("draw air into, and expel out of, the lungs") and "|" not in synset.gloss
    assert synset.gloss == synset.gloss.strip()


def test_adjective_markers_and_satellites():
    synset = parse_line(real_line("adj", "00014358"))
    assert synset is not None and synset.id == "00014358-s" and synset.label == "adj.all"
    assert synset.lemmas == ("abounding", "galore")  # "galore(ip)" loses its syntactic marker


def test_the_license_header_is_skipped_and_a_broken_line_is_a_data_error():
    header = (wordnet.WORDNET / "data.noun").open().readline()
    assert header.startswith("  ") and parse_line(header) is None
    with pytest.raises(DataError, match=r"data\.noun:7 is not a WordNet synset line"):
        parse_line("00001740 99 n 01 entity 0 000 | bad lex_filenum", "data.noun:7")
    with pytest.raises(DataError, match="not a WordNet synset line"):
        parse_line("00001740 03 n 02 entity 0 | one word of two", "data.noun:8")


def test_every_synset_is_read_once_with_the_45_supersenses(synsets):
    assert len(synsets) == WORDNET_30_SYNSETS
    assert len({s.id for s in synsets}) == len(synsets)
    assert len(LEXNAMES) == 45 and {s.label for s in synsets} == set(LEXNAMES)
    by_id = {s.id: s.label for s in synsets}
    assert by_id["00001740-n"] == "noun.Tops"  # entity
    assert all(s.gloss and s.lemmas for s in synsets)
    kinds: dict[str, set[str]] = {}
    for s in synsets:  # the ss_type ending the id agrees with the supersense's part of speech
        kinds.setdefault(s.label.split(".")[0], set()).add(s.id[-1])
    assert kinds == {"adj": {"a", "s"}, "adv": {"r"}, "noun": {"n"}, "verb": {"v"}}


def test_splits_are_disjoint_by_synset_stratified_and_seeded(synsets):
    parts = split(synsets, seed=0)
    ids = {name: [s.id for s in part] for name, part in parts.items()}
    assert sum(len(v) for v in ids.values()) == len(synsets) == len(set().union(*ids.values()))
    assert not set(ids["train"]) & set(ids["test"]) and not set(ids["calib"]) & set(ids["test"])
    assert not set(ids["train"]) & set(ids["calib"])
    assert 0.78 < len(ids["train"]) / len(synsets) < 0.82 and 0.14 < len(ids["test"]) / len(synsets) < 0.16
    for name in ("train", "calib", "test"):
        assert {s.label for s in parts[name]} == set(LEXNAMES), name  # every class in every split
    again = split(reversed(synsets), seed=0)  # the input's order does not matter
    assert {name: [s.id for s in part] for name, part in again.items()} == ids
    other = split(synsets, seed=1)
    assert [s.id for s in other["test"]] != ids["test"]


def test_max_per_class_caps_every_split_together(synsets):
    parts = split(synsets, seed=3, max_per_class=20)
    for label in LEXNAMES:
        counts = [sum(s.label == label for s in parts[name]) for name in ("train", "calib", "test")]
        assert counts == [16, 1, 3], label


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wordnet-tiny")
    assert wordnet.main(["prepare", str(folder), "--tiny"]) == 0
    return folder


def test_prepare_writes_the_splits_labels_and_project(tiny, synsets):
    rows = {name: [json.loads(line) for line in (tiny / f"{name}.jsonl").read_text().splitlines()] for name in ("train", "calib", "test")}
    expected = split(synsets, seed=0, max_per_class=wordnet.TINY_PER_CLASS)
    assert {name: len(r) for name, r in rows.items()} == {name: len(part) for name, part in expected.items()}
    assert {name: {r["id"] for r in part} for name, part in rows.items()} == {name: {s.id for s in part} for name, part in expected.items()}
    assert set(rows["train"][0]) == {"id", "lemmas", "text", "lemma_text", "full", "label"}
    first = rows["train"][0]  # the two views of cross-input distillation: words alone, words and gloss
    assert first["lemma_text"] == ", ".join(first["lemmas"]) and first["full"] == f"{first['lemma_text']}: {first['text']}"
    assert json.loads((tiny / "labels.json").read_text()) == list(LEXNAMES)
    project = (tiny / "edgekd.toml").read_text()
    assert '[teacher.hf]' in project and 'model_type = "bert"' in project and 'base = "teacher"' in project
    again = prepare(tiny / "again", tiny=True)  # deterministic: the same files again
    assert all(again[name].read_text() == (tiny / f"{name}.jsonl").read_text() for name in ("train", "calib", "test"))


def test_the_wordpiece_tokenizer_is_trained_on_the_train_split_only(tiny, tmp_path, monkeypatch):
    from tokenizers import Tokenizer

    def texts(folder: Path, *names: str) -> list[str]:
        return [json.loads(line)["text"] for name in names for line in (folder / f"{name}.jsonl").read_text().splitlines()]

    def foreign_pieces(path: Path) -> set[str]:
        """Word pieces (2+ letters) that no train gloss's word contains."""
        tok = Tokenizer.from_file(str(path))
        assert type(tok.model).__name__ == "WordPiece"
        pieces = {t.removeprefix("##") for t in tok.get_vocab() if re.fullmatch(r"(##)?[a-z]{2,}", t)}
        return {p for p in pieces if not any(p in w for w in train_words)}

    seen: list[list[str]] = []
    trainer = wordnet.train_tokenizer
    monkeypatch.setattr(wordnet, "train_tokenizer", lambda items, *a, **k: trainer(seen.append(list(items)) or seen[-1], *a, **k))
    prepare(tmp_path / "spied", tiny=True, max_per_class=8)
    assert seen == [texts(tmp_path / "spied", "train")]

    train_words = {w for text in texts(tiny, "train") for w in re.findall(r"[a-z]+", text.lower())}
    assert not foreign_pieces(tiny / "tokenizer.json")
    # the check sees a leak: the same trainer fed every split, with room for whole words, learns held-out words
    leaky = trainer(texts(tiny, "train", "calib", "test"), tmp_path / "leaky.json", 30000)
    assert foreign_pieces(leaky)


def test_without_wordnet_the_error_names_the_folder_and_the_package(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)) as caught:
        prepare(tmp_path / "out", source=tmp_path)
    assert "apt-get install wordnet-base" in (caught.value.hint or "")
    assert wordnet.main(["prepare", str(tmp_path / "out"), "--wordnet", str(tmp_path)]) == 2


def test_too_few_synsets_a_class_for_three_splits_is_refused(tmp_path):
    with pytest.raises(DataError, match="max_per_class 2 leaves the calib and test splits empty"):
        prepare(tmp_path, max_per_class=2)
    with pytest.raises(SystemExit):
        wordnet.main(["prepare", str(tmp_path), "--max-per-class", "2"])


ENGINES = {"x86": "CPUExecutionProvider", "mobile-npu": "HTP backend emulated on x86",
           "jetson-orin": "on the Q/DQ graph the engine is built from (not the TensorRT engine"}


@pytest.mark.slow
@pytest.mark.parametrize("target", list(ENGINES))
def test_the_tiny_project_builds_under_the_ci_profile(tiny, cache_dir, target):
    out_dir = tiny / f"build-{target}"
    code, out, err = run_cli(["build", "--project", str(tiny / "edgekd.toml"), "--profile", "ci", "--target", target, "--out", str(out_dir)], cache_dir)
    assert code == 0, out + err
    report = json.loads((out_dir / "report.json").read_text())
    tests = len((tiny / "test.jsonl").read_text().splitlines())
    assert report["task"]["name"] == "text-classification"
    assert report["provenance"]["data"]["num_classes"] == 45
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    for prefix in ("teacher", "student", "int8", "engine"):
        assert metrics[f"{prefix}.accuracy"]["method"] == "measured", prefix
        assert f"{tests} held-out test samples" in metrics[f"{prefix}.accuracy"]["how"], prefix
    # a BERT trained from scratch on ~39 glosses a class in 8 epochs learns little (9 % here), but more than chance (2.2 %)
    assert metrics["teacher.accuracy"]["value"] > 2 * 100 / 45
    notes = " ".join(n for s in report["stages"] for n in s.get("notes", []))
    assert "Hugging Face bert config" in notes and "the teacher's Hugging Face config" in notes
    assert metrics["teacher.macs"]["value"] >= 10 * metrics["student.macs"]["value"]
    assert ENGINES[target] in metrics["engine.accuracy"]["how"]  # the engine's accuracy, and where it was measured
