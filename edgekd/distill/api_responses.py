"""An API teacher's file: JSON lines of what one gets from a remote model without its weights.

    {"prompt": str, "response": str, "top_logprobs": [...]}      # top_logprobs optional

`top_logprobs` has one item per response token, in order, either
  - a list of alternatives [{"token": str, "logprob": float}, ...] (the shape of the OpenAI chat API's
    `logprobs.content[i].top_logprobs`); the chosen token is the longest alternative that continues
    the response text at that point, or
  - an object {"token": str, "logprob": float, "top_logprobs": [alternatives]} (a whole
    `logprobs.content[i]` item, which names the chosen token; use it when a sampled token is not
    among its own top alternatives).
The chosen tokens must spell the response exactly. Other keys on a line are ignored; blank lines are
skipped. Any malformed line is a DataError naming the file and the line number.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import DataError

HINT = "each line: {\"prompt\": str, \"response\": str, \"top_logprobs\": [[{\"token\": str, \"logprob\": float}, ...], ...]}"


@dataclass(frozen=True)
class Alternative:
    token: str
    logprob: float


@dataclass(frozen=True)
class ResponseToken:
    """One response token of the API's tokenizer: its text, where it starts in the response, and
    the API's top alternatives for that position."""

    token: str
    start: int
    alternatives: tuple[Alternative, ...]


@dataclass(frozen=True)
class ApiRecord:
    line: int
    prompt: str
    response: str
    tokens: tuple[ResponseToken, ...] | None  # None: the line has no top_logprobs


class LineError(ValueError):
    """What is wrong with one line (read_responses adds the file and the line number)."""


def _alternative(item: Any, where: str) -> Alternative:
    if not isinstance(item, dict) or not isinstance(item.get("token"), str):
        raise LineError(f"{where} is not an object with a string 'token'")
    logprob = item.get("logprob")
    if isinstance(logprob, bool) or not isinstance(logprob, (int, float)) or math.isnan(logprob) or logprob > 1e-6:
        raise LineError(f"{where} has logprob {logprob!r}: a log-probability is a number <= 0")
    return Alternative(item["token"], min(float(logprob), 0.0))


def _alternatives(items: Any, where: str) -> tuple[Alternative, ...]:
    if not isinstance(items, list) or not items:
        raise LineError(f"{where} is not a non-empty list of {{token, logprob}}")
    return tuple(_alternative(item, f"{where}[{i}]") for i, item in enumerate(items))


def _token(item: Any, i: int, response: str, start: int) -> ResponseToken:
    where = f"top_logprobs[{i}]"
    if isinstance(item, dict):
        chosen = _alternative(item, where).token
        alternatives = _alternatives(item.get("top_logprobs"), f"{where}.top_logprobs")
    else:
        alternatives = _alternatives(item, where)
        matching = [a.token for a in alternatives if a.token and response.startswith(a.token, start)]
        if not matching:
            raise LineError(f"{where}: no alternative continues the response at character {start} ({response[start:start + 20]!r})"
                            " and the item names no chosen token")
        chosen = max(matching, key=len)
    if not response.startswith(chosen, start):
        raise LineError(f"{where}: token {chosen!r} does not continue the response at character {start}")
    return ResponseToken(chosen, start, alternatives)


def parse_line(text: str, line: int) -> ApiRecord:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise LineError(f"a JSON {type(data).__name__}, not an object")
    for key in ("prompt", "response"):
        if not isinstance(data.get(key), str):
            raise LineError(f"'{key}' is missing or not a string")
    prompt, response, items = data["prompt"], data["response"], data.get("top_logprobs")
    if items is None:
        return ApiRecord(line, prompt, response, None)
    if not isinstance(items, list):
        raise LineError("'top_logprobs' is not a list (one item per response token)")
    tokens, start = [], 0
    for i, item in enumerate(items):
        token = _token(item, i, response, start)
        tokens.append(token)
        start += len(token.token)
    if start != len(response):
        raise LineError(f"the tokens of 'top_logprobs' spell {start} of the response's {len(response)} characters")
    return ApiRecord(line, prompt, response, tuple(tokens))


def read_responses(path: Path) -> list[ApiRecord]:
    """Every record of the file; a malformed line is a DataError naming the file and the line."""
    if not path.is_file():
        raise DataError(f"{path}: API responses file not found", "give [teacher] responses relative to the project file")
    records = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
                if text.strip():
                    records.append(parse_line(text, number))
            except (LineError, UnicodeDecodeError) as exc:
                raise DataError(f"{path}:{number}: {exc}", HINT) from None
    if not records:
        raise DataError(f"{path}: no responses (the file is empty)", HINT)
    return records
