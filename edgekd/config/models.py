"""Two of the three inputs: Project (what to distill) and Profile (what the team demands). The third,
Target (what the hardware is), is in config/target.py. Unknown keys are rejected everywhere."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from edgekd.config.budgets import Budgets
from edgekd.config.generate import GenerateConfig
from edgekd.config.hf import HfModelSpec
from edgekd.config.on_policy import OnPolicyConfig
from edgekd.config.strict import Strict

FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

# Upper bounds of counts and sizes a user gives: far above any real use, low enough that a typo (an
# extra zero or three) is refused at load time instead of running for days or allocating terabytes.
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 20
MAX_SAMPLES = 100_000_000
MAX_RUNS = 10_000_000
MAX_TOKENS = 1 << 20
MAX_SEED = 2**32 - 1  # numpy's and torch's generators both take it


class TrainConfig(Strict):
    """Supervised training of a teacher from the project's data."""

    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of the steps with a linear lr warm-up before the cosine decay")


class TeacherSpec(Strict):
    """Where soft labels come from: a torch module (`factory` + `checkpoint` or [teacher.train]), an
    ONNX model run through ONNX Runtime (black box: logits only), or logits files made elsewhere
    (several files: federated-style aggregation of parties' soft labels on one shared data set)."""

    kind: Literal["torch", "onnx", "logits", "api"] = "torch"
    factory: str | None = Field(None, pattern=FACTORY_PATTERN, description="'package.module:function' returning a torch.nn.Module")
    args: dict[str, Any] = Field(default_factory=dict)
    hf: HfModelSpec | None = Field(None, description="a Hugging Face model instead of a factory ([teacher.hf])")
    checkpoint: str | None = Field(None, description="safetensors file with the trained weights")
    train: TrainConfig | None = None
    onnx: str | None = Field(None, description="kind = onnx: the teacher's ONNX file")
    logits: list[str] = Field(default_factory=list, description="kind = logits: logits files (edgekd.distill.logits_file)")
    logit_weights: list[float] | None = Field(None, description="weights of several logits files (default equal)")
    responses: str | None = Field(None, description=(
        "kind = api: a JSONL file of {prompt, response, top_logprobs?} from a remote model (edgekd.distill.api_teacher)"))

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSpec:
        if self.kind == "torch":
            if (self.factory is None) == (self.hf is None):
                raise ValueError("a torch teacher needs exactly one of 'factory' or [teacher.hf]")
            if self.hf is not None and self.hf.base is not None:
                raise ValueError("[teacher.hf]: 'base' is for students; give the teacher a 'path' or a 'model_type'")
            if self.hf is not None and self.hf.path is not None:  # the folder holds weights: train fine-tunes them
                if self.checkpoint is not None and self.train is not None:
                    raise ValueError("give at most one of 'checkpoint' or [teacher.train] with a model folder")
            elif (self.checkpoint is None) == (self.train is None):
                raise ValueError("give exactly one of 'checkpoint' (trained weights) or [teacher.train] (train it here)")
        elif self.hf is not None:
            raise ValueError(f"[teacher.hf] goes with kind = 'torch', not '{self.kind}'")
        elif (self.kind == "api") != (self.responses is not None):
            raise ValueError("kind = 'api' needs 'responses' (a JSONL file), and 'responses' goes with kind = 'api'")
        elif self.kind == "onnx" and not self.onnx:
            raise ValueError("kind = 'onnx' needs 'onnx' (the teacher's .onnx file)")
        elif self.kind == "logits":
            if not self.logits:
                raise ValueError("kind = 'logits' needs 'logits' (one or more logits files)")
            if self.logit_weights is not None and len(self.logit_weights) != len(self.logits):
                raise ValueError(f"logit_weights has {len(self.logit_weights)} entries for {len(self.logits)} logits files")
        return self


class TeacherMember(TeacherSpec):
    weight: float = Field(1.0, gt=0)


