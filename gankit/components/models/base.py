"""What every generator offers (its noise distribution and `sample`), what every discriminator
offers, and the pieces that make a model class-conditional.

A class-conditional pair sets `num_classes > 0` on both networks; the generator is then called
as `G(z, labels)` and the discriminator as `D(images, labels)`, with `labels` a (N,) long tensor
of class indices. Unconditional networks keep `num_classes = 0` and one-argument calls.

The conditioning is written once, here: a generator concatenates a learned label embedding to z
(`Generator.add_label_embedding`, `Generator.join_labels`), a discriminator adds the projection
term of Miyato & Koyama (2018), D(x, y) = psi(phi(x)) + <embed(y), phi(x)>
(`Discriminator.add_projection`, `Discriminator.project_labels`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from gankit.core.errors import GankitError
from gankit.core.sizes import (
    MAX_CLASSES,
    MAX_LATENT,
    check_fits,
    forward_peak_bytes,
    tensor_bytes,
)

Noise = Literal["uniform", "normal"]
Labels = int | Sequence[int] | torch.Tensor
# Parameters that several models share
ClassCount = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_CLASSES,
        description=f"classes to condition on; 0: unconditional; at most {MAX_CLASSES:,}",
    ),
]
LatentSize = Annotated[
    int, Field(gt=0, le=MAX_LATENT, description=f"latent size; at most {MAX_LATENT:,}")
]
EmbedSize = Annotated[
    int,
    Field(
        gt=0,
        le=MAX_LATENT,
        description=f"label embedding concatenated to z (classes); at most {MAX_LATENT:,}",
    ),
]
SpectralNorm = Annotated[bool, Field(description="spectral normalisation of every layer")]


# The mean of each noise distribution: truncation pulls latents toward it.
NOISE_MEAN = {"uniform": 0.0, "normal": 0.0}
GRID_COPIES = 3  # float32 copies of the images while a grid is drawn (samples, clamped, grid)


def check_truncation(psi: float) -> float:
    """`psi` as a float in (0, 1]; anything else is a ValueError that says so."""
    if isinstance(psi, bool) or not isinstance(psi, int | float) or not 0 < psi <= 1:
        raise ValueError(f"truncation must be a number in (0, 1] (1: no truncation), got {psi!r}")
    return float(psi)


def truncate(z: torch.Tensor, kind: Noise, psi: float) -> torch.Tensor:
    """Pull latents toward the mean of their noise distribution: mean + psi * (z - mean).

    The truncation trick of StyleGAN, applied to z: psi = 1 leaves z as it is, smaller psi
    trades variety for typical, cleaner samples."""
    psi = check_truncation(psi)
    if kind not in NOISE_MEAN:
        raise ValueError(f"unknown noise {kind!r}; use 'uniform' or 'normal'")
    if psi == 1:
        return z
    mean = NOISE_MEAN[kind]
    return z.sub(mean).mul_(psi).add_(mean)


def sample_noise(
    kind: Noise,
    n: int,
    z_dim: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    truncation: float = 1.0,
) -> torch.Tensor:
    """Draw `n` latent vectors: uniform in [-1, 1) or standard normal, pulled toward the
    distribution's mean by `truncation` < 1 (see `truncate`)."""
    check_truncation(truncation)
    if kind == "uniform":
        z = torch.rand(n, z_dim, device=device, generator=generator).mul_(2).sub_(1)
    elif kind == "normal":
        z = torch.randn(n, z_dim, device=device, generator=generator)
    else:
        raise ValueError(f"unknown noise {kind!r}; use 'uniform' or 'normal'")
    return truncate(z, kind, truncation)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode inside the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def forward(
    network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None, **options: Any
) -> Any:
    """A network on `inputs`, with `labels` when the models are class-conditional."""
    return network(inputs, **options) if labels is None else network(inputs, labels, **options)


def num_classes(module: nn.Module) -> int:
    """How many classes a network is conditioned on (0: unconditional)."""
    return int(getattr(module, "num_classes", 0) or 0)


