"""``python -m braggscope.app.cli``: the ``braggscope`` command line."""

import sys

from braggscope.app.cli.main import main

sys.exit(main())
