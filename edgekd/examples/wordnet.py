"""A built-in text-classification example that downloads nothing: WordNet 3.0's glosses (the Debian
package `wordnet-base`, /usr/share/wordnet/data.{noun,verb,adj,adv}) labelled by their lexicographer
file, the synset's supersense (`noun.animal`, `verb.motion`, ...: 45 classes, numbered as WordNet's
lexnames(5) numbers them).

`read` yields one `Synset` per data line (wndb(5): synset_offset lex_filenum ss_type w_cnt
[word lex_id]... p_cnt [pointer]... [frames] | gloss; the license header's lines start with two
spaces). `split` assigns whole synsets to train / calib / test, stratified by supersense and
seeded, so a synset is never in two splits. `prepare` writes the splits as json-lines files
({"id", "lemmas", "text", "label"}; `text` is the gloss), a WordPiece tokenizer trained on the
train split only, labels.json and an edgekd.toml for `edgekd build --project`:

    python -m edgekd.examples.wordnet prepare DIR [--max-per-class N] [--seed S] [--tiny]
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import DataError

WORDNET = Path("/usr/share/wordnet")
PARTS = ("noun", "verb", "adj", "adv")
INSTALL_HINT = "apt-get install wordnet-base (it puts WordNet 3.0 in /usr/share/wordnet), or give the folder holding data.noun, data.verb, data.adj and data.adv"
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change",
    "verb.cognition", "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather", "adj.ppl",
)  # lexnames(5): the lexicographer file numbered i is LEXNAMES[i]
SPLIT_NAMES = ("train", "calib", "test")
MAX_CALIBRATION = 512  # calibration samples the project asks for (the full calib split has ~5,900)
FRACTIONS = (0.80, 0.05, 0.15)  # train, calib, test: of each supersense's synsets
TINY_PER_CLASS = 48
MIN_PER_CLASS = 3  # a class of 3 synsets gives one to test, one to calib, one to train
ADJECTIVE_MARKER = re.compile(r"\((a|p|ip)\)$")  # data.adj: a word's syntactic marker


@dataclass(frozen=True)
class Synset:
    id: str  # "<8-digit offset>-<ss_type>", unique over the four files
    lemmas: tuple[str, ...]
    gloss: str
    label: str  # the lexicographer file's name, one of LEXNAMES

    def to_json(self) -> dict[str, object]:
        """The json-lines row: `text` is the gloss; `lemma_text` the synset's words alone and `full`
        words and gloss together, the two views of cross-input distillation (student, teacher)."""
        words = ", ".join(self.lemmas)
        return {"id": self.id, "lemmas": list(self.lemmas), "text": self.gloss, "lemma_text": words,
                "full": f"{words}: {self.gloss}", "label": self.label}


def parse_line(line: str, where: str = "line") -> Synset | None:
    """One data-file line as a Synset; None for the license header (lines starting with two spaces)."""
    if line.startswith("  ") or not line.strip():
        return None
    head, bar, gloss = line.partition("|")
    fields = head.split()
    try:
        if not bar or len(fields) < 4:
            raise ValueError("no '| gloss' or too few fields")
        offset, lex_filenum, ss_type, count = fields[0], int(fields[1], 10), fields[2], int(fields[3], 16)
        words = fields[4:4 + 2 * count:2]
        if not 0 <= lex_filenum < len(LEXNAMES) or len(words) != count or ss_type not in "nvasr":
            raise ValueError(f"lex_filenum {fields[1]}, ss_type {ss_type!r}, {len(words)} of {count} words")
    except ValueError as exc:
        raise DataError(f"{where} is not a WordNet synset line: {exc}", "give WordNet 3.0 data.* files (wndb(5))") from exc
    lemmas = tuple(ADJECTIVE_MARKER.sub("", word).replace("_", " ") for word in words)
    return Synset(f"{offset}-{ss_type}", lemmas, gloss.strip(), LEXNAMES[lex_filenum])


def read(folder: Path = WORDNET) -> Iterator[Synset]:
    """Every synset of data.noun, data.verb, data.adj, data.adv in `folder`, in file order."""
    paths = [Path(folder) / f"data.{part}" for part in PARTS]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"WordNet folder {folder} has no {', '.join(missing)}", INSTALL_HINT)
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                synset = parse_line(line, f"{path}:{number}")
                if synset is not None:
                    yield synset


def split(synsets: Iterable[Synset], seed: int = 0, max_per_class: int | None = None,
          fractions: Sequence[float] = FRACTIONS) -> dict[str, list[Synset]]:
    """Whole synsets per split, stratified by supersense: each class's synsets (sorted by id) are
    shuffled with a generator seeded by (seed, class), cut to `max_per_class`, and dealt test first,
    then calib, then train (a class of 3 or more synsets has at least one in test and in calib).
    Each split is then shuffled with `seed`, so files are not sorted by class."""
    by_class: dict[str, list[Synset]] = {}
    for synset in synsets:
        by_class.setdefault(synset.label, []).append(synset)
    out: dict[str, list[Synset]] = {name: [] for name in SPLIT_NAMES}
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda s: s.id)
        random.Random(f"{seed}/{label}").shuffle(members)
        members = members[:max_per_class] if max_per_class is not None else members
        n_test, n_calib = (_share(len(members), fraction) for fraction in (fractions[2], fractions[1]))
        out["test"] += members[:n_test]
        out["calib"] += members[n_test:n_test + n_calib]
        out["train"] += members[n_test + n_calib:]
    for name in SPLIT_NAMES:
        random.Random(f"{seed}/{name}").shuffle(out[name])
    return out


def _share(count: int, fraction: float) -> int:
    return max(1, round(count * fraction)) if count >= MIN_PER_CLASS else 0


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def train_tokenizer(texts: Iterable[str], path: Path, vocab_size: int = 8000) -> Path:
    """A BERT-style WordPiece tokenizer (lower-cased, accents stripped, [CLS] text [SEP], padding
    with [PAD]) trained on `texts` with `tokenizers`, saved as `path` (tokenizer.json)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    tok.save(str(path))
    return path


