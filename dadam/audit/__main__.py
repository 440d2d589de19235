"""``python -m dadam.audit``: see :mod:`dadam.audit.cli`."""

import sys

from dadam.audit.cli import main

sys.exit(main())
