"""``python -m emseg.cli``: the ``emseg`` command."""

import sys

from emseg.cli import main

sys.exit(main())
