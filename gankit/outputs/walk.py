"""Latent walks: a generator's outputs along a closed path through random latent points, as a
GIF or an MP4 (`gankit interpolate`).

The path visits `points` random latents and returns to the first, so the animation loops
without a jump. Normal noise is interpolated along great circles (slerp, which keeps latents at
the norms the generator was trained on); uniform noise along straight lines (which stay inside
its cube). A class-conditional generator walks the same latents for each class: one grid row
per class, or every image of one class.
"""

from __future__ import annotations

import errno
import secrets
from pathlib import Path

import numpy as np
import torch

from gankit.components.models.base import Generator, check_truncation, eval_mode
from gankit.core.errors import GankitError
from gankit.outputs.files import (
    check_new_file,
    encode_image,
    image_grid,
    render_samples,
    write_new_file,
)

VIDEO_SUFFIXES = (".gif", ".mp4")
VIDEO_HINT = "pip install 'gankit[video]'"


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of `a` and `b` (t = 0: a, t = 1: b); the angle is
    taken between directions and the norm interpolated linearly. Nearly parallel rows: lerp."""
    if t in (0, 1):  # the end points exactly, not up to rounding
        return (a if t == 0 else b).clone()
    a_norm, b_norm = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cosine = ((a / a_norm.clamp_min(1e-12)) * (b / b_norm.clamp_min(1e-12))).sum(-1, True)
    omega = torch.arccos(cosine.clamp(-1, 1))
    sin_omega = torch.sin(omega)
    parallel = sin_omega.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin_omega), sin_omega)
    direction = (torch.sin((1 - t) * omega) * a / a_norm.clamp_min(1e-12)) + (
        torch.sin(t * omega) * b / b_norm.clamp_min(1e-12)
    )
    spherical = direction / safe * ((1 - t) * a_norm + t * b_norm)
    return torch.where(parallel, torch.lerp(a, b, t), spherical)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Straight-line interpolation between `a` and `b`."""
    return torch.lerp(a, b, t)


def walk_latents(
    generator: Generator,
    *,
    walks: int,
    points: int,
    steps: int,
    seed: int | None = None,
    truncation: float = 1.0,
) -> torch.Tensor:
    """(points * steps, walks, z_dim) latents: `walks` closed paths through `points` random
    latents each, `steps` frames from one point to the next (the first frame of each leg is
    its point)."""
    rng = torch.Generator(generator.weights_device())
    rng.manual_seed(seed if seed is not None else secrets.randbits(63))
    keys = generator.sample_noise(points * walks, generator=rng, truncation=truncation)
    keys = keys.view(points, walks, -1)
    between = slerp if generator.noise == "normal" else lerp
    frames = [
        between(keys[leg], keys[(leg + 1) % points], step / steps)
        for leg in range(points)
        for step in range(steps)
    ]
    return torch.stack(frames)


@torch.no_grad()
def walk_frames(
    generator: Generator,
    *,
    walks: int,
    points: int,
    steps: int,
    seed: int | None = None,
    label: int | None = None,
    truncation: float = 1.0,
) -> list[np.ndarray]:
    """The walk's frames as uint8 pictures: a grid of `walks` images (one row per class for a
    conditional generator without `label`), one image when `walks` is 1 and unconditional."""
    check_truncation(truncation)
    # truncated by the generator, in its own latent space (see Generator.generate)
    latents = walk_latents(generator, walks=walks, points=points, steps=steps, seed=seed)
    labels, per_row = None, None
    if generator.num_classes:
        classes = [label] if label is not None else list(range(generator.num_classes))
        labels = torch.tensor(classes).repeat_interleave(walks).to(latents.device)
        generator.labels_for(len(labels), labels)  # checks the class
        latents = latents.repeat(1, len(classes), 1)
        per_row = walks
    elif label is not None:
        raise GankitError("--label: this generator is unconditional; leave --label out")
    pictures = []
    with eval_mode(generator):
        for z in latents:
            samples = generator.generate(z, labels, truncation=truncation).float()
            if samples.dim() == 4 and per_row:
                pictures.append(image_grid(samples, per_row=per_row))
            else:
                pictures.append(render_samples(samples, labels=labels))
    return pictures


def check_video_path(path: Path, *, force: bool) -> None:
    """Refuse a --out that is not a .gif or .mp4 file name, or that exists (unless `force`)."""
    if path.suffix.lower() not in VIDEO_SUFFIXES or path.is_dir():
        raise GankitError(f"--out {path}: give a file name ending in .gif or .mp4")
    if path.suffix.lower() == ".mp4":
        ffmpeg_available()
    check_new_file(path, force=force)


def ffmpeg_available() -> None:
    """MP4 needs imageio's ffmpeg plugin; without it, one line that says what to install."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise GankitError(
            f"writing MP4 needs the imageio-ffmpeg package: {VIDEO_HINT} (or write a .gif)"
        ) from None


def write_video(frames: list[np.ndarray], path: Path, *, fps: float, force: bool) -> Path:
    """Write `frames` as a looping GIF or an MP4 (by the suffix), never over a file that exists
    unless `force`; a failed write leaves nothing at `path` (OutputWriteError)."""
    if path.suffix.lower() == ".gif":
        data = encode_image(np.stack(frames), ".gif", duration=1000 / fps, loop=0, optimize=False)
        return write_new_file(path, lambda temp: temp.write_bytes(data), force=force)
    ffmpeg_available()
    stack = np.stack([_even_rgb(frame) for frame in frames])
    return write_new_file(path, lambda temp: _write_mp4(stack, temp, fps), force=force)


def _write_mp4(stack: np.ndarray, path: Path, fps: float) -> None:
    """Encode frames with ffmpeg into `path`, then check that all of them can be read back:
    ffmpeg reports a failed write (a full disk) only on its own stderr, which is kept quiet."""
    import imageio.v3 as iio
    from imageio_ffmpeg import count_frames_and_secs

    iio.imwrite(
        path,
        stack,
        extension=".mp4",
        plugin="FFMPEG",
        fps=fps,
        macro_block_size=1,
        ffmpeg_log_level="quiet",
    )
    try:
        written = path.is_file() and path.stat().st_size > 0
        complete = written and count_frames_and_secs(str(path))[0] == len(stack)
    except (RuntimeError, OSError, ValueError):
        complete = False
    if not complete:
        raise OSError(
            errno.EIO,
            "ffmpeg could not write a complete MP4 (a full disk or a folder that cannot be "
            "written are the usual causes)",
        )


def _even_rgb(frame: np.ndarray) -> np.ndarray:
    """An RGB frame with even sides (what H.264's yuv420p needs), padded with grey."""
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    height, width = frame.shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    return np.pad(frame, pad, constant_values=128)
