"""``python -m tagwatch`` is the ``tagwatch`` command."""

import sys

from .cli import main

sys.exit(main())
