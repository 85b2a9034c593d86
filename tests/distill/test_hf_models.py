"""Hugging Face models as teacher or student (edgekd.distill.hf_models): [*.hf] tables resolved
into real transformers models (random weights from small configs, nothing downloaded), config
overrides checked, task dims from the data, DistilBERT-style initialisation from the teacher."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from edgekd.config.hf import HfModelSpec
from edgekd.config.models import StudentConfig, TeacherConfig
from edgekd.distill import hf_models
from edgekd.errors import ConfigError

TEACHER = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 64,
           "max_position_embeddings": 16}


def built(table: dict, key: str = "student.hf", teacher: dict | None = None, base_dir: Path = Path("."), **dims):
    resolved = hf_models.resolve(HfModelSpec(**table), key, base_dir, HfModelSpec(**teacher) if teacher else None)
    dims = {"vocab_size": 50, "num_labels": 3, "max_length": 16, **dims}
    return hf_models.build(resolved, "text-classification", **dims)


def test_a_model_type_with_overrides_gets_the_task_head_and_the_data_vocabulary():
    model = built(TEACHER, "teacher.hf")
    assert isinstance(model, BertForSequenceClassification)
    assert (model.config.num_labels, model.config.vocab_size, model.config.num_hidden_layers, model.config.hidden_size) == (3, 50, 4, 32)
    logits = model(input_ids=torch.randint(0, 50, (2, 16))).logits
    assert logits.shape == (2, 3)


def test_a_student_from_the_teachers_config_keeps_what_it_does_not_override():
    model = built({"base": "teacher", "num_hidden_layers": 2}, teacher=TEACHER)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.intermediate_size) == (2, 32, 64)


def test_llama_head_dim_follows_overridden_widths_unless_given():
    """LlamaConfig stores head_dim = hidden_size // heads at init (128 for its defaults): a narrower
    config from overrides must not keep 128-wide heads (4x wider projections than the model's)."""
    llama = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 16}
    resolved = hf_models.resolve(HfModelSpec(**llama), "teacher.hf", Path("."), None)
    teacher = hf_models.build(resolved, "causal-lm", vocab_size=50, max_length=16)
    assert teacher.config.head_dim == 16 and teacher.model.layers[0].self_attn.q_proj.weight.shape == (64, 64)
    assert teacher.model.layers[0].self_attn.k_proj.weight.shape == (32, 64)  # 2 grouped KV heads of 16
    student = hf_models.build(hf_models.resolve(HfModelSpec(base="teacher", hidden_size=32, num_attention_heads=2), "student.hf",
                                                Path("."), HfModelSpec(**llama)), "causal-lm", vocab_size=50, max_length=16)
    assert student.config.head_dim == 16 and student.model.layers[0].self_attn.q_proj.weight.shape == (32, 32)
    given = hf_models.build(hf_models.resolve(HfModelSpec(**llama, head_dim=8), "teacher.hf", Path("."), None), "causal-lm",
                            vocab_size=50, max_length=16)
    assert given.config.head_dim == 8 and given.model.layers[0].self_attn.q_proj.weight.shape == (32, 64)


def test_an_unknown_override_is_refused_with_the_closest_field():
    with pytest.raises(ConfigError, match="no field 'num_hiden_layers' .closest: num_hidden_layers"):
        built({"model_type": "bert", "num_hiden_layers": 2})


def test_bad_configs_are_config_errors_not_tracebacks():
    with pytest.raises(ConfigError, match="transformers cannot make its config"):
        built({"model_type": "no-such-model"})
    with pytest.raises(ConfigError, match="hidden size .32. is not a multiple of the number of attention heads .5."):
        built({**TEACHER, "num_attention_heads": 5})
    with pytest.raises(ConfigError, match="max_position_embeddings 16 < the data's max_length 32"):
        built(TEACHER, max_length=32)
    with pytest.raises(ConfigError, match="base = 'teacher' needs a Hugging Face teacher"):
        built({"base": "teacher"})


def test_config_tables_need_one_source_and_fit_their_role():
    with pytest.raises(ValueError, match="exactly one of 'path', 'base' or 'model_type'"):
        HfModelSpec(path="x", model_type="bert")
    with pytest.raises(ValueError, match="init = 'teacher' needs base = 'teacher'"):
        HfModelSpec(model_type="bert", init="teacher")
    with pytest.raises(ValueError, match="'base' is for students"):
        TeacherConfig(hf={"base": "teacher"}, train={})
    with pytest.raises(ValueError, match="exactly one of 'checkpoint'"):
        TeacherConfig(hf={"model_type": "bert"})
    TeacherConfig(hf={"path": "folder"})  # a folder holds its weights: neither checkpoint nor train needed
    with pytest.raises(ValueError, match="exactly one of 'factory', \\[student.search\\] or \\[student.hf\\]"):
        StudentConfig(factory="a.b:c", hf={"base": "teacher"})


