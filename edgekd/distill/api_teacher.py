"""The API teacher ([teacher] kind = "api"): a file of prompts and responses from a remote model
(edgekd.distill.api_responses), made into training rows and, where the file has top-k
log-probabilities, sparse token-level targets on the student's vocabulary.

Rows: prompt + response tokenized with the data's tokenizer as one text; the loss is on the response
tokens only (student tokens that start at or after the end of the prompt; labels -100 before).

Mapping the API's top-k onto the student's tokens. The API's tokens are strings of its own
tokenizer. For the API token at response characters [a, b):
  1. its target position is the student token that starts first in [a, b) with only whitespace
     between a and its start (none: the API token lies inside a student token; no target there);
  2. the API's chosen token, tokenized alone by the student tokenizer, must begin with that very
     student token (the two tokenizations agree there), else no target at that position;
  3. each alternative goes to the first student token of its own tokenization (an alternative that
     is one student token maps directly; a longer one gives its probability to its first piece, the
     student's next-token event it implies); an alternative that tokenizes to nothing or to the
     unknown token is dropped, and probabilities that land on the same student token add up;
  4. the kept probabilities are renormalised to sum to 1.
Dropped mass: per API token with alternatives, the API probability of the dropped alternatives, or
of all of them where the position gets no target; the build reports its mean and the share of the
student's response positions that have a target. The API's own tail (1 - top-k mass) is reported
beside it: no API gives it.

`ApiTeacher` answers a batch by row ("index") with [B, T, V] log-probabilities: the renormalised
targets at the positions predicting a targeted token (-inf off the top-k), and -inf everywhere at
positions without a target, which `topk_kd` (edgekd.distill.topk_kd) skips.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.fsutil import sha256_file
from edgekd.distill.api_responses import ApiRecord, ResponseToken, read_responses
from edgekd.distill.sequence_data import Rows, rows_of
from edgekd.errors import ConfigError


@dataclass
class MappingStats:
    """What the mapping kept and dropped, summed over the file."""

    api_tokens: int = 0          # API response tokens with alternatives
    dropped_mass: float = 0.0    # their summed dropped probability
    topk_mass: float = 0.0       # their summed top-k probability
    positions: int = 0           # student response positions (scored tokens)
    targeted: int = 0            # of them, with a target
    truncated: int = 0           # records cut at max_length
    skipped: int = 0             # records with no response token left

    def metrics(self) -> dict[str, float | None]:
        return {"dropped_mass_mean": self.dropped_mass / self.api_tokens if self.api_tokens else None,
                "topk_mass_mean": self.topk_mass / self.api_tokens if self.api_tokens else None,
                "target_share": self.targeted / self.positions if self.positions else None}


@dataclass
class Targets:
    """Sparse targets: per entry the row, the position predicting the token, and k (id, log p)."""

    rows: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)


def unknown_id(tokenizer: Any) -> int | None:
    """The unknown token's id: the tokenizer's, or its `tokenizers` model's (a bare tokenizer.json
    loaded into PreTrainedTokenizerFast does not name it)."""
    if tokenizer.unk_token_id is not None:
        return int(tokenizer.unk_token_id)
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    name = getattr(model, "unk_token", None)
    return tokenizer.backend_tokenizer.token_to_id(name) if isinstance(name, str) else None


class StudentTokens:
    """The data tokenizer as the mapping uses it: a text's ids and character offsets, and the first
    student id of a lone string (cached), None for nothing or the unknown token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.unk = unknown_id(tokenizer)
        self.first_id = functools.lru_cache(maxsize=1 << 16)(self._first_id)

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(text, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def _first_id(self, text: str) -> int | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return None if not ids or ids[0] == self.unk else int(ids[0])


def _target_index(token: ResponseToken, base: int, text: str, starts: list[int], first_scored: int) -> int | None:
    a, b = base + token.start, base + token.start + len(token.token)
    for j in range(first_scored, len(starts)):
        if a <= starts[j] < b and not text[a:starts[j]].strip():
            return j
        if starts[j] >= b:
            break
    return None


def _map_token(token: ResponseToken, j: int | None, ids: list[int], student: StudentTokens) -> tuple[dict[int, float], float]:
    """(student id -> kept probability, dropped probability) for one API token at student index j."""
    masses = [math.exp(a.logprob) for a in token.alternatives]
    if j is None or j == 0 or student.first_id(token.token) != ids[j]:
        return {}, sum(masses)
    kept: dict[int, float] = {}
    dropped = 0.0
    for alternative, mass in zip(token.alternatives, masses):
        sid = student.first_id(alternative.token)
        if sid is None:
            dropped += mass
        else:
            kept[sid] = kept.get(sid, 0.0) + mass
    if sum(kept.values()) <= 0:
        return {}, sum(masses)
    return kept, dropped


def map_record(record: ApiRecord, row: int, student: StudentTokens, max_length: int, out: tuple[Targets, MappingStats]
               ) -> tuple[list[int], int] | None:
    """(student ids, first scored position) of one record, its targets added to `out`; None: nothing to learn."""
    targets, stats = out
    text, base = record.prompt + record.response, len(record.prompt)
    ids, offsets = student.encode(text)
    first = next((j for j, (s, e) in enumerate(offsets) if s >= base and e > s), len(ids))
    if len(ids) > max_length:
        stats.truncated += 1
        ids, offsets = ids[:max_length], offsets[:max_length]
    if first >= len(ids):
        stats.skipped += 1
        return None
    stats.positions += len(ids) - first
    starts = [s for s, _ in offsets]
    for token in record.tokens or ():
        j = _target_index(token, base, text, starts, first)
        kept, dropped = _map_token(token, j, ids, student)
        stats.api_tokens += 1
        stats.dropped_mass += dropped
        stats.topk_mass += sum(math.exp(a.logprob) for a in token.alternatives)
        if kept and j is not None:
            total = sum(kept.values())
            targets.rows.append(row)
            targets.positions.append(j - 1)
            targets.ids.append(list(kept))
            targets.logprobs.append([math.log(p / total) for p in kept.values()])
            stats.targeted += 1
    return ids, first


@dataclass(frozen=True)
class ApiData:
    """The file as training rows, its sparse targets and the mapping's accounting."""

    rows: Rows
    targets: Targets
    stats: MappingStats
    records: int
    with_logprobs: int


def api_rows(records: list[ApiRecord], tokenizer: Any, max_length: int, pad_id: int) -> ApiData:
    """Rows (labels on the response tokens only) and targets of every record (see the module docstring)."""
    student, targets, stats = StudentTokens(tokenizer), Targets(), MappingStats()
    sequences, firsts = [], []
    for record in records:
        mapped = map_record(record, len(sequences), student, max_length, (targets, stats))
        if mapped is not None:
            sequences.append(mapped[0])
            firsts.append(mapped[1])
    if not sequences:
        raise ConfigError("API teacher: no response has a token left to learn from (all empty, or cut by max_length)",
                          "raise data.max_length or check the responses")
    lengths = np.asarray([len(s) for s in sequences], dtype=np.int64)
    padded = np.full((len(sequences), max_length), pad_id, dtype=np.int64)
    for i, seq in enumerate(sequences):
        padded[i, :len(seq)] = seq
    rows = rows_of(padded, lengths, np.asarray(firsts, dtype=np.int64), max_length, pad_id)
    return ApiData(rows, targets, stats, len(records), sum(r.tokens is not None for r in records))


class ApiTeacher:
    """A TeacherSource over an API responses file: no model, answers by row (see the module docstring)."""

    def __init__(self, path: Path, tokenizer: Any, max_length: int, vocab_size: int, pad_id: int) -> None:
        self.path = Path(path)
        self.sha256 = sha256_file(self.path)
        self.vocab_size = vocab_size
        self.data = api_rows(read_responses(self.path), tokenizer, max_length, pad_id)
        targets = self.data.targets
        width = max((len(i) for i in targets.ids), default=1)
        self._rows = np.asarray(targets.rows, dtype=np.int64)
        self._positions = np.asarray(targets.positions, dtype=np.int64)
        self._ids = np.zeros((len(targets.ids), width), dtype=np.int64)
        self._logp = np.full((len(targets.ids), width), -np.inf, dtype=np.float32)
        for n, (ids, logp) in enumerate(zip(targets.ids, targets.logprobs)):
            self._ids[n, :len(ids)], self._logp[n, :len(logp)] = ids, logp
        if len(self._ids) and int(self._ids.max()) >= vocab_size:
            raise ConfigError(f"{self.path}: mapped token id {int(self._ids.max())} is outside the student's vocabulary of {vocab_size}",
                              "use the data's tokenizer for the student")

    cacheable = False  # answers by row from memory: nothing to cache, and its -inf rows are not logits

    def describe(self) -> str:
        d = self.data
        logprobs = f"{d.with_logprobs} with top-k log-probabilities" if d.with_logprobs else "no log-probabilities"
        return f"API responses {self.path.name} (sha256 {self.sha256[:12]}…, {d.records} responses, {logprobs})"

    def identity(self) -> dict[str, Any]:
        return {"kind": "api", "sha256": self.sha256}

    @property
    def has_features(self) -> bool:
        return False

    @property
    def reads_inputs(self) -> bool:
        return False

    @property
    def has_logprobs(self) -> bool:
        return bool(len(self._rows))

    def logits(self, batch: Any) -> np.ndarray:
        """[B, T, V] log-probabilities of the rows batch["index"] names (-inf where no target)."""
        index = np.asarray(batch["index"], dtype=np.int64)
        length = np.asarray(batch["input_ids"]).shape[1]
        out = np.full((len(index), length, self.vocab_size), -np.inf, dtype=np.float32)
        for b, row in enumerate(index):  # targets are stored in row order: each row's are one slice
            for n in range(np.searchsorted(self._rows, row, "left"), np.searchsorted(self._rows, row, "right")):
                keep = np.isfinite(self._logp[n])
                out[b, self._positions[n], self._ids[n][keep]] = self._logp[n][keep]
        return out


if __name__ == "__main__":  # python -m edgekd.distill.api_teacher export ... (edgekd.distill.api_export)
    import sys

    from edgekd.distill.api_export import main

    sys.exit(main())
