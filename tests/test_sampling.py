"""Sampling tools: truncation, latent walks (GIF, MP4, MP4's missing plugin), outputs never written
over files that exist."""

from __future__ import annotations

import sys

import imageio.v3 as iio
import pytest
import torch

import gankit
from gankit.cli import main
from gankit.components.models.base import sample_noise
from gankit.outputs.files import image_grid
from gankit.outputs.walk import lerp, slerp, walk_latents


def tiny(noise: str = "normal", classes: int = 0) -> gankit.Generator:
    torch.manual_seed(0)
    spec = {"name": "mlp", "hidden": 8, "depth": 1, "z_dim": 4, "noise": noise}
    return gankit.GENERATORS.build({**spec, "num_classes": classes}, image_shape=(1, 5, 5))


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_truncation_scales_the_noise_toward_its_mean(noise):
    plain = sample_noise(noise, 500, 3, generator=torch.Generator().manual_seed(4))
    half = sample_noise(noise, 500, 3, generator=torch.Generator().manual_seed(4), truncation=0.5)
    assert torch.allclose(half, plain * 0.5)  # both distributions have mean 0
    generator = tiny(noise)
    assert torch.equal(generator.sample(3, seed=2, truncation=1.0), generator.sample(3, seed=2))
    with torch.no_grad():
        z = generator.sample_noise(3, generator=torch.Generator().manual_seed(2)) * 0.7
        expected = generator.eval()(z)
    assert torch.allclose(generator.sample(3, seed=2, truncation=0.7), expected)


@pytest.mark.parametrize("psi", [0, -0.5, 1.5, float("nan"), True, "0.5"])
def test_a_bad_truncation_is_a_clear_error(psi):
    with pytest.raises(ValueError, match=r"truncation must be a number in \(0, 1\]"):
        tiny().sample(2, truncation=psi)


def test_the_sample_command_truncates_and_never_overwrites(tmp_path, capsys):
    export = gankit.save_model(tiny(), tmp_path / "generator")
    out = tmp_path / "grid.png"
    assert main(["sample", str(export), "--n", "4", "--seed", "3", "--truncation", "0.5",
                 "--out", str(out)]) == 0  # fmt: skip
    expected = image_grid(gankit.load_generator(export).sample(4, seed=3, truncation=0.5))
    assert (iio.imread(out) == expected).all()
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"not gankit's")
    assert main(["sample", str(export), "--out", str(mine)]) == 2
    error = capsys.readouterr().err
    assert "already exists" in error and "--force" in error and error.count("\n") == 1
    assert mine.read_bytes() == b"not gankit's"
    assert main(["sample", str(export), "--n", "4", "--out", str(mine), "--force"]) == 0
    assert iio.imread(mine).shape == expected.shape
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(export), "--truncation", "1.2"])
    assert exit_info.value.code == 2 and "truncation must be" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator", "grid.png", "mine.png"]


def test_slerp_keeps_to_the_sphere_and_lerp_to_the_line():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert torch.allclose(slerp(a, b, 0.5), torch.tensor([[0.5**0.5, 0.5**0.5]]))
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    assert torch.allclose(slerp(a, 3 * a, 0.5), 2 * a)  # parallel: a straight line
    assert torch.allclose(lerp(a, b, 0.25), torch.tensor([[0.75, 0.25]]))


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_a_walk_loops_through_its_points(noise):
    generator = tiny(noise)
    latents = walk_latents(generator, walks=2, points=3, steps=4, seed=5)
    assert latents.shape == (12, 2, 4)
    keys = generator.sample_noise(6, generator=torch.Generator().manual_seed(5)).view(3, 2, 4)
    assert torch.equal(latents[0], keys[0]) and torch.equal(latents[4], keys[1])
    between = slerp if noise == "normal" else lerp
    assert torch.allclose(latents[10], between(keys[2], keys[0], 0.5))