class Generator(nn.Module):
    """Base class of generators: maps (N, z_dim) noise to (N, C, H, W) images in [-1, 1].

    Subclasses set `z_dim` and `noise` and implement `forward(z)`; a class-conditional one also
    sets `num_classes` and implements `forward(z, labels)`, for example with
    `add_label_embedding` and `join_labels`. `sample` comes for free.
    """

    z_dim: int
    noise: Noise
    num_classes: int = 0
    embed: nn.Embedding | None  # the label embedding of `add_label_embedding`
    # True: `forward(z, labels, return_latents=True)` returns (images, latents), the
    # intermediate latents whose Jacobian the path-length regularizer measures (StyleGAN2's
    # per-layer w); False: it measures the Jacobian in z
    path_length_latents: bool = False

    def add_label_embedding(self, size: int) -> int:
        """Give a class-conditional generator (`num_classes` set) its label embedding, `embed`:
        `size` learned numbers per class, concatenated to z by `join_labels`; None for an
        unconditional one. Returns how many inputs it adds to z's (0 when unconditional)."""
        self.embed = nn.Embedding(self.num_classes, size) if self.num_classes else None
        return size if self.num_classes else 0

    def join_labels(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """z with the embedding of its labels concatenated (z as it is when unconditional);
        labels that do not match whether the generator is conditional are refused."""
        check_labels(self, labels)
        if self.embed is None:
            return z
        return torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)

    def sample_noise(
        self, n: int, *, generator: torch.Generator | None = None, truncation: float = 1.0
    ) -> torch.Tensor:
        """`n` latent vectors from this generator's noise distribution, on its device;
        `truncation` psi in (0, 1] pulls them toward the distribution's mean (see `truncate`)."""
        return sample_noise(
            self.noise,
            n,
            self.z_dim,
            device=self.weights_device(),
            generator=generator,
            truncation=truncation,
        )

    def sample_labels(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """`n` class labels drawn uniformly (None for an unconditional generator)."""
        if not self.num_classes:
            return None
        return torch.randint(
            self.num_classes, (n,), device=self.weights_device(), generator=generator
        )

    def labels_for(self, n: int, labels: Labels | None) -> torch.Tensor | None:
        """`labels` as a checked (n,) long tensor on this generator's device.

        An int asks for `n` samples of that class; a sequence or tensor gives one label per
        sample. None is returned for an unconditional generator (which refuses labels).
        """
        if not self.num_classes:
            if labels is not None:
                raise ValueError(
                    f"{type(self).__name__} is unconditional (num_classes 0) and takes no labels"
                )
            return None
        if labels is None:
            raise ValueError(f"{type(self).__name__} is class-conditional: pass labels")
        tensor = torch.as_tensor(labels, device=self.weights_device())
        if tensor.dim() == 0:
            tensor = tensor.expand(n)
        if tensor.shape != (n,) or tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
            raise ValueError(
                f"labels must be an int or {n} integer class indices, got "
                f"{tuple(tensor.shape)} {tensor.dtype}"
            )
        if n and (int(tensor.min()) < 0 or int(tensor.max()) >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got {tensor.min()}..{tensor.max()}"
            )
        return tensor.long()

    def generate(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, *, truncation: float = 1.0
    ) -> torch.Tensor:
        """Call the generator on noise (and labels when it is class-conditional).

        `truncation` psi in (0, 1] is applied in the generator's own latent space: here z is
        pulled toward its distribution's mean (see `truncate`); a generator with a latent space
        of its own (StyleGAN's w) overrides this method and truncates there."""
        return forward(self, truncate(z, self.noise, truncation), labels)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int | None = None,
        labels: Labels | None = None,
        *,
        truncation: float = 1.0,
    ) -> torch.Tensor:
        """Generate `n` images in [-1, 1] as a float32 (N, C, H, W) tensor, in eval mode.

        `seed` makes the noise (and drawn labels) reproducible without touching the global RNG.
        A class-conditional generator takes `labels` (an int for one class, or one per image);
        without them, classes are drawn uniformly. `truncation` psi in (0, 1] pulls the latent
        toward its mean (the truncation trick; 1: none; see `generate`): fewer odd samples, less
        variety.
        """
        check_truncation(truncation)
        device = self.weights_device()
        generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
        z = self.sample_noise(n, generator=generator)
        if self.num_classes and labels is None:
            chosen = self.sample_labels(n, generator=generator)
        else:
            chosen = self.labels_for(n, labels)
        with eval_mode(self):
            return self.generate(z, chosen, truncation=truncation).float()

    def weights_device(self) -> torch.device:
        """The device of the generator's weights (the CPU for one without any). A method, not
        a `device` property, so a subclass may keep its own `device` attribute."""
        first = next(self.parameters(), None)
        return first.device if first is not None else torch.device("cpu")


@dataclass(frozen=True)
class Footprint:
    """What one sample of a generator costs: `peak`, the most bytes its forward pass holds
    beyond the weights, and `values`, the numbers it is made of (C*H*W). Sampling n at once
    needs about n times as much."""

    peak: int
    values: int


def sample_footprint(generator: Generator) -> Footprint:
    """Measure one sample of `generator` (a forward pass in eval mode, with a fixed seed)."""
    made: list[torch.Tensor] = []
    peak = forward_peak_bytes(generator, lambda: made.append(generator.sample(1, seed=0)))
    return Footprint(max(peak, tensor_bytes(made[0])), made[0].numel())


