"""The recipe machinery, installed with the package: argument parsing with YAML configs, the declared mapping of
every setting to the stages it reaches, the run plan (reuse / resume / refuse stale folders) and the stage steps,
and the programs themselves (``ltkd-distill``, ``ltkd-teacher``, ``ltkd-eval``, ``ltkd-table``; ``recipes/*.py``
run the same ``main``)."""
