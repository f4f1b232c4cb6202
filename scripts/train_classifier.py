"""Train the MNIST classifier that gankit ships for its metrics, deterministically, on the CPU.

    python scripts/train_classifier.py --data-root ../shared/data/mnist

Writes gankit/metrics/assets/mnist_classifier.safetensors and mnist_classifier.json (test accuracy,
settings, the weights' SHA-256) with `gankit classifier train mnist`'s code. Same seed, same
thread count, same torch: same weights.
"""

import argparse

from gankit.metrics.classifier import WEIGHTS
from gankit.metrics.classifier_training import train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data", help="folder holding MNIST/raw/")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    card = train_classifier(
        "mnist",
        data_root=args.data_root,
        out=WEIGHTS,
        epochs=args.epochs,
        seed=args.seed,
        command="python scripts/train_classifier.py --data-root <MNIST root>",
    )
    print(f"test accuracy {card['test_accuracy']:.4f}; wrote {WEIGHTS} and its card")


if __name__ == "__main__":
    main()
