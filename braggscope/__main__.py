import sys

from braggscope.app.cli.main import main

sys.exit(main())
