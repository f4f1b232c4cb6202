"""Where `gankit data prepare` reads images from: a folder, a .zip, or a list file of paths.

Each source yields `Entry`s (a relative name, its class folder, how to read its bytes) sorted
by name, plus the entries refused before any byte is read (links out of the source, FIFOs,
devices, paths outside a list file's folder) with the reason. Nothing in a source is ever
written to; links are followed only where they land inside the source.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gankit.core.bounded import BoundedReadError, read_text
from gankit.core.errors import DatasetError, cut

MAX_FILE_BYTES = 256 * 2**20  # one image file; larger files are skipped, never read
MAX_ENTRIES = 10_000_000  # files one source may list
MAX_LIST_BYTES = 1 << 30  # a list file of paths
HF_MARKERS = ("dataset_dict.json", "state.json")  # a folder save_to_disk wrote
_archives: dict[tuple[int, str], zipfile.ZipFile] = {}  # per process: a fork shares offsets


@dataclass(frozen=True)
class Entry:
    """One file of a source: `name` relative to the source (POSIX), its first-level folder
    (`group`, "" for a file directly in the source), and where its bytes are (`path` on disk,
    or `member` of the zip `archive`, or `row` of the Hugging Face dataset `hf`)."""

    name: str
    group: str
    path: str = ""
    archive: str = ""
    member: str = ""
    hf: Any = None  # a Hugging Face dataset (hf_source.HFSource), and the entry's row in it
    row: int = -1


@dataclass
class Listing:
    """A source's entries (sorted by name), the files refused unread (name, reason, detail),
    and the class name of images lying directly in the source."""

    entries: list[Entry] = field(default_factory=list)
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    root_name: str = "images"


def _group(name: str) -> str:
    parts = PurePosixPath(name).parts
    return parts[0] if len(parts) > 1 else ""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind_of(mode: int) -> str | None:
    """Why a file of this mode is no candidate (never opened), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO, not opened"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file, not opened"
    return "not a regular file"


def _add(listing: Listing, name: str, target: str, missing: str, folders: bool = False) -> bool:
    """Add the file at `target` as entry `name`, or its refusal (`missing`: the reason when it
    cannot be found); True, adding nothing, for a folder when `folders`."""
    try:
        mode = os.stat(target).st_mode
    except OSError as error:
        listing.refused.append((name, missing, error.strerror or str(error)))
        return False
    if folders and stat.S_ISDIR(mode):
        return True
    if (why := _kind_of(mode)) is not None:
        listing.refused.append((name, "not a file", why))
    else:
        listing.entries.append(Entry(name, _group(name), path=target))
    return False


def _count(listing: Listing, source: Path) -> None:
    if len(listing.entries) + len(listing.refused) > MAX_ENTRIES:
        raise DatasetError(
            f"{source} holds more than {MAX_ENTRIES:,} files, more than one prepared set may "
            "hold; split it into several sources"
        )


