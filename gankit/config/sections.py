"""The fixed sections of a recipe (optimizers, loader, training, EMA, evaluation, perf, W&B).

The component sections (data, generator, ...) are built from the registries in `recipe.py`;
these are the same for every recipe. Cross-section rules are checked in `RecipeBase`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gankit.config.params import refuse_booleans
from gankit.config.value_schedule import Scheduled, ValueSchedule
from gankit.core.sizes import (
    MAX_BATCH,
    MAX_DEPTH,
    MAX_EMA_KIMG,
    MAX_EVAL_SAMPLES,
    MAX_GRID_IMAGES,
    MAX_KIMG,
    MAX_MINUTES,
    MAX_STEPS,
    WORKERS_PER_CORE,
    check_workers,
)


class FiniteInside(BaseModel):
    """Refuses inf and nan in nested models whose own config allows them (`allow_inf_nan=False`
    covers the model's own fields)."""

    @model_validator(mode="after")
    def _finite_inside(self) -> Any:
        bad = [
            path
            for name in type(self).model_fields
            for path in _infinite(getattr(self, name), name)
        ]
        if bad:
            what = "a finite number" if len(bad) == 1 else "finite numbers"
            raise ValueError(f"{', '.join(bad[:5])} must be {what}; .inf and .nan are not allowed")
        return self


def _infinite(value: Any, path: str) -> list[str]:
    """Key paths of inf and nan floats in a value, not looking inside FiniteInside models
    (they check themselves)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, FiniteInside):
        return []
    if isinstance(value, BaseModel):
        return [
            p for k in type(value).model_fields for p in _infinite(getattr(value, k), f"{path}.{k}")
        ]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _infinite(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _infinite(v, f"{path}[{i}]")]
    return []


class Strict(FiniteInside):
    """A recipe section: unknown keys are errors, and so are non-finite numbers (inf, nan).
    A section with numbers is decorated with `params.refuse_booleans`: its numbers refuse true
    and false (pydantic would read them as 1 and 0, so `lr: true` would train at a learning rate
    of 1)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@refuse_booleans
class AdamParams(Strict):
    """Adam for one network (reference: lr 2e-4, betas (0.5, 0.999))."""

    lr: Annotated[Scheduled(gt=0), Field(description="learning rate (or a schedule)")] = 2e-4
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Scheduled(ge=0, lt=1)] = Field(
        (0.5, 0.999), description="Adam's beta1 and beta2 (beta2 may follow a schedule)"
    )
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="after warm-up: keep lr, or decay it to 0 at train.steps"
    )
    warmup_steps: int = Field(0, ge=0, description="iterations of linear warm-up from 0")

    @model_validator(mode="after")
    def _one_lr_schedule(self) -> AdamParams:
        if isinstance(self.lr, ValueSchedule) and (
            self.lr_schedule != "constant" or self.warmup_steps
        ):
            raise ValueError(
                "lr is a schedule, which has its own ramp-up and decay: remove lr_schedule and "
                "warmup_steps"
            )
        return self


class OptimSection(Strict):
    """One optimizer per network."""

    generator: AdamParams = AdamParams()
    discriminator: AdamParams = AdamParams()
    lazy_correction: bool = Field(
        True,
        description="StyleGAN2's correction for lazy regularizers (every > 1): a network's lr "
        "scaled by c and its betas raised to c, c = updates / (updates + sum of 1 / every)",
    )


@refuse_booleans
class LoaderFields(Strict):
    """How batches are drawn from any dataset (added to every `data` section)."""

    batch_size: int = Field(
        100,
        gt=0,
        le=MAX_BATCH,
        description=f"images per batch, per process by default; at most {MAX_BATCH:,}",
    )
    global_batch: bool = Field(
        False, description="batch_size is the global batch, split evenly across processes"
    )
    num_workers: int = Field(
        0,
        ge=0,
        description=f"DataLoader worker processes; at most {WORKERS_PER_CORE} per CPU core",
    )
    subset: int | None = Field(None, gt=0, description="use only the first N images (debugging)")
    hflip: bool = Field(
        False, description="add each image mirrored left-right (twice the data; after subset)"
    )

    @field_validator("num_workers")
    @classmethod
    def _within_the_cores(cls, count: int) -> int:
        return check_workers(count)


