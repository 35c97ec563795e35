"""``python -m sparseflow`` runs the command line (also under ``torchrun -m sparseflow``)."""

import sys

from sparseflow.cli import main

sys.exit(main())
