"""`python -m taskonomy` is the `taskonomy` command."""

import sys

from taskonomy.cli import main

sys.exit(main())
