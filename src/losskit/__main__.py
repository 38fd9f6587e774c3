"""``python -m losskit ...``: the ``losskit`` command (:mod:`losskit.cli`)."""

import sys

from .cli import main

sys.exit(main())
