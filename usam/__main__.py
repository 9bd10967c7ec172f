"""``python -m usam ...`` = the ``usam`` command (e.g. under ``torchrun`` / ``accelerate launch``)."""

import sys

from .apps.cli import main

sys.exit(main())
