"""Allow ``python -m fragility``."""

import sys

from fragility.cli import main

sys.exit(main())
