"""``python -m adapters ...`` is ``credit-adapter ...``."""

import sys

from adapters.cli import main

sys.exit(main())
