"""`gankit data prepare` on real files of every odd kind, and the `prepared` dataset reading
what it wrote (shard checksums, the trainer's paths, the same pixels as `image_folder`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.cli import main
from gankit.components.data import ImageFolderDataset, to_uint8
from gankit.components.prepared.dataset import PreparedDataset
from gankit.components.prepared.prepare import prepare
from gankit.config.registry import DATASETS
from gankit.core.errors import DatasetError
from gankit.training import fastpath

from conftest import REFERENCE_RECIPE, ROOT

EMOJI = ROOT.parent / "shared" / "data" / "emoji" / "google"
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def tree_digest(folder: Path) -> dict[str, str]:
    """Every name below `folder` (links not followed) with its type and content hash."""
    found = {}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(parent) / name
            if path.is_symlink():
                found[str(path.relative_to(folder))] = "link " + os.readlink(path)
            elif path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[str(path.relative_to(folder))] = f"{digest} {path.stat().st_mtime_ns}"
            else:
                found[str(path.relative_to(folder))] = "folder"
    return found


def jpeg_bytes(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    """48x24 stripes red | green | blue, left to right, tagged to be shown turned 90 degrees
    clockwise (EXIF orientation 6): shown, red is on top and blue at the bottom."""
    pixels = np.zeros((24, 48, 3), dtype=np.uint8)
    pixels[:, :16], pixels[:, 16:32], pixels[:, 32:] = RED, GREEN, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(Image.fromarray(pixels), exif=exif)


def odd_folder(root: Path) -> Path:
    """Two class folders of odd files, one nested deeper; each file's fate is in the test."""
    a, b = root / "a", root / "b" / "deep" / "deeper"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "rotated.jpg").write_bytes(rotated_jpeg())
    alpha = np.zeros((16, 16, 4), dtype=np.uint8)
    alpha[:, :8] = (255, 0, 0, 0)  # transparent red: the background shows
    alpha[:, 8:] = (0, 255, 0, 255)
    Image.fromarray(alpha, "RGBA").save(a / "alpha.png")
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(a / "palette.gif")
    holes = Image.new("P", (16, 16), 1)
    holes.putpalette([255, 0, 0, 10, 200, 30] + [0] * 762)
    holes.paste(0, (0, 0, 8, 16))
    holes.save(a / "holes.gif", transparency=0)  # index 0, red, is transparent
    deep = np.tile(np.array([0, 32896, 65535], dtype=np.uint16), (16, 6))[:, :16]
    Image.fromarray(deep).save(a / "deep.png")
    Image.new("L", (16, 16), 77).save(b / "grey.png")
    (a / "cmyk.jpg").write_bytes(jpeg_bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0))))
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    whole = jpeg_bytes(Image.fromarray(noise))
    (a / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (a / "empty.png").write_bytes(b"")
    (a / "notes.jpg").write_text("not a picture\n")
    shutil.copy(b / "grey.png", root / "b" / "grey_copy.png")
    return root


def test_odd_files_are_prepared_skipped_or_deduplicated_and_the_source_is_unchanged(tmp_path):
    source = odd_folder(tmp_path / "photos")
    before = tree_digest(source)
    manifest = prepare(
        source, tmp_path / "out", size=16, crop="pad", background="#0000ff", progress=False
    )
    assert tree_digest(source) == before
    assert manifest["classes"] == ["a", "b"]
    assert manifest["sources"] == [
        "a/alpha.png", "a/cmyk.jpg", "a/deep.png", "a/holes.gif", "a/palette.gif", "a/rotated.jpg",
        "b/deep/deeper/grey.png",
    ]  # fmt: skip
    assert manifest["labels"] == [0, 0, 0, 0, 0, 0, 1]
    reasons = {item["source"]: item["reason"] for item in manifest["skipped"]}
    assert reasons == {
        "a/empty.png": "empty",
        "a/notes.jpg": "not an image",
        "a/truncated.jpg": "truncated",
    }
    assert manifest["duplicates"] == [
        {"source": "b/grey_copy.png", "duplicate_of": "b/deep/deeper/grey.png"}
    ]
    data = PreparedDataset(tmp_path / "out")
    pixels = {name: to_uint8(data[i][0]) for i, name in enumerate(manifest["sources"])}
    alpha = pixels["a/alpha.png"]
    assert alpha[:, :, :8].eq(torch.tensor(BLUE).view(3, 1, 1)).all()  # the background
    assert alpha[:, :, 8:].eq(torch.tensor(GREEN).view(3, 1, 1)).all()
    assert pixels["a/palette.gif"].eq(torch.tensor([10, 200, 30]).view(3, 1, 1)).all()
    holes = pixels["a/holes.gif"]
    assert holes[:, :, :8].eq(torch.tensor(BLUE).view(3, 1, 1)).all()
    assert holes[:, :, 8:].eq(torch.tensor([10, 200, 30]).view(3, 1, 1)).all()
    assert pixels["a/deep.png"][0, 0, :6].tolist() == [0, 128, 255, 0, 128, 255]  # not clipped
    assert pixels["b/deep/deeper/grey.png"].eq(77).all()
    cmyk = pixels["a/cmyk.jpg"].float().mean((1, 2))
    assert (cmyk - torch.tensor(RED)).abs().max() < 8
    # shown upright: 12 wide, 24 tall scaled to 8x16 on the blue background, red on top
    rotated = pixels["a/rotated.jpg"].float()
    assert (rotated[:, 1, 8] - torch.tensor(RED)).abs().max() < 40
    assert (rotated[:, 14, 8] - torch.tensor(BLUE)).abs().max() < 40
    assert rotated[:, 8, 1].tolist() == list(BLUE)  # padding at the side, not at the top
    assert (rotated[:, 8, 8] - torch.tensor(GREEN)).abs().max() < 40


def test_links_out_of_the_source_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8), RED).save(outside / "secret.png")
    source = tmp_path / "photos"
    (source / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8), GREEN).save(source / "cats" / "cat.png")
    (source / "cats" / "secret.png").symlink_to(outside / "secret.png")
    (source / "dogs").symlink_to(outside)
    (source / "cats" / "link.png").symlink_to(source / "cats" / "cat.png")  # inside: followed
    manifest = prepare(source, tmp_path / "out", size=8, progress=False)
    assert manifest["sources"] == ["cats/cat.png"] and manifest["classes"] == ["cats"]
    assert manifest["duplicates"] == [{"source": "cats/link.png", "duplicate_of": "cats/cat.png"}]
    assert {(item["source"], item["reason"]) for item in manifest["skipped"]} == {
        ("cats/secret.png", "link"),
        ("dogs", "link"),
    }


