"""The ``braggscope`` command line: :func:`main` (the console script) and one module per command group."""

from braggscope.app.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