def check_sampling_fits(
    footprint: Footprint,
    images: int,
    device: torch.device | str,
    what: str,
    options: str,
    *,
    frames: int = 1,
) -> None:
    """Refuse sampling `images` images at once on `device` (`frames` times, each frame kept as
    8-bit pixels) when that needs more memory than is available: on `device` for the forward
    pass, on the CPU for the pictures. `what` names the setting, `options` what to lower."""
    check_fits(images * footprint.peak, device, what, hint=f"lower {options}")
    # the float32 copies a grid is drawn from, then each frame's 8-bit pixels twice (list, stack)
    pictures = images * footprint.values * (4 * GRID_COPIES + 2 * frames)
    check_fits(pictures, "cpu", what, hint=f"lower {options}")


def grid_labels(n: int, classes: int) -> torch.Tensor:
    """Labels for an n-image square grid with one class per row (cycling when rows > classes)."""
    per_row = max(1, math.ceil(math.sqrt(n)))
    return (torch.arange(n) // per_row) % classes


class Projection(nn.Module):
    """The projection discriminator's class term (Miyato & Koyama 2018): <embed(y), h>.

    Added to the unconditional logit computed from the same features `h`.
    """

    def __init__(self, num_classes: int, features: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (self.embed(labels) * features).sum(1, keepdim=True)


class Discriminator(nn.Module):
    """Base class of discriminators: maps (N, C, H, W) images to (N, 1) logits.

    Subclasses implement `forward(images)`; a class-conditional one also sets `num_classes` and
    implements `forward(images, labels)`, for example with `add_projection` and
    `project_labels`.
    """

    num_classes: int = 0
    project: Projection | None  # the class term of `add_projection`

    def add_projection(self, features: int) -> None:
        """Give a class-conditional discriminator (`num_classes` set) its projection term,
        `project`, on `features` numbers per image; None for an unconditional one."""
        self.project = Projection(self.num_classes, features) if self.num_classes else None

    def project_labels(
        self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """`logits` plus the projection term <embed(labels), features> when conditional."""
        if self.project is None:
            return logits
        return logits + self.project(features, labels)

    def input_blocks(self) -> list[nn.Module]:
        """D's blocks in order from the image's side, the units `train.freeze_d` freezes
        (FreezeD); empty when the network does not declare them."""
        return []


def layer_blocks(layers: Sequence[nn.Module]) -> list[nn.Module]:
    """`layers` as blocks: each begins at a layer with weights that is not a normalisation (a
    convolution or a linear layer) and holds what follows it (its normalisation, activation)."""
    blocks: list[list[nn.Module]] = [[]]
    weighted = False  # whether the last block has its convolution or linear layer yet
    for layer in layers:
        starts = any(True for _ in layer.parameters()) and not isinstance(layer, NORMALISATIONS)
        if starts and weighted:
            blocks.append([])
        weighted = weighted or starts
        blocks[-1].append(layer)
    return [nn.Sequential(*block) for block in blocks if block]


NORMALISATIONS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def check_labels(module: nn.Module, labels: torch.Tensor | None) -> None:
    """Refuse a call whose labels do not match whether `module` is conditional."""
    if num_classes(module) and labels is None:
        raise ValueError(f"{type(module).__name__} is class-conditional: pass labels")
    if not num_classes(module) and labels is not None:
        raise ValueError(f"{type(module).__name__} is unconditional and takes no labels")


def check_conditioning(generator: nn.Module, discriminator: nn.Module, classes: int) -> int:
    """The class count both networks are conditioned on (0: unconditional), checked against
    each other and against the dataset's `classes`; a mismatch is a clear error."""
    g_classes, d_classes = num_classes(generator), num_classes(discriminator)
    if g_classes != d_classes:
        raise GankitError(
            f"the generator is conditioned on {g_classes} classes but the discriminator on "
            f"{d_classes}; set generator.num_classes and discriminator.num_classes alike"
        )
    if g_classes and not classes:
        raise GankitError(
            f"the models are class-conditional (num_classes {g_classes}) but the dataset has "
            "no class labels; use a labelled dataset or set num_classes: 0"
        )
    if g_classes and g_classes != classes:
        raise GankitError(
            f"the dataset has {classes} classes but the models are conditioned on {g_classes}; "
            f"set generator.num_classes and discriminator.num_classes to {classes}"
        )
    return g_classes


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectrally normalise every conv, linear and embedding layer in place (Miyato et al.)."""
    for layer in list(module.modules()):
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
            nn.utils.parametrizations.spectral_norm(layer)