def small_set(root: Path) -> Path:
    for index, (group, colour) in enumerate([("x", RED), ("x", GREEN), ("y", BLUE)]):
        (root / group).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 8), colour).save(root / group / f"{index}.png")
    return root


def test_zip_and_list_sources_give_the_same_set_as_the_folder(tmp_path):
    folder = small_set(tmp_path / "photos")
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*.png")):
            handle.write(path, f"photos/{path.relative_to(folder)}")
    listing = tmp_path / "list.txt"
    listing.write_text("# kept\nphotos/y/2.png\nphotos/x/0.png\n\nphotos/x/1.png\n../escape.png\n")
    made = {
        kind: prepare(source, tmp_path / kind, size=8, progress=False)
        for kind, source in (("folder", folder), ("zip", archive), ("list", listing))
    }
    assert made["folder"]["sources"] == made["zip"]["sources"] == ["x/0.png", "x/1.png", "y/2.png"]
    assert made["list"]["sources"] == ["photos/x/0.png", "photos/x/1.png", "photos/y/2.png"]
    assert made["list"]["classes"] == ["photos"]  # first-level folder of the listed paths
    assert made["list"]["skipped"][0]["source"] == "../escape.png"
    pixels = {kind: PreparedDataset(tmp_path / kind).pixels for kind in made}
    assert torch.equal(pixels["folder"], pixels["zip"]) and torch.equal(
        pixels["folder"], pixels["list"]
    )
    assert to_uint8(PreparedDataset(tmp_path / "zip")[2][0])[:, 0, 0].tolist() == list(BLUE)


