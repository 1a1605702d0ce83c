"""``python -m sparsejax.runner <study> [flags]``: the ``sparsejax`` command."""

import sys

from sparsejax.runner._cli import main

sys.exit(main())
