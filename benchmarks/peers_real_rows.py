"""The row kinds of benchmarks/peers_real.py, opened in benchmarks/peers_worker.py's process: each
row runs one named-input feed (an .npz written by the coordinator) and answers `runner()` (one timed
call) and `profile(runs, dir)` (per-op time, or None where the runtime has no per-op profiler here).

    hf-torch   a transformers model folder in PyTorch eager fp32 (torch.inference_mode); decoders:
               case "prefill" (N tokens, no cache) or "decode" (one token on a KV cache of PAST tokens,
               cropped back after each step so every call sees the same cache)
    ort-feed   an ONNX file in ONNX Runtime (peers_worker.OrtRow's session modes), named feeds
    openvino   an ONNX file or IR compiled by OpenVINO's CPU plugin with the spec's config (its
               documented latency default: {"PERFORMANCE_HINT": "LATENCY"}), reshaped to the feed's shapes
    genai      an onnxruntime-genai model folder: "prefill" appends N tokens to a fresh sequence
               (rewind_to(0) between calls); "decode" is one generate_next_token (the model run on
               the last token, then the greedy pick) in windows of DECODE_WINDOW steps around PAST
               cached tokens (PAST - 8 .. PAST + 6), rewound between windows
    edgekd     an edgekd engine file with the runtime and settings engine.json names
               (edgekd.backends.runners.open_runner: ONNX Runtime or OpenVINO)
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from peers_worker import OrtRow, os_threads

KINDS = ("hf-torch", "ort-feed", "openvino", "genai", "edgekd")
OV_DEVICE = "CPU"
DECODE_WINDOW = 16  # genai decode steps between rewinds (GenaiRow)


def load_feed(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


class HfTorchRow:
    def __init__(self, spec: dict[str, Any]) -> None:
        import torch
        import transformers

        torch.manual_seed(0)
        self.torch, self.case = torch, spec.get("case", "single")
        self.model = getattr(transformers, spec["model_class"]).from_pretrained(spec["hf_dir"]).eval()
        self.feed = {k: torch.from_numpy(v) for k, v in load_feed(spec["feed"]).items()}
        self.threads = {"torch.get_num_threads": torch.get_num_threads()}
        self.graph_ops: dict[str, int] | None = None

    def _decode_runner(self) -> Callable[[], object]:
        from transformers import DynamicCache

        keys = sorted(k for k in self.feed if k.startswith("past_key_values") and k.endswith(".key"))
        legacy = tuple((self.feed[k], self.feed[k[: -len(".key")] + ".value"]) for k in keys)
        cache, past = DynamicCache.from_legacy_cache(legacy), legacy[0][0].shape[2]
        ids, mask = self.feed["input_ids"], self.feed["attention_mask"]
        model, mode = self.model, self.torch.inference_mode

        def run_once() -> object:
            with mode():
                out = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache.crop(past)  # the next step sees the same PAST tokens
            return out
        return run_once

    def runner(self) -> Callable[[], object]:
        if self.case == "decode":
            return self._decode_runner()
        feed = {k: v for k, v in self.feed.items() if not k.startswith("past_key_values") and k != "position_ids"}
        model, mode = self.model, self.torch.inference_mode

        def run_once() -> object:
            with mode():
                return model(**feed)
        return run_once

    def profile(self, runs: int, workdir: Path) -> None:
        return None


class FeedOrtRow(OrtRow):
    """peers_worker.OrtRow (its session modes, thread count and optimized-graph op census) fed a named feed."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.feed = load_feed(spec["feed"])

    def runner(self) -> Callable[[], object]:  # type: ignore[override]
        run, feed = self.session.run, self.feed
        return lambda: run(None, feed)

    def profile(self, runs: int, workdir: Path) -> list[dict[str, Any]]:  # type: ignore[override]
        from edgekd.perf.scenarios import profile_ops

        return profile_ops(self.open, self.feed, runs, workdir)


class OpenVinoRow:
    def __init__(self, spec: dict[str, Any]) -> None:
        import openvino as ov

        self.core, self.feed, self.config = ov.Core(), load_feed(spec["feed"]), dict(spec["config"])
        self.model = self.core.read_model(spec["model"])
        # static shapes, each case at its own: OpenVINO's CPU plugin is fastest on them (its performance guide;
        # measured here on the decoder, dynamic shapes cost it about 2x)
        self.model.reshape({name: list(array.shape) for name, array in self.feed.items()})
        before = os_threads()
        self.compiled = self.core.compile_model(self.model, OV_DEVICE, self.config)
        self.request = self.compiled.create_infer_request()
        self.request.infer(self.feed)  # the plugin starts its threads on the first inference
        self.threads = {"openvino.INFERENCE_NUM_THREADS": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
                        "openvino.NUM_STREAMS": str(self.compiled.get_property("NUM_STREAMS")), "os_threads_started": os_threads() - before}
        self.graph_ops = dict(sorted(_count(op.get_rt_info()["layerType"].astype(str) for op in self.compiled.get_runtime_model().get_ops()).items()))

    def runner(self) -> Callable[[], object]:
        infer, feed = self.request.infer, self.feed
        return lambda: infer(feed)

    def profile(self, runs: int, workdir: Path) -> list[dict[str, Any]]:
        from edgekd.backends.openvino.profile import compiled_top_ops

        compiled = self.core.compile_model(self.model, OV_DEVICE, {**self.config, "PERF_COUNT": "YES"})
        return compiled_top_ops(compiled, self.feed, runs)


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[item] += 1
    return dict(out)


