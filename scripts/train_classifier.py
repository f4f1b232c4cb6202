"""Train the MNIST classifier that gankit's metrics use, deterministically, on the CPU.

    python scripts/train_classifier.py --data-root ../shared/data/mnist

Writes gankit/metrics/assets/mnist_classifier.safetensors and mnist_classifier.json (test accuracy,
settings, the weights' SHA-256). Same seed, same thread count, same torch: same weights.
"""

import argparse
import hashlib
import json
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from torch.utils.data import DataLoader

from gankit.components.data import mnist
from gankit.metrics.classifier import CARD, WEIGHTS, MNISTClassifier


@torch.no_grad()
def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    predictions = torch.cat([model(batch).argmax(1) for batch in images.split(1000)])
    return (predictions == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data", help="folder holding MNIST/raw/")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    train = mnist(args.data_root, download=False, split="train")
    test = mnist(args.data_root, download=False, split="test")
    loader = DataLoader(
        train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(args.seed)
    )
    model = MNISTClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=2e-3, total_steps=args.epochs * len(loader)
    )
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for images, labels in loader:
            # small random shifts (up to 2 pixels) make the features robust to imperfect digits
            shift = torch.randint(-2, 3, (2,)).tolist()
            images = torch.roll(images, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        test_images, test_labels = test.tensors
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, test_images, test_labels):.4f}")
    test_accuracy = accuracy(model, *test.tensors)
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(WEIGHTS))
    CARD.write_text(
        json.dumps(
            {
                "architecture": "gankit.metrics.classifier.MNISTClassifier",
                "test_accuracy": round(test_accuracy, 4),
                "trained_on": "MNIST train split (60,000), images in [-1, 1]",
                "evaluated_on": "MNIST test split (10,000)",
                "epochs": args.epochs,
                "seed": args.seed,
                "optimizer": "Adam, one-cycle to lr 2e-3, batch 128, random shifts of <= 2 px",
                "command": "python scripts/train_classifier.py --data-root <MNIST root>",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "seconds": round(time.perf_counter() - start),
                "sha256": hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"test accuracy {test_accuracy:.4f}; wrote {WEIGHTS} and {CARD}")


if __name__ == "__main__":
    main()
