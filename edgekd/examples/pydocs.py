"""A built-in causal-lm example that downloads nothing: the English prose of the Python 3.11
documentation's reStructuredText sources (the Debian package `python3.11-doc`,
/usr/share/doc/python3.11/html/_sources/, about 11 MB).

`read` yields one `Document` per `*.rst.txt` file: its prose paragraphs, with the reST markup that
is not English taken out (directives and their indented bodies, literal blocks after `::`, section
underlines, tables, doctest blocks, comments, substitution and link targets; roles such as :func:`len` keep their
text). `split` assigns whole documents to train / calib / test, seeded, so a page is never in two
splits. `prepare` writes the splits as text files (one paragraph a line), a byte-level BPE tokenizer
trained on the train split only (a `save_pretrained` folder: `<|endoftext|>` is its end-of-text and
padding token) and an edgekd.toml whose teacher (a Llama decoder from a fresh config) is trained here
and whose student is the teacher's config made smaller (fewer layers, narrower, grouped KV heads):

    python -m edgekd.examples.pydocs prepare DIR [--seed S] [--tiny] [--max-chars N]
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import DataError

SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
INSTALL_HINT = "apt-get install python3.11-doc (it puts the reST sources in /usr/share/doc/python3.11/html/_sources), or give that folder"
SPLIT_NAMES = ("train", "calib", "test")
FRACTIONS = {"test": 0.10, "calib": 0.05}  # of the documents; the rest is train
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 0  # the tokenizer's only special token, so its first id: the models' bos, eos and pad
MIN_PARAGRAPH_CHARS = 40  # shorter paragraphs are mostly headings, labels and list stubs
UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
ROLE = re.compile(r":[\w:.-]+:`~?!?([^`<]*?)\s*(?:<[^`]*>)?`")  # :func:`len` -> len, :ref:`text <label>` -> text
MARKUP = re.compile(r"``|\*\*|(?<![\w*])\*(?=\w)|(?<=\w)\*(?![\w*])|`_{0,2}|\|(?=\w)|(?<=\w)\|")
DIRECTIVE = re.compile(r"^\s*\.\.(\s|$)")
LIST_BULLET = re.compile(r"^\s*(?:[-*+]|\d+\.|#\.)\s+")


@dataclass(frozen=True)
class Document:
    name: str  # the source's path under the sources folder, e.g. "library/functions.rst.txt"
    paragraphs: tuple[str, ...]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _prose_blocks(lines: list[str]) -> Iterator[list[str]]:
    """Groups of consecutive prose lines; directive bodies and literal blocks (the lines indented
    deeper than the line that opened them) are skipped."""
    block: list[str] = []
    skip_deeper_than: int | None = None
    for raw in lines:
        line = raw.rstrip()
        if skip_deeper_than is not None:
            if not line.strip() or _indent(line) > skip_deeper_than:
                continue
            skip_deeper_than = None
        if not line.strip() or UNDERLINE.match(line) or line.lstrip().startswith(("+-", "|", "=")):
            if block:
                yield block
            block = []
            continue
        if DIRECTIVE.match(line):
            if block:
                yield block
            block, skip_deeper_than = [], _indent(line)
            continue
        if LIST_BULLET.match(line) and block:
            yield block
            block = []
        block.append(LIST_BULLET.sub("", line.strip()))
        if line.endswith("::"):  # a literal block follows, indented deeper than this line
            skip_deeper_than = _indent(line)
            block[-1] = block[-1][:-1] if not block[-1].endswith(" ::") else block[-1][:-3]
            yield block
            block = []
    if block:
        yield block


def clean(text: str) -> list[str]:
    """The prose paragraphs of one reST source, markup removed, whitespace collapsed."""
    paragraphs = []
    for block in _prose_blocks(text.splitlines()):
        if block[0].startswith(">>>"):  # a doctest block: code, not prose
            continue
        words = MARKUP.sub("", ROLE.sub(r"\1", re.sub(r"\s+", " ", " ".join(block)))).strip()
        if len(words) >= MIN_PARAGRAPH_CHARS and any(c.isalpha() for c in words):
            paragraphs.append(words)
    return paragraphs


def read(folder: Path = SOURCES) -> Iterator[Document]:
    """Every `*.rst.txt` under `folder`, in sorted path order, as its prose paragraphs."""
    folder = Path(folder)
    paths = sorted(folder.rglob("*.rst.txt")) if folder.is_dir() else []
    if not paths:
        raise DataError(f"{folder} holds no *.rst.txt files", INSTALL_HINT)
    for path in paths:
        paragraphs = clean(path.read_text(encoding="utf-8", errors="replace"))
        if paragraphs:
            yield Document(path.relative_to(folder).as_posix(), tuple(paragraphs))


def split_of(name: str, seed: int) -> str:
    """A document's split, from a hash of (seed, its name): stable whatever else is in the folder."""
    u = int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "big") / 2**64
    return "test" if u < FRACTIONS["test"] else "calib" if u < FRACTIONS["test"] + FRACTIONS["calib"] else "train"


