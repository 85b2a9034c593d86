"""Transformer distillation losses, registered as 'hidden_mse' and 'attention_kl'.

- `hidden_mse`: the hidden-state and embedding-layer losses of TinyBERT (Jiao et al. 2020, "TinyBERT:
  Distilling BERT for Natural Language Understanding", arXiv:1909.10351, eqs. 8 and 9):
  MSE(H_s W_h, H_t) per (student layer, teacher layer) pair, with a learned projection W_h.
- `attention_kl`: the self-attention distribution transfer of MiniLM (Wang et al. 2020, "MiniLM: Deep
  Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained Transformers",
  arXiv:2002.10957): KL(A_t || A_s) of the attention maps A = softmax(Q K^T / sqrt(d)), per head.
  As in MiniLMv2 (Wang et al. 2021, arXiv:2012.15828), Q and K of both models are split into the same
  number of relation heads, so teacher and student may have different head counts. TinyBERT's
  attention loss compares the same maps (it takes the MSE of the unnormalized scores).

Both read token states [B, T, H], so they weigh only the tokens the batch's attention mask keeps
(`LossInputs.attention_mask`, 1 = token, 0 = padding; all tokens when the batch has none). The
attention maps are computed from the outputs of the query and key projections rather than read from
the model, so they do not depend on the attention implementation (transformers' default SDPA
attention returns no probabilities).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgekd.config.strict import Strict
from edgekd.distill.loss_base import DistillLoss, LossInputs, register
from edgekd.errors import ConfigError

Features = Mapping[str, torch.Tensor]

POOLED_HINT = ("token states are compared position by position, so teacher and student must read the same token "
               "sequence; with different inputs (another tokenizer, cross-input distillation) pair pooled [B, H] "
               "features instead (e.g. 'bert.pooler')")


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` [B, T] over the positions where `mask` [B, T] is non-zero (all when None)."""
    if mask is None:
        return values.mean()
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def token_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of [B, T, H] token states over the kept tokens (mask [B, T]; None: all) and
    the hidden units; of [B, H] pooled states, over all elements."""
    if student.dim() == 2:
        return F.mse_loss(student, teacher)
    return masked_mean((student - teacher).pow(2).mean(dim=-1), mask)


def attention_log_probs(query: torch.Tensor, key: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
                        causal: bool = False) -> torch.Tensor:
    """log softmax(Q K^T / sqrt(d_head)) per head, [B, heads, T, T], in float32, from the query and key
    projections' outputs [B, T, D] split into `heads` heads of D / heads. Keys where `mask` [B, T] is
    0 get no probability (so does every later key when `causal`): with heads equal to the model's
    head count this is the model's own attention (before dropout; for rotary models such as Llama,
    q_proj/k_proj outputs are before the rotation, so it is the map of the unrotated Q and K)."""
    batch, length, width = query.shape
    d_head = width // heads
    q = query.float().view(batch, length, heads, d_head).transpose(1, 2)
    k = key.float().view(batch, key.shape[1], heads, d_head).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d_head)
    keep = None if mask is None else mask.bool()[:, None, None, :]
    if causal:
        lower = torch.ones(length, key.shape[1], dtype=torch.bool, device=scores.device).tril()
        keep = lower if keep is None else keep & lower
    if keep is not None:  # the lowest finite value, not -inf: a fully masked row stays finite (uniform)
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return scores.log_softmax(dim=-1)


def attention_kl_div(log_student: torch.Tensor, log_teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """KL(A_t || A_s) of log attention maps [B, heads, T, T]: summed over keys, averaged over heads and
    over the query positions that `mask` [B, T] keeps (all when None)."""
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=-1)  # masked keys: 0 * (finite) = 0
    return masked_mean(kl.mean(dim=1), mask)


def _checked_mask(key: str, mask: torch.Tensor | None, feature: torch.Tensor, layer: str) -> torch.Tensor | None:
    """The batch's attention mask for `feature` when it is token states [B, T, ...] (None otherwise)."""
    if feature.dim() != 3 or mask is None:
        return None
    if tuple(mask.shape) != tuple(feature.shape[:2]):
        raise ConfigError(f"{key}: layer '{layer}' gives {_shape(feature)} and the batch's attention_mask is "
                          f"{_shape(mask)}; token states must be [B, T, H] for the mask's [B, T]",
                          "name layers whose outputs have one row per input token (hidden states, Q/K projections)")
    return mask


