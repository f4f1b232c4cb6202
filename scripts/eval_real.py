"""The real-data floor of the metrics: real training images scored as if generated.

    python scripts/eval_real.py mnist --data-root DIR --n 10000 [--classifier FILE]

Takes `--n` images of the train split (a shuffle seeded with --seed) and measures them against
the test split exactly as `gankit eval` measures a generator, so a generator's numbers can be
read next to what real data of the same size scores. Prints the JSON.
"""

import argparse
import json

import torch

from gankit.metrics.evaluators import pick_classifier, prepare, run_evaluation
from gankit.metrics.reference import read_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a registered dataset with a split, e.g. mnist")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--classifier", help="default: the shipped one (MNIST)")
    args = parser.parse_args()

    train = read_split(args.dataset, args.data_root, "train")
    test = read_split(args.dataset, args.data_root, "test")
    shape = tuple(test.images.shape[1:])
    classifier = pick_classifier(args.dataset, args.classifier, shape, "--classifier", "cpu")
    measures = prepare(test, classifier=classifier, inception_weights=None, device="cpu",
                       batch_size=args.batch_size, show_progress=True)  # fmt: skip
    pool = train.images[
        torch.randperm(len(train.images), generator=torch.Generator().manual_seed(args.seed))
    ]
    taken = 0

    def generate(count: int, rng: torch.Generator) -> torch.Tensor:
        nonlocal taken
        taken += count
        return pool[taken - count : taken]

    results = run_evaluation(measures, test, generate, n=args.n, seed=args.seed,
                             batch_size=args.batch_size, show_progress=True)  # fmt: skip
    results["protocol"]["generator"] = f"{args.n} real {train.description} (seed {args.seed})"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