class GenaiRow:
    """onnxruntime-genai's Generator with its model folder's genai_config.json defaults (its own session options).

    A decode step is timed the way genai decodes: generate_next_token, which runs the model on the
    token it picked last and picks the next. Appending one token and rewinding after each call (this
    row's first way) added a heavy p90 tail (8.3 ms where generate_next_token's was 4.5 on the VNNI
    host: findings section 8), so steps run in windows: rewind to PAST - 8 cached tokens, append the
    step token and pick (that call also counts, 1 in DECODE_WINDOW - 1), then plain steps up to PAST + 6."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import onnxruntime_genai as og

        self.og, self.case = og, spec["case"]
        before = os_threads()
        self.model = og.Model(spec["model_dir"])
        feed = load_feed(spec["feed"])
        self.prompt, self.step, self.prefill = (feed[k].astype(np.int32) for k in ("prompt", "step", "prefill"))
        self.keep = max(1, self.prompt.shape[1] - DECODE_WINDOW // 2)
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=max(int(spec["max_length"]), self.keep + DECODE_WINDOW + 2))
        self.generator = og.Generator(self.model, params)
        if self.case == "decode":
            self.generator.append_tokens(self.prompt[:, :self.keep])
        self.runner()()
        self.threads = {"os_threads_started": os_threads() - before + 1}
        self.graph_ops: dict[str, int] | None = None

    def runner(self) -> Callable[[], object]:
        gen, keep = self.generator, self.keep
        if self.case != "decode":
            def prefill_once() -> object:
                gen.append_tokens(self.prefill)  # one forward pass over the prompt
                gen.rewind_to(0)
                return None
            return prefill_once

        def decode_once() -> object:
            if gen.token_count() == keep or gen.token_count() >= keep + DECODE_WINDOW or gen.is_done():
                gen.rewind_to(keep)  # a new window: the model run on the step token after `keep` cached ones
                gen.append_tokens(self.step)
            gen.generate_next_token()  # after append_tokens: the pick only; else the model run on the last pick, then the pick
            return None
        return decode_once

    def profile(self, runs: int, workdir: Path) -> None:
        return None


class EdgekdRow:
    """The engine through edgekd's own runner seam, with the settings engine.json records."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from edgekd.backends.runners import open_runner, settings_from, threads

        self.spec, self.feed = spec, load_feed(spec["feed"])
        if spec.get("keep_logits"):  # edgekd.graph.logits_to_keep: the prompt pass's head for the last position only
            from edgekd.graph.logits_to_keep import KEEP

            self.feed[KEEP] = np.ones(1, np.int64)
        self.settings = settings_from(spec["runtime"], spec["settings"])
        before = os_threads()
        self.runner_ = open_runner(spec["runtime"], Path(spec["model"]), self.settings)
        self.runner_.run(self.feed)
        self.threads = {"engine_threads": threads(self.settings), "os_threads_started": os_threads() - before + 1}
        self.graph_ops: dict[str, int] | None = None

    def runner(self) -> Callable[[], object]:
        run, feed = self.runner_.run, self.feed
        return lambda: run(feed)

    def profile(self, runs: int, workdir: Path) -> list[dict[str, Any]]:
        from edgekd.backends.runners import OPENVINO

        if self.spec["runtime"] == OPENVINO:
            from edgekd.backends.openvino.profile import top_ops

            return top_ops(Path(self.spec["model"]), self.settings, self.feed, runs)  # type: ignore[arg-type]  # the bench stage's profile
        from edgekd.backends.ort.session import open_session
        from edgekd.perf.scenarios import profile_ops

        return profile_ops(lambda hook: open_session(Path(self.spec["model"]), self.settings, configure=hook),  # type: ignore[arg-type]
                           self.feed, runs, workdir)


ROWS = {"hf-torch": HfTorchRow, "ort-feed": FeedOrtRow, "openvino": OpenVinoRow, "genai": GenaiRow, "edgekd": EdgekdRow}


def open_row(spec: dict[str, Any]) -> Any:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return ROWS[spec["kind"]](spec)
