import sys

from braggscope.app.cli import main

sys.exit(main())
