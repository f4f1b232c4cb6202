"""`python -m gankit ...`: the `gankit` command."""

import sys

from gankit.cli import main

if __name__ == "__main__":
    sys.exit(main())
