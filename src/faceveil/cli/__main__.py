"""``python -m faceveil.cli``: the command line, as the ``faceveil`` script runs it."""

from . import main

main(prog_name="faceveil")