def _check_same_tokens(key: str, s: torch.Tensor, t: torch.Tensor, s_layer: str, t_layer: str) -> None:
    """Same rows (and, for token states, same sequence length): all but the last dimension agree."""
    if s.shape[:-1] != t.shape[:-1]:
        sizes = "batch and sequence sizes" if s.dim() == 3 else "batch sizes"
        raise ConfigError(f"{key}: student '{s_layer}' gives {_shape(s)} and teacher '{t_layer}' gives {_shape(t)}; "
                          f"their {sizes} differ", POOLED_HINT)


class _HiddenParams(Strict):
    pairs: list[tuple[str, str]] = Field(min_length=1, description="[[student_layer, teacher_layer], ...]")


@register
class HiddenMSE(DistillLoss):
    """TinyBERT's hidden-state / embedding-layer loss (arXiv:1909.10351): for each (student layer,
    teacher layer) pair, MSE(Linear(student state), teacher state), mean over the pairs.

    Layers give token states [B, T, H] (e.g. "bert.embeddings", "bert.encoder.layer.1": a layer's
    tuple output is read as its hidden state) or pooled states [B, H] ("bert.pooler"). Token states
    are compared only where the batch's attention mask keeps a token. Each pair has its own learned
    nn.Linear (student H -> teacher H, TinyBERT's W_h), created by `setup()` from one batch's
    features and optimized with the student. Both models must read the same tokens; otherwise only
    pooled features can be paired (a ConfigError says so)."""

    name = "hidden_mse"
    Params = _HiddenParams
    cfg: _HiddenParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.projections = nn.ModuleList()

    def student_layers(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.cfg.pairs))

    def teacher_layers(self) -> list[str]:
        return list(dict.fromkeys(t for _, t in self.cfg.pairs))

    def _pair(self, student: Features, teacher: Features, pair: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
        s_layer, t_layer = pair
        s, t = self._feature(student, s_layer, "student"), self._feature(teacher, t_layer, "teacher")
        if s.dim() not in (2, 3) or t.dim() not in (2, 3) or s.dim() != t.dim():
            raise ConfigError(f"{self.key}: student '{s_layer}' gives {_shape(s)} and teacher '{t_layer}' gives "
                              f"{_shape(t)}; hidden_mse needs both token states [B, T, H] or both pooled [B, H]",
                              "pair token states with token states (embeddings, encoder layers) and pooled with "
                              "pooled; " + POOLED_HINT)
        _check_same_tokens(self.key, s, t, s_layer, t_layer)
        return s, t

    def setup(self, student_features: Features, teacher_features: Features) -> None:
        if len(self.projections):
            return
        for pair in self.cfg.pairs:
            s, t = self._pair(student_features, teacher_features, pair)
            self.projections.append(nn.Linear(s.shape[-1], t.shape[-1]).to(device=s.device, dtype=s.dtype))

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if len(self.projections) != len(self.cfg.pairs):
            raise RuntimeError(f"{self.key}: call setup() with one batch's features before the first forward")
        losses = []
        for pair, projection in zip(self.cfg.pairs, self.projections):
            s, t = self._pair(inputs.student_features, inputs.teacher_features, pair)
            mask = _checked_mask(self.key, inputs.attention_mask, s, pair[0])
            losses.append(token_mse(projection(s), t.to(s.dtype), mask))
        return torch.stack(losses).mean()


class _AttentionParams(Strict):
    pairs: list[tuple[str, str]] = Field(min_length=1, description="[[student_attention, teacher_attention], ...]")
    heads: int = Field(gt=0, description="(relation) heads both models' Q and K are split into")
    query: str = Field("query", min_length=1, description="child name of the query projection (q_lin, q_proj)")
    key: str = Field("key", min_length=1, description="child name of the key projection (k_lin, k_proj)")
    causal: bool = Field(False, description="mask later keys too (decoder LMs)")


@register
class AttentionKL(DistillLoss):
    """MiniLM's self-attention distribution transfer (arXiv:2002.10957) with MiniLMv2's relation heads
    (arXiv:2012.15828): for each (student, teacher) self-attention module pair, the outputs of its
    query and key projections (children `query` and `key`) are split into `heads` heads and
    A = softmax(Q K^T / sqrt(d_head)) is formed per head with padded keys masked (see
    `attention_log_probs`); the loss is KL(A_t || A_s), averaged over heads, kept query positions and
    pairs. `heads` must divide both models' Q/K widths; equal to the models' head counts, A is their
    attention. Grouped-query attention (K narrower than Q) is refused. No learned parameters."""

    name = "attention_kl"
    Params = _AttentionParams
    cfg: _AttentionParams

    def _paths(self, module: str) -> list[str]:
        return [f"{module}.{self.cfg.query}", f"{module}.{self.cfg.key}"]

    def student_layers(self) -> list[str]:
        return list(dict.fromkeys(p for s, _ in self.cfg.pairs for p in self._paths(s)))

    def teacher_layers(self) -> list[str]:
        return list(dict.fromkeys(p for _, t in self.cfg.pairs for p in self._paths(t)))

    def _qk(self, features: Features, module: str, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        q_path, k_path = self._paths(module)
        q, k = self._feature(features, q_path, side), self._feature(features, k_path, side)
        if q.dim() != 3 or q.shape != k.shape:
            raise ConfigError(f"{self.key}: {side} '{q_path}' gives {_shape(q)} and '{k_path}' gives {_shape(k)}; "
                              "attention_kl needs query and key projections of one shape [B, T, D]",
                              "name self-attention modules and set 'query'/'key' to their projections' child names "
                              "(query/key, q_lin/k_lin, q_proj/k_proj); grouped-query attention is not supported")
        if q.shape[-1] % self.cfg.heads:
            raise ConfigError(f"{self.key}: param 'heads' = {self.cfg.heads} does not divide the {side}'s Q/K width "
                              f"{q.shape[-1]} at '{module}'",
                              "choose a head count that divides both models' query widths (e.g. their common "
                              "attention head count)")
        return q, k

    def _checked(self, student: Features, teacher: Features,
                 pair: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q_s, K_s, Q_t, K_t) of one pair, their shapes checked."""
        q_s, k_s = self._qk(student, pair[0], "student")
        q_t, k_t = self._qk(teacher, pair[1], "teacher")
        _check_same_tokens(self.key, q_s, q_t, self._paths(pair[0])[0], self._paths(pair[1])[0])
        return q_s, k_s, q_t, k_t

    def setup(self, student_features: Features, teacher_features: Features) -> None:
        """Checks one batch's features before training (there is nothing to create)."""
        for pair in self.cfg.pairs:
            self._checked(student_features, teacher_features, pair)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        heads, causal = self.cfg.heads, self.cfg.causal
        losses = []
        for pair in self.cfg.pairs:
            q_s, k_s, q_t, k_t = self._checked(inputs.student_features, inputs.teacher_features, pair)
            mask = _checked_mask(self.key, inputs.attention_mask, q_s, self._paths(pair[0])[0])
            log_s = attention_log_probs(q_s, k_s, heads, mask, causal)
            log_t = attention_log_probs(q_t, k_t, heads, mask, causal)
            losses.append(attention_kl_div(log_s, log_t, mask))
        return torch.stack(losses).mean()