class LossSpec(Strict):
    """One registered loss (edgekd.distill.losses) with its weight and parameters."""

    name: str
    weight: float = Field(1.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class AssistantConfig(Strict):
    """One teacher assistant (Mirzadeh et al. 2020): distilled from the previous link of the chain
    (with Hinton KD unless `losses` names another objective), then teaching the next."""

    factory: str = Field(pattern=FACTORY_PATTERN)
    args: dict[str, Any] = Field(default_factory=dict)
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS, description="default: the distill epochs")
    losses: list[LossSpec] | None = Field(None, min_length=1, description="this link's objective, as distill.losses; default Hinton KD")


class TeacherConfig(TeacherSpec):
    """The teacher, or (with [[teacher.members]]) several teachers whose soft targets are averaged
    with their weights; [[teacher.assistants]] put a chain of assistants between it and the student."""

    kind: Literal["torch", "onnx", "logits", "api", "ensemble"] = "torch"  # type: ignore[assignment]
    members: list[TeacherMember] = Field(default_factory=list)
    assistants: list[AssistantConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        if self.kind == "ensemble":
            if len(self.members) < 2:
                raise ValueError("kind = 'ensemble' needs at least two [[teacher.members]]")
            return self
        if self.members:
            raise ValueError("[[teacher.members]] needs kind = 'ensemble'")
        return TeacherSpec._one_source(self)


class StudentSearch(Strict):
    """Pick, before any training, the largest member of a student family whose latency on the
    target fits the profile's latency_p90_ms budget and whose size fits size_mb."""

    family: str
    widths: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.5], min_length=1)
    depths: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    measure_x86: bool = Field(True, description="x86 targets: measure each candidate here (else the latency model)")


class StudentConfig(Strict):
    factory: str | None = Field(None, pattern=FACTORY_PATTERN)
    args: dict[str, Any] = Field(default_factory=dict)
    search: StudentSearch | None = None
    hf: HfModelSpec | None = Field(None, description="a Hugging Face model ([student.hf]): a folder, the teacher's config, or a model_type")

    @model_validator(mode="after")
    def _one_source(self) -> StudentConfig:
        given = [k for k in ("factory", "search", "hf") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'factory', [student.search] or [student.hf]")
        return self


class AugmentSpec(Strict):
    """One augmentation of the train split (edgekd.data.augment): a registered name (random_crop,
    hflip, mixup) or a 'package.module:function' called as function(batch, generator, **params)."""

    name: str = Field(pattern=r"^([A-Za-z_]\w*|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$", description="registered name or 'package.module:function'")
    params: dict[str, Any] = Field(default_factory=dict)


DATA_SPLITS = ("train", "calib", "test")
FILE_SETTINGS = ("format", "text_column", "label_column", "labels", "tokenizer", "max_length", "teacher_text_column", "teacher_max_length")


class DataConfig(Strict):
    """Where the data comes from (edgekd.data.load.open_source): exactly one of a `factory` or local
    `files` read through Hugging Face datasets and tokenized with `tokenizer`."""

    factory: str | None = Field(None, pattern=FACTORY_PATTERN, description=(
        "returns edgekd.data.Splits, a mapping {train, calib, test} of torch Datasets, or an edgekd.data.sources.DataSource"))
    args: dict[str, Any] = Field(default_factory=dict)
    files: dict[Literal["train", "calib", "test"], str | list[str]] | None = Field(None, description=(
        "local data files per split (relative to the project file), e.g. {train = 'train.jsonl', calib = ..., test = ...}"))
    format: Literal["json", "csv", "parquet", "text"] | None = Field(None, description="files: default from their extension")
    text_column: str = Field("text", description="files: the column holding the text")
    label_column: str | None = Field(None, description="files: text classification labels; none: language modelling")
    labels: list[str] | None = Field(None, min_length=1, description=(
        "files: string labels in class-id order (default: the train split's distinct labels, sorted)"))
    tokenizer: str | None = Field(None, description="files: a tokenizer folder (save_pretrained) or a tokenizer.json file")
    max_length: int = Field(128, ge=1, le=MAX_TOKENS, description="files: tokens per sample (padded/truncated), or per language-modelling block")
    teacher_text_column: str | None = Field(None, description=(
        "files, text classification: cross-input distillation, the teacher reads this column of each sample (e.g. the whole "
        "text) while the student reads text_column (e.g. a short part of it); soft labels come from the teacher's view"))
    teacher_max_length: int | None = Field(None, ge=1, le=MAX_TOKENS, description="files: tokens of the teacher's view (default max_length)")
    shuffle_buffer: int = Field(1024, ge=1, le=MAX_SAMPLES, description="streamed sources: samples held to shuffle the train split")
    augment: list[AugmentSpec] = Field(default_factory=list, description=(
        "augmentations of the train split; with any, the teacher runs on the same augmented view as the student "
        "every step (function matching) and the teacher-logit cache is bypassed"))

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.factory is None) == (self.files is None):
            raise ValueError("give exactly one of 'factory' or 'files'")
        if self.files is None:
            stray = [name for name in FILE_SETTINGS if getattr(self, name) != DataConfig.model_fields[name].default]
            if stray:
                raise ValueError(f"{', '.join(stray)} go with 'files', not 'factory'")
            return self
        missing = [name for name in DATA_SPLITS if not self.files.get(name)]
        if missing:
            raise ValueError(f"'files' needs train, calib and test files (missing: {', '.join(missing)})")
        if self.tokenizer is None:
            raise ValueError("'files' needs 'tokenizer' (a tokenizer folder or a tokenizer.json file)")
        if self.args:
            raise ValueError("'args' goes with 'factory', not 'files'")
        if self.teacher_max_length is not None and self.teacher_text_column is None:
            raise ValueError("teacher_max_length goes with teacher_text_column (the teacher's view)")
        if self.teacher_text_column is not None and self.label_column is None:
            raise ValueError("teacher_text_column (cross-input distillation) needs label_column: it is for text classification")
        if self.format == "text" and self.label_column is not None:
            raise ValueError("format = 'text' has no label column: use json, csv or parquet for text classification")
        return self


