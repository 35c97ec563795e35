"""Persistence of runs: the SQLite run store, checkpoints, recorders and exports.

Nothing here knows how a run is trained: the training layer writes through a
:class:`~sparseflow.store.recorder.Recorder`, analyses read the store and the checkpoints.
"""
