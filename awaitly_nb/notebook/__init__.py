"""The notebook layer: ``%%step``, ``with step(...)``, ``step(fn, key=...)``, capture and replay.

Only :mod:`awaitly_nb.notebook.extension` and :mod:`awaitly_nb.notebook.magics`
import IPython; the with-block and the call form also work in plain scripts.
"""
