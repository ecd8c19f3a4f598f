"""Built-in advbench plugins, each module registered through the `advbench` entry-point group."""
