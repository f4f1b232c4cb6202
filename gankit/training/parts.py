"""Everything a recipe builds, built once: data, networks, optimizers, loss, schedule,
regularizer, EMA, learning-rate schedules and the evaluator, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset, Subset

from gankit.components.augment import NoAugmentation
from gankit.components.data import Mirrored, base_dataset
from gankit.components.data import image_shape as shape_of
from gankit.components.data import num_classes as dataset_classes
from gankit.components.losses import named_parts
from gankit.components.models.base import (
    Generator,
    check_conditioning,
    check_sampling_fits,
    sample_footprint,
)
from gankit.components.regularizers import trained_network
from gankit.config.protocols import (
    AugmentationProtocol,
    DatasetProtocol,
    DiscriminatorProtocol,
    LossProtocol,
    RegularizerProtocol,
    ScheduleProtocol,
)
from gankit.config.recipe import RecipeBase
from gankit.config.registry import (
    AUGMENTATIONS,
    DATASETS,
    DISCRIMINATORS,
    GENERATORS,
    LOSSES,
    REGULARIZERS,
    SCHEDULES,
)
from gankit.config.sections import AdamParams
from gankit.config.value_schedule import ValueSchedule, initial
from gankit.core.errors import GankitError
from gankit.core.sizes import check_training_fits
from gankit.training import fastpath, parallel
from gankit.training.ema import EMA
from gankit.training.finetune import freeze_input_blocks, trainable
from gankit.training.optim import (
    keep_implementation,
    lazy_corrected,
    lazy_ratio,
    lr_schedules,
    make_adam,
)
from gankit.training.value_schedules import (
    ValueSchedules,
    at_start,
    at_start_adam,
    optimizer_targets,
    scheduled_fields,
)


@dataclass
class Parts:
    """A recipe's components, prepared for Accelerate.

    `generator` and `discriminator` are the networks; `g_wrapped` and `d_wrapped` run their
    training forward passes (DDP-wrapped with several processes, else the networks).
    """

    dataset: Dataset
    image_shape: tuple[int, ...]
    num_classes: int
    batch_size: int  # per process and micro-batch
    loader: Any  # Accelerate's prepared DataLoader
    device_loader: fastpath.DeviceLoader | None
    g_wrapped: torch.nn.Module
    d_wrapped: torch.nn.Module
    generator: Generator
    discriminator: DiscriminatorProtocol
    g_optimizer: Any  # Accelerate's prepared optimizers
    d_optimizer: Any
    optim: dict[str, AdamParams]  # each network's Adam settings as applied (lazy-corrected)
    lr_schedules: list[Any]
    loss: LossProtocol
    schedule: ScheduleProtocol
    regularizers: dict[str, RegularizerProtocol]  # by the name their penalty is logged under
    augment: AugmentationProtocol | None  # None: D sees the images as they are
    ema: EMA | None
    value_schedules: ValueSchedules  # the recipe's scheduled values, set before each iteration
    evaluator: Any
    reference_points: torch.Tensor | None  # 2-D data: real points drawn under the samples

    @property
    def sampling_generator(self) -> Generator:
        """The generator that samples, exports and metrics use: the EMA one if there is one."""
        return self.ema.module if self.ema is not None else self.generator


def build_parts(
    recipe: RecipeBase,
    accelerator: Accelerator,
    batch_norm: str,
    graphs: bool,
    total_steps: int,
) -> Parts:
    """Build and prepare every component of `recipe`, with the same initial weights on every
    process. `graphs`: the optimizers must be capturable in a CUDA graph; `total_steps`: the
    run's length, where learning-rate schedules end."""
    batch_size = parallel.per_process_batch(recipe, accelerator.num_processes)
    seed = recipe.train.seed
    set_seed(seed)
    if recipe.eval.every:  # settings that cannot run on this data fail before it is read
        from gankit.metrics.evaluators import check_eval_settings

        check_eval_settings(recipe)
    dataset = DATASETS.build(recipe.data)
    if recipe.data.subset is not None:
        dataset = Subset(dataset, range(min(recipe.data.subset, len(dataset))))
    image_shape = shape_of(dataset)
    _check_images(recipe, image_shape)
    if recipe.data.hflip:
        dataset = Mirrored(dataset)
    builds = {
        "generator": lambda: GENERATORS.build(recipe.generator, image_shape=image_shape),
        "discriminator": lambda: DISCRIMINATORS.build(
            recipe.discriminator, image_shape=image_shape
        ),
    }
    check_training_fits(builds, accelerator.device, recipe.name, raised_sizes(recipe))
    generator, discriminator = builds["generator"](), builds["discriminator"]()
    if not isinstance(generator, Generator):
        raise GankitError(
            f"generator '{recipe.generator.name}' must subclass gankit.Generator "
            "(it provides z_dim, noise and sample)"
        )
    num_classes = check_conditioning(generator, discriminator, dataset_classes(dataset))
    freeze_input_blocks(discriminator, recipe.train.freeze_d, recipe.discriminator.name)
    footprint = sample_footprint(generator)  # before any perf switch changes the network
    check_sampling_fits(
        footprint,
        recipe.train.n_samples,
        accelerator.device,
        f"train.n_samples={recipe.train.n_samples} (each sample grid)",
        "train.n_samples",
    )
    if batch_norm == "sync" and accelerator.num_processes > 1:
        generator, discriminator = parallel.use_sync_batch_norm(generator, discriminator)
    pinned = parallel.uses_cuda()  # batches from pinned memory, copied without a wait
    loader = DataLoader(
        dataset,
        batch_size=batch_size * recipe.train.grad_accumulation,
        shuffle=True,
        drop_last=True,
        num_workers=recipe.data.num_workers,
        persistent_workers=recipe.data.num_workers > 0,  # not restarted every epoch
        pin_memory=pinned,
    )
    if len(loader) == 0:
        raise GankitError(
            f"a batch of {loader.batch_size} images per process (data.batch_size x "
            f"train.grad_accumulation) is more than the dataset's {len(dataset)}; lower it"
        )
    perf = recipe.perf
    fastpath.apply(perf, generator, discriminator)
    capturable_on = accelerator.device if graphs else None
    schedule = SCHEDULES.build(recipe.schedule)
    images_per_step = batch_size * accelerator.num_processes * recipe.train.grad_accumulation
    scheduled = ValueSchedules(images_per_step, total_steps)
    regularizers = _regularizers(recipe, accelerator.device, scheduled)
    ratios = lazy_ratios(recipe, schedule, regularizers)
    optim = {
        network: lazy_corrected(at_start_adam(params), ratios[network])
        for network, params in (
            ("generator", recipe.optim.generator),
            ("discriminator", recipe.optim.discriminator),
        )
    }
    g_optimizer = make_adam(
        generator.parameters(), optim["generator"], perf.fused_adam, capturable_on
    )
    d_optimizer = make_adam(
        trainable(discriminator), optim["discriminator"], perf.fused_adam, capturable_on
    )
    for network, optimizer in (("generator", g_optimizer), ("discriminator", d_optimizer)):
        params = getattr(recipe.optim, network)
        optimizer_targets(
            scheduled, f"optim.{network}", optimizer, params.lr, params.betas[1], ratios[network]
        )
    prepared = accelerator.prepare(generator, discriminator, g_optimizer, d_optimizer, loader)
    for optimizer in (g_optimizer, d_optimizer):
        keep_implementation(optimizer)
    network = accelerator.unwrap_model(prepared[0])
    source: DatasetProtocol = base_dataset(dataset)  # as DATASETS built it
    return Parts(
        dataset=dataset,
        image_shape=image_shape,
        num_classes=num_classes,
        batch_size=batch_size,
        loader=prepared[4],
        device_loader=fastpath.DeviceLoader(
            dataset, loader.batch_size, seed, accelerator, labels=bool(num_classes)
        )
        if perf.data_on_device
        else None,
        g_wrapped=prepared[0],
        d_wrapped=prepared[1],
        generator=network,
        discriminator=accelerator.unwrap_model(prepared[1]),
        g_optimizer=prepared[2],
        d_optimizer=prepared[3],
        # stepped once per iteration (Accelerate would step a prepared one per process)
        optim=optim,
        lr_schedules=lr_schedules(
            {g_optimizer: optim["generator"], d_optimizer: optim["discriminator"]},
            total_steps,
        ),
        loss=_loss(recipe, scheduled),
        schedule=schedule,
        regularizers=regularizers,
        augment=_augmentation(recipe, accelerator.device, scheduled),
        ema=_ema(recipe, network, images_per_step, scheduled),
        value_schedules=scheduled,
        evaluator=_evaluator(recipe, image_shape, accelerator, source, footprint.peak),
        reference_points=source.reference_points() if source.reference_points is not None else None,
    )