class TaskConfig(Strict):
    """What kind of model this is (edgekd.tasks): its inputs, loss, metric and latency scenarios."""

    kind: str = Field("classification", description=(
        "a registered task: image-classification (alias classification), text-classification, causal-lm"))
    metric: str | None = Field(None, description="the task's metric, checked against it (accuracy, perplexity); the task decides")
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "task dims the data does not give or that override it (e.g. num_classes, max_length)"))


class DistillConfig(Strict):
    """The distillation objective is the weighted sum of `losses` (default: Hinton KD).
    `temperature` is the default temperature of every soft-target loss, `alpha` Hinton's mix weight."""

    losses: list[LossSpec] = Field(default_factory=lambda: [LossSpec(name="hinton")], min_length=1)
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    teacher_logit_cache: bool = Field(True, description="run the teacher once over the training data and reuse its logits")
    teacher_feature_cache_mb: float = Field(1024.0, ge=0, description=(
        "with teacher_logit_cache: also keep a torch teacher's features for feature losses (fitnet, at) when "
        "they take at most this many MB (0: never); over it the teacher runs every step"))
    epochs: int = Field(40, ge=1, le=MAX_EPOCHS)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of the steps with a linear lr warm-up before the cosine decay")
    data: Literal["real", "teacher_generations"] = Field("real", description=(
        "what the student trains on: the real train split, or the teacher's generated sequences (sequence-level KD, "
        "Kim & Rush 2016; an API teacher's responses), loss on the generated tokens only"))
    generate: GenerateConfig = GenerateConfig()
    on_policy: OnPolicyConfig | None = Field(None, description=(
        "causal-lm: GKD's on-policy distillation, the student samples and the teacher scores ([distill.on_policy])"))
    vocab_alignment: Literal["none", "shared_tokens"] = Field("none", description=(
        "causal-lm: a teacher folder whose tokenizer differs from the data's: 'shared_tokens' compares the distributions "
        "on the token strings both vocabularies hold (edgekd.distill.vocab_align); 'none' refuses such a teacher"))


