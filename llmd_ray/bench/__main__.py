"""`python -m llmd_ray.bench ...` (see llmd_ray/bench/cli.py and bench/README.md)."""

import sys

from .cli import main

sys.exit(main())
