"""The engine: workflows, steps, events and state. No IPython, no I/O of its own."""
