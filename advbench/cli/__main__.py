"""``python -m advbench.cli``: the command line, as the ``advbench`` script runs it."""

from advbench.cli.app import main

main()