def split(documents: Iterable[Document], seed: int = 0) -> dict[str, list[Document]]:
    out: dict[str, list[Document]] = {name: [] for name in SPLIT_NAMES}
    for doc in documents:
        out[split_of(doc.name, seed)].append(doc)
    return out


def train_tokenizer(texts: Iterable[str], folder: Path, vocab_size: int) -> Path:
    """A GPT-2-style byte-level BPE tokenizer (no unknown tokens; `<|endoftext|>` ends texts and
    pads; no token_type_ids, which decoders do not take) trained on `texts` with `tokenizers`, saved as a
    transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END_OF_TEXT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, unk_token=None, model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(str(folder))
    return folder


@dataclass(frozen=True)
class Llama:
    """A Llama decoder's size, as [teacher.hf] / [student.hf] config fields (tied input and output
    embeddings: at these sizes the vocabulary matrix is most of the parameters; the tokenizer's
    end-of-text token as the models' bos, eos and pad, which generation stops and pads on)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int

    def toml(self, max_length: int) -> str:
        return (f"hidden_size = {self.hidden_size}\nnum_hidden_layers = {self.num_hidden_layers}\n"
                f"num_attention_heads = {self.num_attention_heads}\nnum_key_value_heads = {self.num_key_value_heads}\n"
                f"intermediate_size = {self.intermediate_size}\nmax_position_embeddings = {max_length}\n"
                "tie_word_embeddings = true\n"
                f"bos_token_id = {END_OF_TEXT_ID}\neos_token_id = {END_OF_TEXT_ID}\npad_token_id = {END_OF_TEXT_ID}\n")


@dataclass(frozen=True)
class Recipe:
    """What the written project trains; the full data and the tiny CI variant differ only here.
    The student has the teacher's vocabulary and about 4.8x (full) / 4.4x (tiny) fewer parameters:
    half the width, half the layers, grouped KV heads (2 query heads share a key/value head)."""

    teacher: Llama
    student: Llama
    vocab_size: int = 4096
    max_length: int = 128
    max_chars: int | None = None  # of the train split's text (None: all of it)
    teacher_epochs: int = 2
    distill_epochs: int = 2
    lr: float = 0.002
    warmup_ratio: float = 0.05
    batch_size: int = 16
    calibration_samples: int = 64


FULL = Recipe(Llama(256, 4, 8, 8, 704), Llama(128, 2, 4, 2, 352))
TINY = Recipe(Llama(64, 2, 4, 4, 176), Llama(32, 1, 2, 1, 88), vocab_size=512, max_length=32, max_chars=30_000,
              teacher_epochs=1, distill_epochs=1, lr=0.003, calibration_samples=8)