@refuse_booleans
class TrainSection(Strict):
    """Length, seed and output cadence of a run."""

    steps: int | None = Field(
        None,
        gt=0,
        le=MAX_STEPS,
        description="training iterations (each runs the schedule once), at most "
        f"{MAX_STEPS:,}; or give train.kimg",
    )
    kimg: float | None = Field(
        None,
        gt=0,
        le=MAX_KIMG,
        description="instead of steps: the run's length in thousands of real images, "
        f"steps = ceil(kimg * 1000 / images per iteration); at most {MAX_KIMG:,}",
    )
    max_minutes: float | None = Field(
        None,
        gt=0,
        le=MAX_MINUTES,
        description="wall-clock budget in minutes: when it is spent, the run ends as at its "
        "last step (checkpoint, export); the same command with a larger budget continues it; "
        f"at most {MAX_MINUTES:,}",
    )
    seed: int = Field(0, ge=0, lt=2**32, description="seeds weights, noise and data order")
    log_every: int = Field(100, gt=0, description="steps between metric lines")
    sample_every: int = Field(1000, gt=0, description="steps between sample grids")
    n_samples: int = Field(
        100,
        gt=0,
        le=MAX_GRID_IMAGES,
        description=f"images in each grid, from fixed noise; at most {MAX_GRID_IMAGES:,}",
    )
    export_discriminator: bool = Field(True, description="also export D next to G")
    progress: bool = Field(True, description="show a progress bar (on a terminal)")
    checkpoint_every: int = Field(1000, gt=0, description="steps between resumable checkpoints")
    keep_checkpoints: int = Field(3, gt=0, description="how many of the newest to keep")
    resume: str = Field(
        "auto", min_length=1, description="auto (newest checkpoint, if any), never, or a folder"
    )
    init_from: str | None = Field(
        None,
        min_length=1,
        description="start from exported weights: an export folder, a run's export/ folder or "
        "a Hub repo id (a resumed run continues from its checkpoint instead)",
    )
    freeze_d: int = Field(
        0,
        ge=0,
        le=MAX_DEPTH,
        description="D's first blocks (from the image's side) kept as they are, FreezeD for "
        f"fine-tuning from init_from; 0: none; at most {MAX_DEPTH}",
    )
    allow_recipe_changes: bool = Field(
        False, description="resume even if the recipe changed in a way that changes training"
    )
    trust_pickled_checkpoint: bool = Field(
        False,
        description="resume from a checkpoint of an earlier gankit, which holds pickles: "
        "loading them runs any code they contain, so only for checkpoints you wrote yourself",
    )
    on_nan: Literal["stop", "skip"] = Field(
        "stop", description="on a non-finite loss: stop, or skip that update (costs a sync)"
    )
    grad_accumulation: int = Field(
        1, gt=0, description="micro-batches of data.batch_size accumulated into each update"
    )
    batch_norm: Literal["broadcast", "sync", "local"] = Field(
        "broadcast",
        description="with several processes: BatchNorm statistics from process 0 (broadcast), "
        "synchronised per batch (sync, CUDA only), or kept per process (local)",
    )

    @model_validator(mode="after")
    def _one_length(self) -> TrainSection:
        if self.steps is None and self.kimg is None:
            raise ValueError("give the run's length: train.steps or train.kimg")
        if self.steps is not None and self.kimg is not None:
            raise ValueError(
                "give the run's length as train.steps or as train.kimg, not both (to switch a "
                "recipe that sets steps to kimg: train.steps=null train.kimg=500)"
            )
        return self