class QuantizeConfig(Strict):
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activation_bits: Literal[8, 16] = Field(8, description="16: uint16 activations, on targets that run them (QNN HTP)")
    calibration_samples: int = Field(256, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class Project(Strict):
    name: str
    description: str = ""
    teacher: TeacherConfig
    student: StudentConfig
    data: DataConfig
    task: TaskConfig = TaskConfig()
    distill: DistillConfig = DistillConfig()
    quantize: QuantizeConfig = QuantizeConfig()

    @model_validator(mode="after")
    def _api_teaches_on_its_responses(self) -> Project:
        if self.teacher.kind == "api" and self.distill.data != "teacher_generations":
            raise ValueError("an API teacher (kind = 'api') teaches on its responses only: set [distill] data = 'teacher_generations'")
        return self


# ---------------------------------------------------------------- profile (profiles/*.toml)


# latency scenarios a bench runs (edgekd.tasks.specs names them for the Task seam; the config layer
# sits below tasks, so they are spelled here): the last two run for decoder models only
BenchScenario = Literal["SingleStream", "Offline", "TimeToFirstToken", "DecodeTokensPerSecond"]
BENCH_SCENARIOS: tuple[str, ...] = ("SingleStream", "Offline", "TimeToFirstToken", "DecodeTokensPerSecond")


class BenchConfig(Strict):
    """How long the latency measurement runs: until p90 is stable, within these bounds."""

    warmup_runs: int = Field(50, ge=0, le=MAX_RUNS)
    min_runs: int = Field(300, ge=10, le=MAX_RUNS)
    max_runs: int = Field(20000, ge=10, le=MAX_RUNS)
    max_seconds: float = Field(10.0, gt=0)
    stable_rel_change: float = Field(0.02, gt=0, description="stop when p90 moves less than this between rounds")
    scenarios: list[BenchScenario] = Field(default_factory=lambda: list(BENCH_SCENARIOS), min_length=1,
                                           description="TimeToFirstToken and DecodeTokensPerSecond run for decoder models only")
    offline_max_batch: int = Field(64, ge=1, le=1 << 16, description="Offline: batch sizes 1, 2, 4, ... up to this, while throughput grows")
    offline_seconds: float = Field(0.5, gt=0, description="Offline: timing per batch size (at least 5 runs)")
    profile_runs: int = Field(50, ge=0, le=MAX_RUNS, description="runs under ONNX Runtime's profiler for the per-op breakdown (0: none)")
    compare: bool = Field(True, description="also time the teacher (torch eager) and the fp32 student, for the Pareto view")
    prompt_tokens: int = Field(128, ge=1, le=MAX_TOKENS, description="decoders: prompt length P of TimeToFirstToken and DecodeTokensPerSecond")
    decode_tokens: int = Field(32, ge=1, le=MAX_TOKENS, description="DecodeTokensPerSecond: tokens generated one at a time after the prompt")
    ttft_runs: int = Field(20, ge=1, le=MAX_RUNS, description="TimeToFirstToken: timed prompt passes (after one warm-up pass)")
    decode_runs: int = Field(3, ge=1, le=MAX_RUNS, description="DecodeTokensPerSecond: timed generations (after one warm-up generation)")

    @model_validator(mode="after")
    def _bounds(self) -> BenchConfig:
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs ({self.max_runs}) is below min_runs ({self.min_runs})")
        return self


class TuneConfig(Strict):
    """Engine tuning in the compile stage: every setting the target allows ([tune] in the target
    file) is measured, interleaved in rounds; the fastest that meets the budgets is kept."""

    enabled: bool = True
    rounds: int = Field(5, ge=1, le=10_000, description="interleaved rounds over all candidates")
    runs_per_round: int = Field(200, ge=5, le=MAX_RUNS)
    warmup_runs: int = Field(20, ge=0, le=MAX_RUNS)
    prune: bool = Field(True, description="rule candidates out before their full timing (edgekd.backends.ort.prune): "
                        "accuracy, latency estimate, then a short screening round; false: every candidate timed in full")
    estimate_factor: float = Field(3.0, ge=1.0, description="drop a variant estimated more than this many times slower than "
                                   "the best estimate (a safety margin over the estimate's error; fp32 is never dropped)")
    screen_runs: int = Field(20, ge=0, le=MAX_RUNS, description="runs per candidate in the screening round (0: no screening)")
    screen_factor: float = Field(1.5, ge=1.0, description="full rounds only for candidates whose screened p90 is within "
                                 "this factor of the best screened p90")
    full_seconds_per_candidate: float | None = Field(8.0, gt=0, description="after screening: fewer runs per round (at least "
                                                     "min_runs_per_round) so that each candidate's full rounds take about this long at "
                                                     "the slowest survivor's screened median; None: always runs_per_round")
    min_runs_per_round: int = Field(20, ge=5, le=MAX_RUNS, description="the floor of that cut")
    screen_min_full_s: float = Field(20.0, ge=0, description="screening cuts only when timing every candidate left in full "
                                     "would take longer than this at their screened medians (small models: all are timed)")
    mixed_precision: bool = Field(True, description="when every INT8 candidate breaks the quantize accuracy budget, keep the most "
                                  "sensitive ops in float until it holds (edgekd.backends.ort.mixed_search) before settling on fp32")
    mixed_precision_max_ops: int = Field(48, ge=1, le=10_000, description="sensitivity is measured per op up to this many quantizable "
                                         "ops, else per group of consecutive ops (this many groups): one evaluation each")
    mixed_precision_max_float: float = Field(0.5, gt=0, le=1, description="the largest share of the ops (groups) kept in float before the search gives up")


class QadConfig(Strict):
    """Quantization-aware distillation: when PTQ breaks the quantize stage's accuracy budget,
    fine-tune the student with fake quantization under the teacher's soft labels, then quantize again."""

    enabled: bool = False
    epochs: int = Field(8, ge=1, le=MAX_EPOCHS)
    lr: float = Field(3e-4, gt=0, description="about a tenth of the distillation lr: larger rates collapse under fake quant")


class Recipe(Strict):
    """Overrides of the project's stage settings, e.g. fewer epochs for CI. `teacher_train`
    applies only to projects that train their teacher (it is ignored for a teacher checkpoint)."""

    teacher_train: dict[str, Any] = Field(default_factory=dict)
    distill: dict[str, Any] = Field(default_factory=dict)
    quantize: dict[str, Any] = Field(default_factory=dict)
    bench: BenchConfig = BenchConfig()
    tune: TuneConfig = TuneConfig()
    qad: QadConfig = QadConfig()

    @field_validator("teacher_train", "distill", "quantize")
    @classmethod
    def _known_keys(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        model = _RECIPE_SECTIONS[info.field_name]
        try:
            model.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
            raise ValueError(problems) from None
        return value


_RECIPE_SECTIONS: dict[str, type[BaseModel]] = {
    "teacher_train": TrainConfig,
    "distill": DistillConfig,
    "quantize": QuantizeConfig,
}


class GateConfig(Strict):
    """`edgekd gate`: how far a candidate build may fall behind a baseline build before CI fails.
    Latency is judged on a bootstrap confidence interval of the p90 ratio (edgekd.gate.stats)."""

    max_latency_p90_increase_pct: float = Field(10.0, ge=0, description="fail when p90 is surely up more than this")
    max_accuracy_drop_pt: float = Field(0.5, ge=0, description="engine accuracy, percentage points")
    max_perplexity_increase_pct: float = Field(5.0, ge=0, description="engine perplexity, percent of the baseline's")
    max_size_increase_pct: float = Field(5.0, ge=0, description="engine (else INT8 model) file size")
    max_ttft_increase_pct: float = Field(10.0, ge=0, description="decoders: TTFT p90 surely up by more than this fails")
    max_decode_tokens_per_s_decrease_pct: float = Field(10.0, ge=0, description="decoders: decode tokens/s surely down by more fails")
    max_peak_memory_increase_pct: float = Field(10.0, ge=0, description="bench worker peak RSS (one number a build: no interval)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="two-sided confidence of the latency interval")
    bootstrap_resamples: int = Field(2000, ge=200, le=100000)
    seed: int = Field(0, ge=0, description="of the bootstrap's random generator: the same reports give the same verdict")


class Profile(Strict):
    description: str = ""
    budgets: Budgets = Budgets()
    recipe: Recipe = Recipe()
    gate: GateConfig = GateConfig()


def apply_recipe(project: Project, recipe: Recipe) -> Project:
    """The project as the profile's recipe overrides it (validated again)."""
    data = project.model_dump()
    if recipe.teacher_train and data["teacher"]["train"] is not None:
        data["teacher"]["train"].update(recipe.teacher_train)
    data["distill"].update(recipe.distill)
    data["quantize"].update(recipe.quantize)
    return Project.model_validate(data)