def test_bad_input_is_one_line_and_exit_code_two(tmp_path, capsys):
    source = small_set(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    command = [sys.executable, "-m", "gankit", "data", "prepare", str(source), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"gankit: error: output folder {out} is not empty" in result.stderr
    assert (out / "mine.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "a.txt").write_text("hello")
    cases = {
        "does not exist": [str(tmp_path / "missing"), str(tmp_path / "o1")],
        "is not a readable zip archive": [str(tmp_path / "broken.zip"), str(tmp_path / "o2")],
        "no readable images in": [str(tmp_path / "words"), str(tmp_path / "o3")],
        "is out of bounds": [str(source), str(tmp_path / "o4"), "--size", "4096"],
        "is inside the source": [str(source), str(source / "prepared")],
    }
    for message, args in cases.items():
        try:
            code = main(["data", "prepare", *args])
        except SystemExit as stop:  # argparse's refusal of a bad option
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))
    assert not (source / "prepared").exists()


def test_a_changed_shard_is_refused(tmp_path):
    prepare(small_set(tmp_path / "photos"), tmp_path / "out", size=8, progress=False)
    shard = tmp_path / "out" / "images-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-30] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as info:
        DATASETS.build({"name": "prepared", "root": str(tmp_path / "out")})
    message = str(info.value)
    assert "images-00000.safetensors does not match its SHA-256" in message
    assert "re-run `gankit data prepare" in message and "\n" not in message


def test_shards_batches_and_image_folder_pointed_at_a_prepared_set(tmp_path):
    out = tmp_path / "out"
    manifest = prepare(small_set(tmp_path / "photos"), out, size=8, shard_images=2, progress=False)
    assert [shard["count"] for shard in manifest["shards"]] == [2, 1]
    data = PreparedDataset(out)
    assert len(data) == 3 and data.labels.tolist() == [0, 0, 1]
    colours = [to_uint8(data[i][0])[:, 4, 4].tolist() for i in range(3)]
    assert colours == [list(RED), list(GREEN), list(BLUE)]
    batch = data.__getitems__([2, 0, -2])  # what a DataLoader asks for
    assert [to_uint8(image)[:, 0, 0].tolist() for image, _ in batch] == [
        list(BLUE), list(RED), list(GREEN)
    ]  # fmt: skip
    assert [label for _, label in batch] == [1, 0, 0]
    worker = pickle.loads(pickle.dumps(data))  # DataLoader workers map the shards again
    assert torch.equal(worker[2][0], data[2][0])
    folder = DATASETS.build({"name": "image_folder", "root": str(out), "size": 8})
    assert isinstance(folder, PreparedDataset) and torch.equal(folder.pixels, data.pixels)
    with pytest.raises(DatasetError, match=r"prepared at 3x8x8, not 3x16x16: set data.size=8"):
        DATASETS.build({"name": "image_folder", "root": str(out), "size": 16})


def emoji_subset(folder: Path, count: int = 20) -> Path:
    for name in ("smileys_emotion", "animals_nature"):
        paths = sorted((EMOJI / name).glob("*.png"))[: count // 2]
        assert len(paths) == count // 2, f"emoji PNGs missing in {EMOJI}"
        (folder / name).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, folder / name / path.name)
    return folder


def test_the_same_pixels_as_image_folder(tmp_path):
    """At the files' own size the pixels are equal; resized, `prepare` uses Lanczos where
    `image_folder` uses antialiased bilinear, so they differ near edges: on emoji at 32x32,
    3.3 levels on average and a PSNR of 31.8 dB (a channel swap or a shifted crop gives
    under 20 dB)."""
    folder = emoji_subset(tmp_path / "emoji", 32)  # enough files for the worker processes
    for size in (64, 32):
        out = tmp_path / f"prepared{size}"
        manifest = prepare(folder, out, size=size, progress=False)
        prepared = DATASETS.build({"name": "prepared", "root": str(out)})
        decoded = ImageFolderDataset(folder, size)
        assert prepared.classes == decoded.classes and len(prepared) == len(decoded) == 32
        assert manifest["sources"] == [str(Path(f).relative_to(folder)) for f in decoded.files]
        ours = torch.stack([to_uint8(prepared[i][0]) for i in range(32)]).float()
        theirs = torch.stack([to_uint8(decoded[i][0]) for i in range(32)]).float()
        assert [prepared[i][1] for i in range(32)] == decoded.labels
        if size == 64:
            assert torch.equal(ours, theirs)
        else:
            psnr = 10 * torch.log10(255**2 / (ours - theirs).square().mean())
            assert (ours - theirs).abs().mean() < 5 and psnr > 28


def test_training_on_a_prepared_set_from_the_command_line(tmp_path):
    out = tmp_path / "prepared"
    assert main(["data", "prepare", str(emoji_subset(tmp_path / "emoji", 8)), str(out),
                 "--size", "16"]) == 0  # fmt: skip
    dataset = PreparedDataset(out)
    assert torch.equal(
        fastpath.all_items(dataset), torch.stack([dataset[i][0] for i in range(8)])
    )  # the device copy takes the whole set at once, as for the in-memory kinds
    run = tmp_path / "run"
    overrides = [
        f"data={{name: prepared, root: {out}, batch_size: 4, hflip: true}}",
        "generator={name: mlp, hidden: 16}",
        "discriminator={name: mlp, hidden: 16}",
        "train.steps=2",
        "train.log_every=1",
        "train.progress=false",
        "perf.data_on_device=true",
        f"output_dir={run}",
    ]
    assert main(["train", str(REFERENCE_RECIPE), *overrides]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "d_loss" in r][-1] == 2


def test_a_prepared_set_trains_as_the_folder_it_came_from(tmp_path):
    """At the images' own size a prepared set holds the folder's pixels, labels and order, so
    the same recipe gives the same losses, step for step."""
    folder = emoji_subset(tmp_path / "emoji", 8)
    assert main(["data", "prepare", str(folder), str(tmp_path / "prepared"), "--size", "64"]) == 0
    losses = {}
    for kind in ("image_folder", "prepared"):
        root = folder if kind == "image_folder" else tmp_path / "prepared"
        overrides = [
            f"data={{name: {kind}, root: {root}, batch_size: 4}}",
            *([] if kind == "prepared" else ["data.size=64"]),
            "generator={name: mlp, hidden: 16}",
            "discriminator={name: mlp, hidden: 16}",
            "train.steps=3",
            "train.log_every=1",
            "train.progress=false",
            "train.n_samples=4",
            "train.export_discriminator=false",
            f"output_dir={tmp_path / 'runs' / kind}",
        ]
        assert main(["train", str(REFERENCE_RECIPE), *overrides]) == 0
        lines = (tmp_path / "runs" / kind / "metrics.jsonl").read_text().splitlines()
        losses[kind] = [(r["d_loss"], r["g_loss"]) for r in map(json.loads, lines) if "d_loss" in r]
    assert len(losses["prepared"]) == 3 and losses["prepared"] == losses["image_folder"]
