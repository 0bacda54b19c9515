"""Subcommands of the ``fragility`` command line, one module per group of commands."""
