"""Training one run: the loop and its callbacks, optimisers, the sparse method inside a run,
the source runs it depends on, and :func:`~sparseflow.training.run.execute` end to end."""