def project_toml(recipe: Recipe, seed: int) -> str:
    """edgekd.toml for the files `prepare` writes beside it (paths are relative to the project)."""
    return f"""# Written by `python -m edgekd.examples.pydocs prepare` (seed {seed}): the Python docs' prose, next-token prediction.
name = "pydocs-lm"
description = "Python 3.11 documentation prose (python3.11-doc), Llama teacher and student trained here"

[teacher.hf]  # a Llama decoder from a fresh config (random init), trained here
model_type = "llama"
{recipe.teacher.toml(recipe.max_length)}
[teacher.train]
epochs = {recipe.teacher_epochs}
lr = {recipe.lr}
warmup_ratio = {recipe.warmup_ratio}
batch_size = {recipe.batch_size}
seed = {seed}

[student.hf]  # the teacher's config, smaller: fewer layers, narrower, grouped KV heads
base = "teacher"
{recipe.student.toml(recipe.max_length)}
[data]
files = {{ train = "train.txt", calib = "calib.txt", test = "test.txt" }}
tokenizer = "tokenizer"
max_length = {recipe.max_length}

[task]
kind = "causal-lm"

[distill]  # Hinton KD on every next-token distribution, at T = 1 (LM distillation softens nothing)
temperature = 1.0
epochs = {recipe.distill_epochs}
lr = {recipe.lr}
warmup_ratio = {recipe.warmup_ratio}
batch_size = {recipe.batch_size}
seed = {seed}

[quantize]
calibration_samples = {recipe.calibration_samples}
"""


def _limit(paragraphs: Iterable[str], max_chars: int | None) -> Iterator[str]:
    total = 0
    for paragraph in paragraphs:
        if max_chars is not None and total >= max_chars:
            return
        total += len(paragraph)
        yield paragraph


def prepare(folder: Path, *, seed: int = 0, tiny: bool = False, max_chars: int | None = None,
            source: Path = SOURCES) -> dict[str, Path]:
    """Write train/calib/test.txt (one paragraph a line), tokenizer/ (trained on train.txt only)
    and edgekd.toml into `folder`; returns their paths by name. `max_chars` (or the tiny recipe's)
    keeps the first paragraphs of each split's shuffled documents up to that many characters of
    train text (calib and test are cut in proportion, at least 1/8 of it each)."""
    recipe = TINY if tiny else FULL
    limit = max_chars if max_chars is not None else recipe.max_chars
    if limit is not None and limit < 1000:
        raise DataError(f"max_chars {limit} is too little text for a language model", "give at least 1000")
    splits = split(read(source), seed=seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in SPLIT_NAMES:
        docs = sorted(splits[name], key=lambda d: hashlib.sha256(f"{seed}:{d.name}".encode()).hexdigest())
        share = None if limit is None else limit if name == "train" else max(limit // 8, 1000)
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text("".join(p + "\n" for p in _limit((p for d in docs for p in d.paragraphs), share)),
                               encoding="utf-8")
    train_lines = paths["train"].read_text(encoding="utf-8").splitlines()
    paths["tokenizer"] = train_tokenizer(train_lines, folder / "tokenizer", recipe.vocab_size)
    paths["project"] = folder / "edgekd.toml"
    paths["project"].write_text(project_toml(recipe, seed))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edgekd.examples.pydocs prepare DIR [--seed S] [--tiny] [--max-chars N] [--sources DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m edgekd.examples.pydocs", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("prepare", help="write the splits, tokenizer and edgekd.toml into DIR")
    cmd.add_argument("folder", type=Path, metavar="DIR")
    cmd.add_argument("--seed", type=int, default=0, help="of the split and of the project's training (default 0)")
    cmd.add_argument("--tiny", action="store_true", help="a small slice, vocabulary and models: a CI build in seconds")
    cmd.add_argument("--max-chars", type=int, default=None, help="characters of train text to keep (default: all; tiny: 30000)")
    cmd.add_argument("--sources", type=Path, default=SOURCES, help=f"the reST sources folder (default {SOURCES})")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be 0 or more")
    try:
        paths = prepare(args.folder, seed=args.seed, tiny=args.tiny, max_chars=args.max_chars, source=args.sources)
    except DataError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    sizes = {name: paths[name].stat().st_size for name in SPLIT_NAMES}
    print(f"wrote {args.folder}: " + ", ".join(f"{name} {n:,} bytes" for name, n in sizes.items())
          + f"; build with: edgekd build --project {paths['project']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
