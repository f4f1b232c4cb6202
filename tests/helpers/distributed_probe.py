"""Run by the distributed tests under `accelerate launch`: trains like scripts/train.py, and
records what each process saw in OUT.json.<process> so the test can compare ranks.

    accelerate launch --multi_gpu --num_processes 2 \
        tests/helpers/distributed_probe.py OUT.json RECIPE [overrides]
"""

import json
import sys

import torch

from gankit.config.recipe import load_recipe
from gankit.training.iteration import Inputs
from gankit.training.trainer import Trainer


def fingerprint(images: torch.Tensor, weights: torch.Tensor) -> list[float]:
    """A number per image, different for different images (a fixed random projection)."""
    return (images.flatten(1).double() @ weights).tolist()


def checksum(tensors) -> list[float]:
    return [float(t.double().sum()) for t in tensors]


def main() -> None:
    out, recipe, *overrides = sys.argv[1:]
    trainer = Trainer(load_recipe(recipe, overrides))
    weights = torch.randn(28 * 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen: list[list[float]] = []
    noise: list[list[float]] = []
    run = trainer.iteration.run

    def recording_run(inputs: Inputs) -> None:
        seen.append(fingerprint(inputs.real, weights))
        noise.append(inputs.z[:, 0].tolist())
        run(inputs)

    trainer.iteration.run = recording_run
    trainer.fit()
    report = {
        "process": trainer.accelerator.process_index,
        "processes": trainer.accelerator.num_processes,
        "seen": seen,
        "noise": noise,
        "parameters": checksum(
            [*trainer.parts.generator.parameters(), *trainer.parts.discriminator.parameters()]
        ),
        "buffers": checksum(
            [*trainer.parts.generator.buffers(), *trainer.parts.discriminator.buffers()]
        ),
        "fixed_noise": checksum([trainer.fixed_noise]),
    }
    if trainer.accelerator.is_main_process:
        dataset = trainer.parts.loader.dataset
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        report["dataset"] = fingerprint(images, weights)
    with open(f"{out}.{report['process']}", "w") as handle:  # fit() closed the process group
        json.dump(report, handle)


if __name__ == "__main__":
    main()
