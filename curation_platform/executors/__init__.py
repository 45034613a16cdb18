"""Where the per-document stages run: ``local`` (this process, the default) or ``ray`` (Ray Data workers).

Both executors call the same engine operators and the same writer, so a drop's stage outputs, ledger and release
are byte-identical whichever runs it (``engine.executor`` in ``curation.yaml``, ``curate run --executor``).
"""
