"""Where the per-document stages run: ``local`` (the default: this machine, the Python-heavy stages in one worker
process per core, ``engine.workers``) or ``ray`` (Ray Data workers).

Both executors call the same engine operators and the same writer, so a drop's stage outputs, ledger and release
are byte-identical whichever runs it (``engine.executor`` in ``curation.yaml``, ``curate run --executor``).
"""