@refuse_booleans
class EvalSection(Strict):
    """Sample-quality metrics during training (see `gankit eval`): a classifier's metrics and
    Inception FID/KID for images, mode coverage for ring data."""

    every: int = Field(0, ge=0, description="steps between evaluations; 0: off")
    n: int = Field(
        2000,
        gt=1,
        le=MAX_EVAL_SAMPLES,
        description="generated samples per evaluation, over all processes; at most "
        f"{MAX_EVAL_SAMPLES:,}",
    )
    split: Literal["test", "train"] = Field(
        "test", description="reference split (datasets without one: all their images)"
    )
    data_root: str | None = Field(None, description="reference data's folder; default data.root")
    batch_size: int = Field(
        500, gt=0, le=MAX_BATCH, description=f"images per evaluation batch; at most {MAX_BATCH:,}"
    )
    metrics: list[Literal["classifier", "inception"]] = Field(
        ["classifier"],
        min_length=1,
        description="classifier: Frechet distance, score, coverage, precision/recall, "
        "density/coverage on a classifier's features; inception: Inception FID and KID",
    )
    classifier: str | None = Field(
        None,
        description="classifier weights made by `gankit classifier train`; default: the shipped "
        "one, for 1x28x28 MNIST only",
    )
    inception_weights: str | None = Field(
        None, description="Inception weights file; default: torch's hub cache (downloaded there)"
    )
    keep_best: str | None = Field(
        None,
        max_length=64,
        description="a result of the evaluations (e.g. frechet_distance, inception_fid, "
        "precision): each evaluation that beats the best so far is exported to export/best/",
    )

    @field_validator("keep_best")
    @classmethod
    def _needs_evaluations(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not info.data.get("every"):
            raise ValueError("it needs evaluations: set eval.every too, or remove this key")
        return value

    @field_validator("metrics")
    @classmethod
    def _each_once(cls, metrics: list[str]) -> list[str]:
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"a metric is listed twice in {metrics}; give each once")
        return metrics

    @field_validator("classifier", "inception_weights")
    @classmethod
    def _read_by_a_metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A classifier or weights file only for the metric that reads it."""
        metric = "classifier" if info.field_name == "classifier" else "inception"
        if value is not None and metric not in info.data.get("metrics", [metric]):
            raise ValueError(
                f"it is set but eval.metrics has no '{metric}'; add '{metric}' to eval.metrics "
                "or remove this key"
            )
        return value


@refuse_booleans
class EMASection(Strict):
    """An exponential moving average of G's weights, used for samples, exports and metrics."""

    decay: float = Field(
        0.0, ge=0, lt=1, description="per iteration, e.g. 0.999; 0 (and no half_life_kimg): off"
    )
    warmup: bool = Field(True, description="with decay: start lower, min(decay, (1+t)/(10+t))")
    half_life_kimg: Annotated[
        Scheduled(ge=0, le=MAX_EMA_KIMG),
        Field(
            description="instead of decay: the half-life in thousands of images (StyleGAN's "
            f"ema_kimg, e.g. 10; or a schedule), the same at any batch size; at most "
            f"{MAX_EMA_KIMG:,}"
        ),
    ] = 0.0
    rampup: float = Field(
        0.0,
        ge=0,
        le=1,
        description="with half_life_kimg: the half-life is at most this fraction of the images "
        "seen so far (StyleGAN's ema_rampup, e.g. 0.05); 0: off",
    )

    @model_validator(mode="after")
    def _one_rate(self) -> EMASection:
        if self.decay > 0 and self.uses_half_life:
            raise ValueError(
                "give ema.decay (per iteration) or ema.half_life_kimg (per image), not both"
            )
        if self.rampup > 0 and not self.uses_half_life:
            raise ValueError("ema.rampup needs ema.half_life_kimg")
        return self

    @property
    def on(self) -> bool:
        """Whether the average is kept at all."""
        return self.decay > 0 or self.uses_half_life

    @property
    def uses_half_life(self) -> bool:
        """Whether the average is set by a half-life in images (fixed or scheduled)."""
        return isinstance(self.half_life_kimg, ValueSchedule) or self.half_life_kimg > 0


class PerfSection(Strict):
    """Opt-in speed switches; none changes what is trained (see gankit/training/fastpath.py)."""

    data_on_device: bool = Field(False, description="hold the dataset on the device")
    fused_adam: bool = Field(False, description="fused Adam kernels")
    channels_last: bool = Field(False, description="NHWC layout for convolutions")
    tf32: bool = Field(False, description="TF32 matmuls and convolutions on NVIDIA GPUs")
    compile: bool = Field(False, description="torch.compile both networks")
    cuda_graph: bool = Field(
        False, description="replay each iteration as one CUDA graph (one GPU, fp32 or bf16)"
    )


class TrackingSection(Strict):
    """Where a run logs besides metrics.jsonl (which it always writes)."""

    log_with: list[Literal["wandb", "tensorboard"]] = Field(
        ["wandb"],
        description="trackers: wandb, tensorboard (run folder tensorboard/), both, or [] for none",
    )

    @field_validator("log_with")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed more than once; name each tracker once")
        return value


PROJECT_REFUSED = "/\\#?%:\0"  # W&B's refused characters, and NUL


class WandbSection(Strict):
    """Weights & Biases logging. Without `mode`, WANDB_MODE decides; without a key, offline."""

    project: str = Field(
        "gankit", description="W&B project; also TensorBoard's folder in the run folder"
    )
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None
    tags: list[str] = []
    name: str | None = Field(
        None, description="run name; default: the run folder's name and the start time"
    )
    group: str | None = Field(None, description="groups runs in the W&B UI (e.g. a sweep)")
    notes: str | None = Field(None, description="a description of the run")
    log_model: bool = Field(True, description="log the export as a model artifact at the end")

    @field_validator("project")
    @classmethod
    def _one_folder_name(cls, value: str) -> str:
        # W&B refuses these characters deep in its setup; TensorBoard makes the project a folder
        # of the run folder, which '..' or a separator would leave.
        refused = sorted(set(value) & set(PROJECT_REFUSED))
        why = (
            f"holds {', '.join(map(repr, refused))}"
            if refused
            else "is longer than 128 characters"
            if len(value) > 128
            else f"is {value!r}"
            if not value.strip() or value in (".", "..")
            else ""
        )
        if why:
            raise ValueError(
                f"a W&B project name {why}: give a plain name such as 'gankit', without "
                f"{' '.join(PROJECT_REFUSED[:-1])}, not '.' or '..' (wandb.entity names a team)"
            )
        return value