def _ema(
    recipe: RecipeBase, network: torch.nn.Module, images_per_step: int, scheduled: ValueSchedules
) -> EMA | None:
    """The recipe's moving average of G, or None; a half-life counts every image an iteration
    trains on (the global batch, times the micro-batches accumulated)."""
    section = recipe.ema
    if not section.on:
        return None
    ema = EMA(
        network,
        section.decay,
        section.warmup,
        half_life_images=initial(section.half_life_kimg) * 1000,
        images_per_step=images_per_step,
        rampup=section.rampup,
    )
    if isinstance(section.half_life_kimg, ValueSchedule):

        def set_half_life(kimg: float) -> None:
            ema.half_life_images = kimg * 1000  # read on the host by ema.set_step

        scheduled.add("ema.half_life_kimg", section.half_life_kimg, set_half_life)
    return ema


def _loss(recipe: RecipeBase, scheduled: ValueSchedules) -> Any:
    loss = LOSSES.build(at_start(recipe.loss))
    scheduled.add_component("loss", recipe.loss, loss)
    return named_parts(loss)


def raised_sizes(recipe: RecipeBase) -> list[str]:
    """The networks' whole-number settings set above their defaults, as `generator.width=4096`:
    what to lower when the networks do not fit (class counts follow the data, so not those)."""
    raised = []
    for section in ("generator", "discriminator"):
        spec = getattr(recipe, section)
        for name, field in type(spec).model_fields.items():
            value, default = getattr(spec, name), field.get_default()
            if name != "num_classes" and type(value) is type(default) is int and value > default:
                raised.append(f"{section}.{name}={value}")
    return raised


