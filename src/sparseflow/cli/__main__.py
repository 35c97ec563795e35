"""``python -m sparseflow.cli``: the ``sparseflow`` command."""

import sys

from sparseflow.cli.commands import main

sys.exit(main())