@dataclass(frozen=True)
class Bert:
    """A BERT encoder's size, as [teacher.hf] / [student.hf] config fields."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int

    def toml(self, max_length: int) -> str:
        return (f"hidden_size = {self.hidden_size}\nnum_hidden_layers = {self.num_hidden_layers}\n"
                f"num_attention_heads = {self.num_attention_heads}\nintermediate_size = {self.intermediate_size}\n"
                f"max_position_embeddings = {max_length}\n")


@dataclass(frozen=True)
class Recipe:
    """What the written project trains; the full data and the tiny CI variant differ only here.
    Teacher and student are BERT encoders (transformers' BertForSequenceClassification, random
    init, trained here): the student has ~15x (full) / ~25x (tiny) fewer MACs than the teacher. The
    tiny teacher is weak (~39 glosses per class), so its soft labels are nearly flat at T=4: the
    tiny student leans on the labels more (alpha 0.5, T=2)."""

    teacher: Bert
    student: Bert
    vocab_size: int = 8000
    max_length: int = 32
    teacher_epochs: int = 10
    distill_epochs: int = 20
    lr: float = 0.001
    distill_lr: float = 0.002
    warmup_ratio: float = 0.1
    temperature: float = 4.0
    alpha: float = 0.9


FULL = Recipe(Bert(128, 2, 4, 512), Bert(32, 2, 2, 128))
TINY = Recipe(Bert(64, 2, 4, 256), Bert(16, 1, 2, 64), vocab_size=1000, max_length=32, teacher_epochs=8, distill_epochs=12,
              distill_lr=0.003, temperature=2.0, alpha=0.5)


def project_toml(recipe: Recipe, calib_samples: int, seed: int) -> str:
    """edgekd.toml for the files `prepare` writes beside it (paths are relative to the project)."""
    labels = ", ".join(json.dumps(name) for name in LEXNAMES)
    return f"""# Written by `python -m edgekd.examples.wordnet prepare` (seed {seed}): WordNet glosses -> supersense.
name = "wordnet-supersenses"
description = "WordNet 3.0 glosses labelled by supersense (45 classes), BERT teacher and student trained here"

