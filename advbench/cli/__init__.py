"""The ``advbench`` command line (Typer and Rich), a thin client of the run and results
layers.  Importing it does not import TensorFlow."""

from advbench.cli.app import app, main

__all__ = ["app", "main"]
