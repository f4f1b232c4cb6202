"""What a component of each registry kind must offer: one `typing.Protocol` a kind.

A member with a value in its Protocol is optional: a built component that lacks it gets that
value (`adopt`), so the training iteration reads every member directly instead of probing for
it. A member without one is required: `Registry.build` refuses a component that lacks it, with
one message naming the component and what it lacks (`missing`).

The Protocols name the surface gankit uses (the iteration, the parts, exports and metrics);
gankit's base classes (`Generator`, `Discriminator`) provide most of it for the networks.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from gankit.components.losses import Logits
    from gankit.components.schedules import Phase

TYPING_MADE = frozenset({"__init__", "__subclasshook__", "__init_subclass__"})  # not members
Uniform = Callable[[int], "torch.Tensor"]


@runtime_checkable
class GeneratorProtocol(Protocol):
    """A generator: noise (and labels when `num_classes` > 0) -> images, with its noise
    distribution and sampling (`gankit.Generator` provides all but `z_dim` and `noise`)."""

    z_dim: int
    noise: str
    num_classes: int
    path_length_latents: bool = False

    def __call__(self, z: torch.Tensor, *labels: torch.Tensor) -> torch.Tensor: ...

    def sample_noise(self, n: int, **options: Any) -> torch.Tensor: ...

    def sample_labels(self, n: int, **options: Any) -> torch.Tensor | None: ...

    def generate(self, z: torch.Tensor, labels: Any = None, **options: Any) -> torch.Tensor: ...

    def sample(
        self, n: int, seed: int | None = None, labels: Any = None, **options: Any
    ) -> torch.Tensor: ...

    def weights_device(self) -> torch.device: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class DiscriminatorProtocol(Protocol):
    """A discriminator: images (and labels when `num_classes` > 0) -> (N, 1) logits."""

    num_classes: int = 0
    # its blocks from the image's side, for `train.freeze_d` (None: not declared)
    input_blocks: Callable[[], list[torch.nn.Module]] | None = None

    def __call__(self, images: torch.Tensor, *labels: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class LossProtocol(Protocol):
    """An adversarial loss: each network's named parts from D's logits. `generator_uses_real`:
    G's update needs D's logits on the reals too; `parts`: the part names of each network
    (None: read from a first call). A loss of the earlier positional contract has the same two
    methods (`losses.named_parts` adapts it)."""

    generator_uses_real: bool = False
    parts: Mapping[str, tuple[str, ...]] | None = None

    def discriminator(self, logits: Logits) -> Mapping[str, torch.Tensor]: ...

    def generator(self, logits: Logits) -> Mapping[str, torch.Tensor]: ...


@runtime_checkable
class RegularizerProtocol(Protocol):
    """A penalty on one `network`, minimised in an update of its own every `every` iterations
    (0: never, and then it needs no `penalty`)."""

    network: Literal["discriminator", "generator"] = "discriminator"
    every: int

    def penalty(self, network: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor: ...


@runtime_checkable
class AugmentationProtocol(Protocol):
    """Images -> images of the same shape, with randomness drawn from `uniform`. An adaptive
    one has `observe(sign_sum, count)` (D's verdicts on augmented reals), and `values()` what
    it logs; None where it has neither."""

    observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None
    values: Callable[[], Mapping[str, torch.Tensor]] | None = None

    def __call__(self, images: torch.Tensor, uniform: Uniform) -> torch.Tensor: ...


@runtime_checkable
class ScheduleProtocol(Protocol):
    """Which phases each iteration runs, drawing `batches_per_step` fresh batches; its state
    resumes with the run."""

    batches_per_step: int = 1

    def phases(self, step: int) -> tuple[Phase, ...]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class DatasetProtocol(Protocol):
    """Indexable samples (an image, or an (image, label) pair). `classes`: the class names of
    a labelled dataset; `reference_points()`: real points drawn under 2-D samples;
    `evaluator(n, seed, accelerator)`: what `eval.every` measures on this data instead of image
    metrics. Each None where the dataset has none."""

    classes: list[str] | None = None
    reference_points: Callable[[], torch.Tensor] | None = None
    evaluator: Callable[..., Any] | None = None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def members(protocol: type) -> dict[str, tuple[bool, Any]]:
    """Every member of `protocol` (its annotations and methods, through its Protocol bases):
    name -> (required, the default of an optional one)."""
    found: dict[str, tuple[bool, Any]] = {}
    for cls in reversed(protocol.__mro__):
        if cls is Protocol or not cls.__dict__.get("_is_protocol", False):
            continue
        for name in inspect.get_annotations(cls):
            found[name] = (name not in cls.__dict__, cls.__dict__.get(name))
        for name, value in cls.__dict__.items():
            if inspect.isfunction(value) and name not in TYPING_MADE:
                found[name] = (True, None)
    return found


def lacking(obj: Any, protocol: type, *, optional: bool = True) -> list[str]:
    """The members of `protocol` that `obj` lacks (only the required ones unless `optional`),
    in the Protocol's order. A regularizer that never runs (`every` 0) needs no penalty."""
    unneeded = (
        {"penalty"}
        if protocol is RegularizerProtocol and getattr(obj, "every", None) == 0
        else set()
    )
    return [
        name
        for name, (required, _) in members(protocol).items()
        if (required or optional) and name not in unneeded and not hasattr(obj, name)
    ]


def adopt(obj: Any, protocol: type) -> list[str]:
    """Give `obj` the default of each optional member of `protocol` that it lacks. Returns the
    required members it lacks; when it has them all, the defaults it could not take (a slotted
    object); an empty list when it offers all of `protocol`."""
    for name, (required, default) in members(protocol).items():
        if not required and not hasattr(obj, name):
            with contextlib.suppress(AttributeError):
                setattr(obj, name, default)
    return lacking(obj, protocol, optional=False) or lacking(obj, protocol)
