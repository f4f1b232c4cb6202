"""Named evaluation protocols (`gankit eval --protocol`): fixed settings under one name, so a
number can be compared with a paper's that used the same protocol.

`paper`: 50,000 generated samples against the full training set (datasets without a split: all
their images), Inception features of images resized as clean-fid's "clean" mode does (Parmar et
al. 2022: PIL bicubic), FID, KID, precision/recall and density/coverage from those features.
A setting given beside the preset replaces the preset's value, and the report says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gankit.core.errors import warn

NEAREST_SHOWN = 8  # samples in the memorisation grid unless told
MAX_NEAREST_SHOWN = 256


@dataclass(frozen=True)
class Preset:
    """The settings a protocol fixes."""

    n: int
    split: str
    inception: bool
    resize: str  # a key of inception.RESIZES
    description: str


DEFAULT = Preset(
    n=10_000,
    split="test",
    inception=False,
    resize="extractor",
    description="gankit's default: quick figures for comparing one's own runs",
)
PRESETS = {
    "default": DEFAULT,
    "paper": Preset(
        n=50_000,
        split="train",
        inception=True,
        resize="clean",
        description="50,000 samples against the full training set, Inception features of "
        "clean-resized images (PIL bicubic to 299x299, as clean-fid): comparable with papers "
        "that report clean FID",
    ),
}


def apply_preset(name: str, given: dict[str, Any]) -> tuple[Preset, dict[str, Any]]:
    """The preset `name` with the settings the user `given` (None: not given) in their place,
    and the record of it for the report's protocol (a warning names what was replaced)."""
    preset = PRESETS[name]
    replaced = {
        key: value
        for key, value in given.items()
        if value is not None and value != getattr(preset, key)
    }
    chosen = Preset(**{**asdict(preset), **replaced})
    record: dict[str, Any] = {"preset": name, "preset_description": preset.description}
    if replaced and name != "default":
        record["preset_replaced"] = replaced
        shown = ", ".join(f"{key}={value}" for key, value in replaced.items())
        warn(f"--protocol {name} with {shown}: these numbers do not follow the '{name}' protocol")
    return chosen, record