def save_folder(folder: Path, model) -> Path:
    model.save_pretrained(folder)
    return folder


def test_a_model_folder_loads_its_own_weights_and_is_hashed(tmp_path):
    torch.manual_seed(0)
    trained = BertForSequenceClassification(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=64, max_position_embeddings=16, num_labels=3))
    folder = save_folder(tmp_path / "teacher", trained)
    resolved = hf_models.resolve(HfModelSpec(path="teacher"), "teacher.hf", tmp_path)
    assert resolved["path"] == str(folder.resolve()) and "model.safetensors" in resolved["files"]
    model = hf_models.build(resolved, "text-classification", vocab_size=50, num_labels=3, max_length=16)
    ids = torch.randint(0, 50, (2, 8))
    assert torch.equal(model.eval()(input_ids=ids).logits, trained.eval()(input_ids=ids).logits)
    assert hf_models.head_is_trained(resolved, "text-classification", 3)
    assert not hf_models.head_is_trained(resolved, "text-classification", 4)  # another label set: the head is new
    with pytest.raises(ConfigError, match="vocabulary has 60 tokens, the data's tokenizer 61"):
        hf_models.build(resolved, "text-classification", vocab_size=61, num_labels=3, max_length=16)


def test_a_folder_without_a_head_for_the_task_is_not_a_trained_teacher(tmp_path):
    save_folder(tmp_path / "encoder", BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                             intermediate_size=64)))
    resolved = hf_models.resolve(HfModelSpec(path="encoder"), "teacher.hf", tmp_path)
    assert not hf_models.head_is_trained(resolved, "text-classification", 3)
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        hf_models.resolve(HfModelSpec(path="nowhere"), "teacher.hf", tmp_path)


def test_distilbert_style_init_copies_embeddings_head_and_every_other_layer():
    teacher = built(TEACHER, "teacher.hf")
    student = built({"base": "teacher", "num_hidden_layers": 2, "init": "teacher"}, teacher=TEACHER)
    note = hf_models.init_from_teacher(student, teacher)
    assert "student layers [0, 1] <- teacher layers [0, 2]" in note and "kept random" not in note
    s, t = student.state_dict(), teacher.state_dict()
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert torch.equal(s["bert.encoder.layer.1.output.dense.weight"], t["bert.encoder.layer.2.output.dense.weight"])
    assert not torch.equal(s["bert.encoder.layer.1.output.dense.weight"], t["bert.encoder.layer.1.output.dense.weight"])


def test_distilbert_style_init_needs_the_teachers_width_and_at_most_its_layers():
    teacher = built(TEACHER, "teacher.hf")
    with pytest.raises(ConfigError, match="hidden_size 16 is not the teacher's 32"):
        hf_models.init_from_teacher(built({"base": "teacher", "hidden_size": 16, "num_attention_heads": 2}, teacher=TEACHER), teacher)
    with pytest.raises(ConfigError, match="the student has 6 layers, the teacher only 4"):
        hf_models.init_from_teacher(built({"base": "teacher", "num_hidden_layers": 6}, teacher=TEACHER), teacher)


def test_a_folders_own_tokenizer_must_be_the_datas(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    def tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
        vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *words])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    tokenizer(["cat", "dog"]).save_pretrained(folder)
    spec = {"path": str(folder), "key": "teacher.hf"}
    hf_models.check_tokenizer(spec, tokenizer(["cat", "dog"]).get_vocab(), "tok.json")
    with pytest.raises(ConfigError, match="differs from data.tokenizer tok.json .4 vs 4 tokens, 2 pieces with another id"):
        hf_models.check_tokenizer(spec, tokenizer(["dog", "cat"]).get_vocab(), "tok.json")


def test_a_llama_student_with_tied_embeddings_starts_from_every_other_teacher_layer():
    from transformers import LlamaConfig, LlamaForCausalLM

    def llama(layers: int) -> LlamaForCausalLM:
        return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True))

    torch.manual_seed(0)
    teacher, student = llama(4), llama(2)
    note = hf_models.init_from_teacher(student, teacher)
    assert "student layers [0, 1] <- teacher layers [0, 2]" in note and "kept random" not in note
    assert torch.equal(student.model.layers[1].self_attn.k_proj.weight, teacher.model.layers[2].self_attn.k_proj.weight)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight) and student.lm_head.weight is student.model.embed_tokens.weight
