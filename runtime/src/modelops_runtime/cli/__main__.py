"""`python -m modelops_runtime.cli`."""

import sys

from . import main

sys.exit(main())