def list_folder(source: Path) -> Listing:
    """Every file under `source` (names starting with '.' left out). A link is followed only
    when its target lies inside `source` (a folder once: loops end); others are refused."""
    root = os.path.realpath(source)
    listing = Listing(root_name=Path(root).name or "images")
    seen: set[tuple[int, int]] = set()
    pending: list[tuple[str, str]] = [("", root)]
    while pending:
        relative, real = pending.pop()
        info = os.stat(real)
        if (info.st_dev, info.st_ino) in seen:
            listing.refused.append((relative, "link", "a link to a folder already read"))
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(real), key=lambda entry: entry.name)
        except OSError as error:
            listing.refused.append((relative or ".", "unreadable", f"cannot list: {error}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = f"{relative}/{entry.name}" if relative else entry.name
            target = os.path.join(real, entry.name)
            if entry.is_symlink():
                target = os.path.realpath(target)
                if not _inside(target, root):
                    listing.refused.append((name, "link", "a link out of the source, not followed"))
                    continue
            if _add(listing, name, target, "unreadable", folders=True):
                pending.append((name, target))
            _count(listing, source)
    listing.entries.sort(key=lambda entry: entry.name)
    listing.refused.sort()
    return listing


def list_zip(source: Path) -> Listing:
    """Every file in the zip (links and names starting with '.' left out). When all lie in one
    top folder, that folder is the source, as if the archive had been unpacked and named."""
    try:
        with zipfile.ZipFile(source) as archive:
            infos = [info for info in archive.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DatasetError(
            f"{source} is not a readable zip archive ({cut(str(error), 120)}); give a valid "
            ".zip, a folder, or a list file of image paths"
        ) from None
    listing = Listing(root_name=source.stem)
    names = [PurePosixPath(info.filename) for info in infos]
    tops = {name.parts[0] for name in names if len(name.parts) > 1}
    strip = len(tops) == 1 and all(len(name.parts) > 1 for name in names)
    if strip:
        listing.root_name = tops.pop()
    for info, path in zip(infos, names, strict=True):
        parts = path.parts[1:] if strip else path.parts
        if not parts or any(part.startswith(".") for part in parts):
            continue
        name = "/".join(parts)
        if path.is_absolute() or "\\" in info.filename:
            listing.refused.append((info.filename, "unsafe name", "an absolute or Windows path"))
        elif stat.S_ISLNK(info.external_attr >> 16):
            listing.refused.append((name, "link", "a link inside the zip, not followed"))
        else:
            listing.entries.append(
                Entry(name, _group(name), archive=str(source), member=info.filename)
            )
        _count(listing, source)
    listing.entries.sort(key=lambda entry: entry.name)
    listing.refused.sort()
    return listing


def list_file(source: Path) -> Listing:
    """The paths in a list file, one a line, relative to its folder (blank lines and lines
    starting with '#' left out). Paths that leave that folder are refused."""
    try:
        text = read_text(source, what="list file", max_bytes=MAX_LIST_BYTES)
    except BoundedReadError as error:
        raise DatasetError(f"{error}; give a text file with one image path a line") from None
    root = os.path.realpath(source.parent)
    listing = Listing(root_name=Path(root).name or "images")
    for line in text.splitlines():
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        posix = PurePosixPath(name.replace(os.sep, "/"))
        target = os.path.realpath(os.path.join(root, *posix.parts))
        if posix.is_absolute() or not _inside(target, root):
            listing.refused.append((name, "outside", "not inside the list file's folder"))
            continue
        _add(listing, str(posix), target, "missing")
        _count(listing, source)
    unique = {entry.name: entry for entry in listing.entries}
    listing.entries = sorted(unique.values(), key=lambda entry: entry.name)
    listing.refused.sort()
    return listing


def list_source(source: str | Path) -> Listing:
    """The entries of a folder, a .zip or a list file (anything else that is a file)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(
            f"source {path} does not exist; give a folder of images, a .zip of them, or a "
            "text file listing image paths"
        )
    if path.is_dir():
        if any((path / name).is_file() for name in HF_MARKERS):
            raise DatasetError(
                f"source {path} is a Hugging Face dataset written by save_to_disk; add --hf "
                "(and --split, --image-column, --label-column as it needs)"
            )
        return list_folder(path)
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return list_zip(path)
    return list_file(path)


def read_entry(entry: Entry) -> bytes:
    """The bytes of one entry, at most MAX_FILE_BYTES (else ValueError); on disk only from a
    regular file, opened without waiting (a file swapped for a FIFO is refused)."""
    if entry.hf is not None:
        from gankit.components.prepared.hf_source import read_row

        return read_row(entry.hf, entry.row)
    if entry.archive:
        key = (os.getpid(), entry.archive)
        if key not in _archives:
            _archives[key] = zipfile.ZipFile(entry.archive)
        info = _archives[key].getinfo(entry.member)
        if info.file_size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES:,} bytes")
        with _archives[key].open(info) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    else:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(entry.path, flags)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise ValueError("not a regular file")
            data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES:,} bytes")
    return data
