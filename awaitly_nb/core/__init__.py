"""The step engine and the awaitly API: rules, events, lineage, state. No IPython, no I/O.

Open :mod:`.engine` for the hit/miss/stale rules and the save path,
:mod:`.workflow` for ``create_workflow``, :mod:`.state` for
``stringify_state``/``parse_state``, :mod:`.persistence` for
``create_state_persistence``. The core reaches stores only through
:class:`awaitly_nb.storage.base.StepStore`.
"""
