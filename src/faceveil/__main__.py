"""``python -m faceveil``: the command line, as the ``faceveil`` script runs it."""

from .cli import main

main(prog_name="faceveil")
