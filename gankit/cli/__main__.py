"""`python -m gankit.cli`: the `gankit` command."""

import sys

from gankit.cli import main

sys.exit(main())