def lazy_ratios(
    recipe: RecipeBase, schedule: Any, regularizers: dict[str, Any]
) -> dict[str, float]:
    """Each network's correction for its lazy regularizers (`optim.lazy_correction`, see
    `optim.lazy_ratio`): 1 where there is none or the correction is off."""
    ratios = {"generator": 1.0, "discriminator": 1.0}
    if not recipe.optim.lazy_correction:
        return ratios
    phases = schedule.phases(0)
    for network in ratios:
        updates = sum(1 for phase in phases if phase.network == network)
        intervals = [
            regularizer.every
            for regularizer in regularizers.values()
            if trained_network(regularizer) == network and regularizer.every
        ]
        ratios[network] = lazy_ratio(max(updates, 1), intervals)
    return ratios


def _regularizers(
    recipe: RecipeBase, device: torch.device, scheduled: ValueSchedules
) -> dict[str, Any]:
    """The recipe's regularizers by the name of their penalty: `d_r1`, `g_path_length`, ..."""
    regularizers = {}
    for section in recipe.all_regularizers():
        regularizer = REGULARIZERS.build(at_start(section))
        if isinstance(regularizer, torch.nn.Module):
            regularizer.to(device)
        penalty = f"{trained_network(regularizer)[0]}_{section.name}"
        regularizers[penalty] = regularizer
        scheduled.add_component(penalty, section, regularizer)
    return regularizers


def _check_images(recipe: RecipeBase, shape: tuple[int, ...]) -> None:
    """Mirroring and augmentation transform images (C, H, W), not other samples."""
    asked = [
        *(["data.hflip"] if recipe.data.hflip else []),
        *([f"augment '{recipe.augment.name}'"] if recipe.augment.name != "none" else []),
    ]
    if asked and len(shape) != 3:
        raise GankitError(
            f"cannot use {' or '.join(asked)}: they transform images of shape (C, H, W), but "
            f"the '{recipe.data.name}' samples have shape {tuple(shape)}; remove them for this "
            "data"
        )


def _augmentation(recipe: RecipeBase, device: torch.device, scheduled: ValueSchedules) -> Any:
    """The recipe's augmentation, its state on `device`; None for `none`."""
    augment = AUGMENTATIONS.build(at_start(recipe.augment))
    if isinstance(augment, NoAugmentation):
        return None
    if isinstance(augment, torch.nn.Module):
        augment.to(device)
    if getattr(augment, "adaptive", False) and "p" in scheduled_fields(recipe.augment):
        raise GankitError(
            "augment.p is a schedule, but ADA steers p itself: set augment.adaptive: false to "
            "follow the schedule, or give p as a number"
        )
    scheduled.add_component("augment", recipe.augment, augment)
    return augment


def _evaluator(
    recipe: RecipeBase,
    image_shape: tuple[int, ...],
    accelerator: Accelerator,
    source: DatasetProtocol,
    sample_bytes: int,
) -> Any:
    """What `eval.every` measures: what the dataset brings (`evaluator(n, seed, accelerator)`,
    such as mode coverage for ring data), else image metrics."""
    if not recipe.eval.every:
        return None
    if source.evaluator is not None:
        return source.evaluator(recipe.eval.n, recipe.train.seed, accelerator)
    from gankit.metrics.evaluators import (
        TrainingEvaluator,  # torchmetrics only when evaluation is on
    )

    return TrainingEvaluator(recipe, image_shape, accelerator, sample_bytes)