[teacher.hf]  # a BERT encoder from a fresh config (random init), trained here
model_type = "bert"
{recipe.teacher.toml(recipe.max_length)}
[teacher.train]
epochs = {recipe.teacher_epochs}
lr = {recipe.lr}
warmup_ratio = {recipe.warmup_ratio}
batch_size = 32
seed = {seed}

[student.hf]  # the teacher's config, smaller
base = "teacher"
{recipe.student.toml(recipe.max_length)}
[data]
files = {{ train = "train.jsonl", calib = "calib.jsonl", test = "test.jsonl" }}
tokenizer = "tokenizer.json"
label_column = "label"
labels = [{labels}]
max_length = {recipe.max_length}

[task]
kind = "text-classification"

[distill]
temperature = {recipe.temperature}
alpha = {recipe.alpha}
epochs = {recipe.distill_epochs}
lr = {recipe.distill_lr}
warmup_ratio = {recipe.warmup_ratio}
batch_size = 32
seed = {seed}

[quantize]
calibration_samples = {calib_samples}
"""


def write_jsonl(path: Path, synsets: Iterable[Synset]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for synset in synsets:
            handle.write(json.dumps(synset.to_json()) + "\n")
    return path


def prepare(folder: Path, *, seed: int = 0, max_per_class: int | None = None, tiny: bool = False,
            source: Path = WORDNET) -> dict[str, Path]:
    """Write train/calib/test.jsonl, tokenizer.json (trained on train.jsonl's texts only),
    labels.json and edgekd.toml into `folder`; returns their paths by name. `tiny` keeps at most
    TINY_PER_CLASS synsets per class (unless `max_per_class` is smaller) and a small vocabulary, for
    seconds-long CI builds."""
    recipe = TINY if tiny else FULL
    if max_per_class is not None and max_per_class < MIN_PER_CLASS:
        raise DataError(f"max_per_class {max_per_class} leaves the calib and test splits empty", f"give at least {MIN_PER_CLASS}")
    if tiny:
        max_per_class = min(max_per_class or TINY_PER_CLASS, TINY_PER_CLASS)
    splits = split(read(source), seed=seed, max_per_class=max_per_class)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: write_jsonl(folder / f"{name}.jsonl", splits[name]) for name in SPLIT_NAMES}
    paths["tokenizer"] = train_tokenizer((s.gloss for s in splits["train"]), folder / "tokenizer.json", recipe.vocab_size)
    paths["labels"] = folder / "labels.json"
    paths["labels"].write_text(json.dumps(list(LEXNAMES), indent=1) + "\n")
    paths["project"] = folder / "edgekd.toml"
    paths["project"].write_text(project_toml(recipe, min(len(splits["calib"]), MAX_CALIBRATION), seed))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edgekd.examples.wordnet prepare DIR [--max-per-class N] [--seed S] [--tiny] [--wordnet DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m edgekd.examples.wordnet", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("prepare", help="write the splits, tokenizer, labels and edgekd.toml into DIR")
    cmd.add_argument("folder", type=Path, metavar="DIR")
    cmd.add_argument("--max-per-class", type=int, default=None, help="at most N synsets per supersense (all splits)")
    cmd.add_argument("--seed", type=int, default=0, help="of the split and of the project's training (default 0)")
    cmd.add_argument("--tiny", action="store_true", help=f"at most {TINY_PER_CLASS} synsets per class: a CI build in seconds")
    cmd.add_argument("--wordnet", type=Path, default=WORDNET, help=f"the folder holding data.noun etc. (default {WORDNET})")
    args = parser.parse_args(argv)
    if args.max_per_class is not None and args.max_per_class < MIN_PER_CLASS:
        parser.error(f"--max-per-class must be at least {MIN_PER_CLASS} (one synset a class for each split)")
    if args.seed < 0:
        parser.error("--seed must be 0 or more")
    try:
        paths = prepare(args.folder, seed=args.seed, max_per_class=args.max_per_class, tiny=args.tiny, source=args.wordnet)
    except DataError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    counts = {name: sum(1 for _ in paths[name].open()) for name in SPLIT_NAMES}
    print(f"wrote {args.folder}: " + ", ".join(f"{name} {n}" for name, n in counts.items()) + f"; build with: edgekd build --project {paths['project']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
