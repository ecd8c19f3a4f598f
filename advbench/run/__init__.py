"""The run layer: a spec's jobs planned with their keys (:mod:`.planner`, :mod:`.jobs`),
one handler per job kind (:mod:`.handlers`, on the harness that turns attacks and
certifiers into radii, :mod:`.harness`), executors that decide where jobs run
(:mod:`.executors`), and the run directory that keeps every record (:mod:`.store`).
:func:`advbench.run.runner.run_spec` is the entry point the CLI and the Python API share.
"""
