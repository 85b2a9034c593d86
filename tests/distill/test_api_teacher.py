"""The API teacher: its JSONL file (errors name the file and line), the rows (loss on the response
only), the mapping of the API's top-k onto the student's tokens with its dropped-mass accounting,
the sparse topk_kd loss, and the export that writes such a file from a local model."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import train_word_tokenizer, write

from edgekd.data.hf_files import load_tokenizer
from edgekd.distill.api_export import ExportSettings, export_responses, module_logits
from edgekd.distill.api_responses import read_responses
from edgekd.distill.api_teacher import ApiTeacher
from edgekd.distill.topk_kd import topk_kl
from edgekd.errors import DataError

TEXTS = ["the cat sees the ball .", "a dog likes the river .", "my friend finds a red house ."]
MAX_LENGTH = 12


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(train_word_tokenizer(TEXTS, tmp_path_factory.mktemp("tok") / "tokenizer.json"))


def item(token: str, logprob: float, alternatives: list[tuple[str, float]]) -> dict:
    return {"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alternatives]}


WORDS = {"prompt": "the cat", "response": " sees the ball .", "top_logprobs": [
    item(" sees", -0.2, [(" sees", -0.2), (" likes", -1.9), (" zzz", -3.0)]),  # zzz: unknown to the student, dropped
    item(" the ball", -0.1, [(" the ball", -0.1), (" a", -2.5)]),             # two student tokens: target on the first
    [{"token": " .", "logprob": -0.05}, {"token": "!", "logprob": -3.5}]]}     # list form: the chosen one found in the text
PIECES = {"prompt": "a dog", "response": " likes the river", "top_logprobs": [
    item(" li", -0.5, [(" li", -0.5)]),        # the student's "likes" starts here, but " li" is not it: no target
    item("kes", -0.1, [("kes", -0.1)]),        # inside a student token: no target
    item(" the river", -0.3, [(" the river", -0.3), (" my", -1.4)])]}


def api_file(folder: Path, *records: dict) -> Path:
    return write(folder / "responses.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")


def test_response_tokens_are_scored_and_the_prompt_is_not(tmp_path, tokenizer):
    teacher = ApiTeacher(api_file(tmp_path, WORDS, {"prompt": "a dog", "response": " likes the river"}), tokenizer, MAX_LENGTH, len(tokenizer), 0)
    rows = teacher.data.rows
    ids = tokenizer("the cat sees the ball .")["input_ids"]
    np.testing.assert_array_equal(rows.input_ids[0, :6], ids)
    np.testing.assert_array_equal(rows.labels[0], [-100, -100, *ids[2:], *[-100] * (MAX_LENGTH - 6)])
    np.testing.assert_array_equal(rows.attention_mask[0], [1] * 6 + [0] * (MAX_LENGTH - 6))
    assert teacher.data.with_logprobs == 1 and teacher.data.records == 2


def test_the_top_k_maps_onto_student_tokens_and_the_dropped_mass_is_counted(tmp_path, tokenizer):
    teacher = ApiTeacher(api_file(tmp_path, WORDS, PIECES), tokenizer, MAX_LENGTH, len(tokenizer), 0)
    stats, e = teacher.data.stats, math.exp
    assert stats.api_tokens == 6 and stats.positions == 4 + 3
    assert stats.targeted == 3 + 1  # sees, the, . ; the (of "the river")
    dropped = [e(-3.0), 0.0, e(-3.5), e(-0.5), e(-0.1), 0.0]
    assert stats.metrics()["dropped_mass_mean"] == pytest.approx(sum(dropped) / 6)
    assert stats.metrics()["target_share"] == pytest.approx(4 / 7)
    out = teacher.logits({"index": np.array([0, 1, 5]), "input_ids": np.zeros((3, MAX_LENGTH), dtype=np.int64)})
    vocab = tokenizer.get_vocab()
    sees, likes, the, a = (vocab[w] for w in ("sees", "likes", "the", "a"))
    kept = e(-0.2) + e(-1.9)
    assert out[0, 1, sees] == pytest.approx(math.log(e(-0.2) / kept)) and out[0, 1, likes] == pytest.approx(math.log(e(-1.9) / kept))
    assert np.isfinite(out[0, 1]).sum() == 2 and np.isfinite(out[0, 2]).sum() == 2 and out[0, 2, a] > -np.inf
    assert np.isfinite(out[0, 3]).sum() == 0 and np.isfinite(out[0, 4]).sum() == 1  # "ball": no API token starts there; ".": one kept
    assert np.isfinite(out[1]).sum() == 2 and np.isfinite(out[1, 2]).sum() == 2 and out[1, 2, the] > out[1, 2, vocab["my"]]
    assert not np.isfinite(out[2]).any()  # a row past the API rows (a real block) has no target


BAD_LINES = [
    ("{not json", "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"prompt": "a"}', "'response' is missing"),
    ('{"prompt": "a", "response": " b", "top_logprobs": {"x": 1}}', "not a list"),
    ('{"prompt": "a", "response": " b", "top_logprobs": [[{"token": " b", "logprob": 0.5}]]}', "logprob 0.5"),
    ('{"prompt": "a", "response": " b", "top_logprobs": [[{"logprob": -1}]]}', "string 'token'"),
    ('{"prompt": "a", "response": " b c", "top_logprobs": [[{"token": " b", "logprob": -1}]]}', "spell 2 of the response's 4"),
    ('{"prompt": "a", "response": " b", "top_logprobs": [[{"token": " x", "logprob": -1}]]}', "no alternative continues"),
]


@pytest.mark.parametrize(("line", "says"), BAD_LINES, ids=[s for _, s in BAD_LINES])
def test_a_malformed_line_is_a_data_error_naming_file_and_line(tmp_path, line, says):
    path = write(tmp_path / "r.jsonl", json.dumps({"prompt": "a", "response": " b"}) + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=says) as caught:
        read_responses(path)
    assert str(caught.value.args[0]).startswith(f"{path}:3: ")


def test_an_empty_or_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_responses(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="no responses"):
        read_responses(write(tmp_path / "empty.jsonl", "\n"))


def test_topk_kl_is_kl_on_targeted_rows_and_skips_the_others():
    torch.manual_seed(0)
    s, t = torch.randn(3, 7, requires_grad=True), torch.randn(3, 7)
    full = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean", log_target=True)
    assert topk_kl(s, t).item() == pytest.approx(full.item(), rel=1e-5)
    sparse = t.clone()
    sparse[0, 3:] = float("-inf")  # a top-3 row
    sparse[2] = float("-inf")      # no target
    p = torch.softmax(t[0, :3], -1)
    row0 = (p * (p.log() - F.log_softmax(s[0], -1)[:3])).sum()
    row1 = F.kl_div(F.log_softmax(s[1], -1), F.log_softmax(t[1], -1), reduction="sum", log_target=True)
    assert topk_kl(s, sparse).item() == pytest.approx(((row0 + row1) / 2).item(), rel=1e-5)
    none = topk_kl(s, torch.full((3, 7), float("-inf")))
    none.backward()
    assert none.item() == 0.0 and s.grad is not None


def test_export_logits_of_a_transformers_model_reuse_its_kv_cache_and_match_the_full_forward():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32)).eval()
    logits_of, ids, calls = module_logits(model), [3, 4, 5], []
    original = model.forward
    model.forward = lambda input_ids, **kw: calls.append(input_ids.shape[1]) or original(input_ids, **kw)
    for token in (7, 8, 9):
        got = logits_of(ids)
        with torch.no_grad():
            full = original(torch.tensor([ids])).logits[0, -1].numpy()
        assert np.allclose(got, full, atol=1e-5)
        ids = [*ids, token]
    logits_of([1, 2])  # not an extension of the last sequence: the whole of it again
    assert calls == [3, 1, 1, 2]


def test_the_export_writes_a_file_the_api_teacher_reads_with_the_models_logprobs(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=32)).eval()
    out = tmp_path / "api.jsonl"
    assert export_responses(module_logits(model), tokenizer, ["the cat", "a dog likes"], out, ExportSettings(max_new_tokens=5, top_logprobs=3)) == 2
    records = read_responses(out)
    ids = tokenizer(records[0].prompt)["input_ids"]
    specials = {tokenizer.pad_token_id, 1}  # [PAD], [UNK]: their text is not a student token
    dropped, targeted = [], 0
    for token in records[0].tokens:
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1)
        chosen = int(logp.argmax())
        assert token.alternatives[0].logprob == pytest.approx(float(logp[chosen]), abs=1e-5) and len(token.alternatives) == 3
        top = logp.topk(3).indices.tolist()
        masses = [math.exp(float(logp[t])) for t in top]
        dropped.append(sum(masses) if chosen in specials else sum(m for t, m in zip(top, masses) if t in specials))
        targeted += chosen not in specials
        ids.append(chosen)
    assert records[0].prompt + records[0].response == tokenizer.decode(ids)
    teacher = ApiTeacher(out, tokenizer, MAX_LENGTH, len(tokenizer), 0)
    first = read_responses(api_file(tmp_path / "one", json.loads(out.read_text().splitlines()[0])))
    alone = ApiTeacher(tmp_path / "one" / "responses.jsonl", tokenizer, MAX_LENGTH, len(tokenizer), 0).data.stats
    assert len(first) == 1 and alone.targeted == targeted and alone.dropped_mass == pytest.approx(sum(dropped), abs=1e-6)
    assert teacher.has_logprobs == (teacher.data.stats.targeted > 0)


def test_the_export_command_writes_the_file_from_a_model_folder(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from edgekd.distill.api_export import main

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(tmp_path / "model")
    tokenizer_file = train_word_tokenizer(TEXTS, tmp_path / "tokenizer.json")
    prompts = write(tmp_path / "prompts.txt", "the cat\n\na dog likes\n")
    out = tmp_path / "r.jsonl"
    assert main(["export", "--model", str(tmp_path / "model"), "--tokenizer", str(tokenizer_file), "--prompts", str(prompts),
                 "--out", str(out), "--max-new-tokens", "3", "--no-logprobs"]) == 0
    records = read_responses(out)
    assert [r.prompt for r in records] == ["the cat", "a dog likes"] and all(r.tokens is None and r.response for r in records)


def test_prompts_from_a_file_are_cut_to_prompt_tokens_and_short_lines_skipped(tmp_path, tokenizer):
    from edgekd.distill.sequence_kd import file_prompts

    prompts, short = file_prompts(write(tmp_path / "p.txt", "the cat sees the ball\na dog\n\nmy friend finds a red house\n"), tokenizer, 3)
    assert short == 1 and prompts.tolist() == [tokenizer("the cat sees")["input_ids"], tokenizer("my friend finds")["input_ids"]]
    with pytest.raises(DataError, match="no prompt line has 9 tokens"):
        file_prompts(tmp_path / "p.txt", tokenizer, 9)
