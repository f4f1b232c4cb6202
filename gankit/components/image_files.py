"""The files of an image folder: found once, each checked cheaply, the odd ones skipped and listed.

A user's folder holds more than images: empty files, text saved as `.png`, downloads cut short,
FIFOs, device files, links. `find_images` walks it once, reading nothing but the files that
look like images, and returns those that open as images together with the others and why they
were skipped. It never writes to the folder. Links are followed to regular files and to folders
(each folder visited once, so a loop ends); a FIFO, device or socket, or a link to one, is
refused from its `stat` alone and never opened, since opening a FIFO waits for a writer.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# How whole files of a format end: PNG with its IEND chunk, JPEG with its End Of Image marker
FILE_ENDS = {"PNG": b"\x00\x00\x00\x00IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}


@dataclass
class ImageFiles:
    """What `find_images` found: images (paths relative to the folder, sorted) and the files
    skipped, each with the reason."""

    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def describe_skipped(self, folder: Path, shown: int = 8) -> str:
        """The skipped files as one line: how many, the first `shown` with their reasons."""
        listed = "; ".join(f"{path} ({why})" for path, why in self.skipped[:shown])
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return (
            f"image folder {folder}: skipped {len(self.skipped)} file(s) that are not readable "
            f"images: {listed}{more}. They stay where they are; training uses the other "
            f"{len(self.images)}"
        )


def open_image_file(path: str | Path) -> IO[bytes]:
    """`path` opened for reading, if it is a regular file (through links); a FIFO, device or
    socket raises OSError without being opened in a way that waits or has effects."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file")
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # swapped since the stat
        os.close(descriptor)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(descriptor, "rb")


def _special(mode: int) -> str | None:
    if stat.S_ISFIFO(mode):
        return "a FIFO, not opened"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file, not opened"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def check_image(path: Path) -> str | None:
    """Why the file at `path` cannot serve as an image, or None when it opens as one. Reads
    the header and, for PNG and JPEG, the few bytes that end a whole file (cheap on folders of
    large images); a file without them, or of another format, is decoded whole."""
    from PIL import Image, UnidentifiedImageError

    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "a broken link"
    except OSError as error:
        return f"cannot be read: {error.strerror}"
    special = _special(info.st_mode)
    if special is not None:
        return special if not os.path.islink(path) else f"a link to {special.split(',')[0]}"
    if info.st_size == 0:
        return "empty"
    try:
        with open_image_file(path) as handle, Image.open(handle) as image:
            end = FILE_ENDS.get(image.format or "")
            if end is not None and info.st_size > len(end):
                handle.seek(-len(end), os.SEEK_END)
                if handle.read(len(end)) == end:
                    return None
            image.load()  # no end marker to read (or another format): decode it whole
    except UnidentifiedImageError:
        return "not an image in a format PIL reads"
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        reason = " ".join(str(error).split())[:100]
        return f"not a readable image: {type(error).__name__}: {reason}"
    return None


def find_images(folder: Path, extensions: tuple[str, ...]) -> ImageFiles:
    """The image files under `folder` whose names end in one of `extensions` (any case); names
    starting with '.' are left out, and files that do not open as images are skipped."""
    suffixes = tuple(extension.lower() for extension in extensions)
    found = ImageFiles()
    seen: set[tuple[int, int]] = set()
    pending = [Path()]
    while pending:
        relative = pending.pop()
        current = folder / relative
        info = os.stat(current)
        if (info.st_dev, info.st_ino) in seen:
            found.skipped.append((relative, "a link to a folder already read"))
            continue
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError as error:
            found.skipped.append((relative, f"cannot be listed: {error.strerror}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = relative / entry.name
            try:
                is_folder = entry.is_dir()  # through a link
            except OSError:
                is_folder = False
            if is_folder:
                pending.append(path)
            elif entry.name.lower().endswith(suffixes):
                why = check_image(folder / path)
                if why is None:
                    found.images.append(path)
                else:
                    found.skipped.append((path, why))
    found.images.sort(key=lambda path: path.parts)
    found.skipped.sort(key=lambda item: item[0].parts)
    return found