def test_interpolate_writes_a_gif_of_the_walk_one_row_per_class(tmp_path, capsys):
    generator = tiny(classes=3)
    export = gankit.save_model(generator, tmp_path / "generator")
    out = tmp_path / "walk.gif"
    argv = ["interpolate", str(export), "--out", str(out), "--points", "2", "--steps", "3"]
    assert main([*argv, "--seed", "1", "--n", "2", "--fps", "5"]) == 0
    frames = iio.imread(out, index=None)
    assert frames.shape == (6, 3 * 6 + 1, 2 * 6 + 1)  # 2 points x 3 steps; 3 class rows of 2
    latents = walk_latents(generator, walks=2, points=2, steps=3, seed=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.no_grad():
        fourth = generator.eval()(latents[4].repeat(3, 1), labels)
    assert (frames[4] == image_grid(fourth, per_row=2)).all()

    before = out.read_bytes()
    assert main([*argv, "--label", "2"]) == 2  # exists
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*argv, "--label", "2", "--n", "1", "--force"]) == 0
    assert iio.imread(out, index=None).shape == (6, 7, 7)  # one image of class 2 per frame
    assert main([*argv, "--label", "7", "--force"]) == 2
    assert "labels must lie in [0, 3)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator", "walk.gif"]


def test_mp4_without_the_ffmpeg_plugin_says_what_to_install(tmp_path, capsys, monkeypatch):
    export = gankit.save_model(tiny(), tmp_path / "generator")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    assert main(["interpolate", str(export), "--out", str(tmp_path / "walk.mp4")]) == 2
    error = capsys.readouterr().err
    assert "pip install 'gankit[video]'" in error and error.count("\n") == 1
    assert main(["interpolate", str(export), "--out", str(tmp_path / "walk.avi")]) == 2
    assert ".gif or .mp4" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]


def test_interpolate_writes_an_mp4_of_the_walk(tmp_path):
    """With imageio-ffmpeg (the [video] extra), the same walk as the GIF, as H.264 frames."""
    generator = tiny()
    export = gankit.save_model(generator, tmp_path / "generator")
    argv = ["interpolate", str(export), "--points", "2", "--steps", "4", "--seed", "3"]
    assert main([*argv, "--n", "4", "--out", str(tmp_path / "walk.mp4")]) == 0
    assert main([*argv, "--n", "4", "--out", str(tmp_path / "walk.gif")]) == 0
    gif = iio.imread(tmp_path / "walk.gif", index=None)
    mp4 = iio.imread(tmp_path / "walk.mp4", index=None, plugin="FFMPEG")
    frames, height, width = gif.shape
    assert mp4.shape == (frames, height + height % 2, width + width % 2, 3)  # even sides
    error = abs(mp4[:, :height, :width, 0].astype(float) - gif.astype(float)).mean()
    assert main([*argv[:-1], "4", "--n", "4", "--out", str(tmp_path / "other.gif")]) == 0
    other = iio.imread(tmp_path / "other.gif", index=None).astype(float)
    assert error < 5 < 10 < abs(mp4[:, :height, :width, 0] - other).mean()  # lossy, same walk


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_a_full_disk_under_interpolate_is_one_line_and_leaves_nothing(
    tmp_path, capfd, monkeypatch, suffix
):
    """The temporary file is a link to /dev/full, so every write to it fails with the OS's own
    ENOSPC (ffmpeg's included, which it reports only on its stderr)."""
    import gc
    import os

    export = gankit.save_model(tiny(), tmp_path / "generator")
    monkeypatch.setattr("secrets.token_hex", lambda nbytes=None: "0d15c0ff")
    out = tmp_path / "walks" / f"walk{suffix}"
    out.parent.mkdir()
    temp = out.parent / f".{out.name}.tmp-{os.getpid()}-0d15c0ff{suffix}"
    temp.symlink_to("/dev/full")
    argv = ["interpolate", str(export), "--points", "2", "--steps", "2", "--n", "2"]
    assert main([*argv, "--out", str(out)]) == 2
    gc.collect()
    err = capfd.readouterr().err
    reason = {
        ".gif": "No space left on device",
        ".mp4": "ffmpeg could not write a complete MP4 (a full disk or a folder that cannot be "
        "written are the usual causes)",
    }[suffix]
    advice = {
        ".gif": f"free disk space in {out.parent} or choose another --out",
        ".mp4": f"check that {out.parent} is writable and has free space",
    }[suffix]
    assert err == (
        f"gankit: error: could not write --out {out}: {reason}; nothing half-written was left "
        f"there; {advice}\n"
    )
    assert list(out.parent.iterdir()) == []
