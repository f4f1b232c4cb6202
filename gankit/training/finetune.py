"""Fine-tuning: a new run's networks start from exported weights (`train.init_from`).

`init_from` names a generator export folder (its sibling `discriminator/` export, as a run
writes them, initialises D too), a run's `export/` folder or the run folder itself (both
networks), or a Hugging Face Hub repo id (the generator). Each export must describe the same
component, parameters and sample shape as the recipe's section, else nothing trains. A resumed
run continues from its checkpoint and never reads `init_from`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from gankit.core.errors import GankitError, shown
from gankit.outputs.export import CONFIG_FILE, load_model, read_config
from gankit.outputs.hub import download_export, looks_like_repo_id

NETWORKS = ("generator", "discriminator")


def init_sources(source: str) -> dict[str, Path]:
    """The export folders `train.init_from` names, by network ("generator", "discriminator")."""
    if looks_like_repo_id(source):
        return {"generator": download_export(source)}
    folder = Path(source)
    if (folder / CONFIG_FILE).is_file():
        kind = read_config(folder)["kind"]
        if kind not in NETWORKS:
            raise GankitError(f"train.init_from: '{folder}' holds a {kind}, not a network export")
        sources = {kind: folder}
        sibling = folder.parent / "discriminator"
        if kind == "generator" and (sibling / CONFIG_FILE).is_file():
            sources["discriminator"] = sibling
        return sources
    for base in (folder, folder / "export"):
        found = {name: base / name for name in NETWORKS if (base / name / CONFIG_FILE).is_file()}
        if found:
            return found
    raise GankitError(
        f"train.init_from {shown(source)}: no export there; give a generator export folder "
        "(runs/<name>/export/generator), a run's export/ folder, or a Hub repo id (user/name)"
    )


def check_matches(network: nn.Module, section: str, config: dict[str, Any], folder: Path) -> None:
    """Refuse an export whose component, parameters or sample shape differ from the network the
    recipe builds: its weights would not fit, or would mean something else."""
    spec = getattr(network, "gankit_spec", None)
    if spec is None:  # not built through a registry: the strict load below still checks names
        return
    differing = []
    if config["name"] != spec["name"]:
        differing.append(f"{section}.name: export '{config['name']}', recipe '{spec['name']}'")
    else:
        exported, built = config["params"], spec["params"]
        differing += [
            f"{section}.{key}: export {shown(exported[key])}, recipe {shown(built[key])}"
            for key in sorted(exported.keys() & built.keys())
            if exported[key] != built[key]
        ]
        for key in sorted(config.get("runtime", {}).keys() & spec["runtime"].keys()):
            if config["runtime"][key] != spec["runtime"][key]:
                differing.append(
                    f"{key} (from the data): export {shown(config['runtime'][key])}, "
                    f"recipe {shown(spec['runtime'][key])}"
                )
    if differing:
        raise GankitError(
            f"train.init_from: the {section} exported in '{folder}' does not match the recipe: "
            f"{'; '.join(differing)}. Make the recipe's {section} section match the export, "
            "or start from another export"
        )


def initialise(parts: Any, source: str) -> list[str]:
    """Load the exports `source` names into the parts' networks (and G's moving average);
    returns the networks initialised. Call before the first step, on every process."""
    sources = init_sources(source)
    networks = {"generator": parts.generator, "discriminator": parts.discriminator}
    for name, folder in sources.items():
        check_matches(networks[name], name, read_config(folder), folder)
    for name, folder in sources.items():
        exported = load_model(folder, device=next(networks[name].parameters()).device)
        try:
            networks[name].load_state_dict(exported.state_dict())
        except RuntimeError as error:
            reason = " ".join(str(error).split())[:300]
            raise GankitError(
                f"train.init_from: the {name} exported in '{folder}' does not fit the recipe's "
                f"{name} ({reason}); make the recipe's {name} section match the export"
            ) from None
    if parts.ema is not None and "generator" in sources:
        parts.ema.module.load_state_dict(parts.generator.state_dict())
    return [f"{name} from {folder}" for name, folder in sources.items()]


def freeze_input_blocks(discriminator: nn.Module, count: int, name: str) -> None:
    """Keep D's first `count` blocks from the image's side as they are (FreezeD, Mo et al.
    2020): their parameters take no gradient and no optimizer step. `name`: D's component name,
    for the message when it does not declare its blocks or has fewer."""
    if count == 0:
        return
    declared = getattr(discriminator, "input_blocks", None)
    blocks = declared() if declared is not None else []
    if len(blocks) < count:
        have = (
            f"has {len(blocks)} blocks" if blocks else "does not declare its blocks (input_blocks)"
        )
        raise GankitError(
            f"train.freeze_d={count}: discriminator '{name}' {have}; set train.freeze_d to at "
            f"most {len(blocks)}"
        )
    for block in blocks[:count]:
        block.requires_grad_(False)


def trainable(network: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer updates: those not frozen."""
    return [parameter for parameter in network.parameters() if parameter.requires_grad]
