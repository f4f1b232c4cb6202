"""Train a recipe: `accelerate launch scripts/train.py RECIPE [key=value ...]`.

The same as `gankit train`, but launchable by accelerate (or torchrun) on many processes.
"""

import sys

from gankit.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
