"""The run layer (``advbench.runs``; ``advbench.run`` is the Python API's function): a spec's jobs planned with their keys (:mod:`.planner`, :mod:`.jobs`),
one handler per job kind (:mod:`.handlers`, on the harness that turns attacks and
certifiers into radii, :mod:`.harness`), executors that decide where jobs run
(:mod:`.executors`), and the run directory that keeps every record (:mod:`.store`).
:func:`advbench.runs.runner.run_spec` is the entry point the CLI and the Python API share.
"""
