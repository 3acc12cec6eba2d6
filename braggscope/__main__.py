import sys

from braggscope.cli import main

sys.exit(main())