class RecipeBase(Strict):
    """Fields of a recipe besides its component sections."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="run name")
    output_dir: str | None = Field(None, description="run folder; default runs/<name>")
    mixed_precision: Literal["no", "bf16", "fp16"] | None = Field(
        None,
        description="no, bf16 or fp16; unset: what Accelerate was launched with "
        "(accelerate launch --mixed_precision, accelerate config), else no",
    )
    optim: OptimSection = OptimSection()
    train: TrainSection
    ema: EMASection = EMASection()
    eval: EvalSection = EvalSection()
    perf: PerfSection = PerfSection()
    tracking: TrackingSection = TrackingSection()
    wandb: WandbSection = WandbSection()

    @field_validator("perf")
    @classmethod
    def _graphable(cls, perf: PerfSection, info: ValidationInfo) -> PerfSection:
        """A CUDA graph replays device work only: refuse what needs the host every step."""
        if not perf.cuda_graph:
            return perf
        train = info.data.get("train")
        conflicts = [
            "mixed_precision: fp16 (its loss scaler checks the gradients on the host every "
            "step; use bf16 or no)"
            if info.data.get("mixed_precision") == "fp16"
            else None,
            "train.on_nan: skip (it reads every loss on the host; use stop)"
            if train is not None and train.on_nan == "skip"
            else None,
            "perf.compile (choose one of the two)" if perf.compile else None,
        ]
        conflicts = [conflict for conflict in conflicts if conflict]
        if conflicts:
            raise ValueError("cuda_graph cannot be combined with " + "; ".join(conflicts))
        return perf

    @field_validator("train")
    @classmethod
    def _init_from_names_something(cls, train: TrainSection) -> TrainSection:
        if train.init_from is not None and (not train.init_from.strip() or "\0" in train.init_from):
            raise ValueError(
                "init_from must name an export folder or a Hub repo id; leave it out to start "
                "from fresh weights"
            )
        return train

    @field_validator("output_dir")
    @classmethod
    def _names_a_folder(cls, output_dir: str | None) -> str | None:
        """An empty path or one holding a NUL character names no folder."""
        if output_dir is not None and not output_dir.strip():
            raise ValueError("the path is empty; give a folder, or leave output_dir out")
        if output_dir is not None and "\0" in output_dir:
            raise ValueError("the path contains a NUL character (\\0); remove it")
        return output_dir

    @model_validator(mode="after")
    def _conditioned_alike(self) -> RecipeBase:
        """Both networks are conditioned on the same classes (where both have the setting)."""
        g_classes = getattr(getattr(self, "generator", None), "num_classes", None)
        d_classes = getattr(getattr(self, "discriminator", None), "num_classes", None)
        if g_classes is not None and d_classes is not None and g_classes != d_classes:
            raise ValueError(
                f"generator.num_classes is {g_classes} but discriminator.num_classes is "
                f"{d_classes}; a class-conditional pair sets both to the dataset's class count "
                "(0: unconditional)"
            )
        return self

    @model_validator(mode="after")
    def _regularizers_once(self) -> RecipeBase:
        """Each regularizer at most once (its penalty is logged by its name)."""
        names = [section.name for section in self.all_regularizers()]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(
                f"regularizer {', '.join(twice)} is given more than once (in regularizer and "
                "regularizers); give each one once, with the weight and interval it needs"
            )
        return self

    def all_regularizers(self) -> list[Any]:
        """The sections of `regularizer` (unless none) and of the `regularizers` list."""
        single = getattr(self, "regularizer", None)
        listed = list(getattr(self, "regularizers", []))
        return ([single] if single is not None and single.name != "none" else []) + listed

    @model_validator(mode="after")
    def _default_output_dir(self) -> RecipeBase:
        if self.output_dir is None:
            self.output_dir = f"runs/{self.name}"
        return self

    @property
    def run_dir(self) -> Path:
        """The run folder (outputs, exports, resolved recipe)."""
        return Path(self.output_dir or f"runs/{self.name}")
