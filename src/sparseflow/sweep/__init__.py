"""Sweeps: sweep files expanded into runs, their training order, and their execution on Dask
(the client writes the store, workers train and keep a journal)."""
