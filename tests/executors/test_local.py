"""The local executor's worker pool: batches run in other processes and come back in input order; an error in a
worker reaches the caller as the error the in-process path gives; a dead worker gives a clear error; after an
error no worker process is left behind. (Byte-identical stage files and ledger with ``engine.workers`` 1 and 2:
tests/test_streaming.py.)

The operators below are module-level functions, so they pickle to the spawned workers, which import this module
(so it imports the pipeline only inside the test that needs it: a worker starts faster without).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from curation_platform.errors import CurationError
from curation_platform.executors import local
from curation_platform.records import StageResult


def _where(docs: pl.DataFrame) -> StageResult:
    """Keeps every document and says which process ran the batch."""
    return StageResult(kept=docs, metrics={"pid": os.getpid()})


def _fail_on(doc_id: str, docs: pl.DataFrame) -> StageResult:
    if doc_id in docs["doc_id"].to_list():
        raise CurationError(f"drop 'd': document {doc_id} is bad; fix it")
    if docs["doc_id"][0] > doc_id:  # the batches after the bad one are still running when its error arrives
        time.sleep(120)
    return _where(docs)


class _Unpicklable(Exception):
    def __init__(self, message: str, code: int):  # pickles, but does not unpickle (two arguments, one passed)
        super().__init__(message)
        self.code = code


def _fail_unpicklably(docs: pl.DataFrame) -> StageResult:
    if "doc-2-0" in docs["doc_id"].to_list():  # the last batch: nothing is left in flight, the pool is kept
        raise _Unpicklable("the operator broke", 3)
    return _where(docs)


def _die(docs: pl.DataFrame) -> StageResult:
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    raise AssertionError("unreachable")


def _frames(n: int, size: int = 3) -> list[pl.DataFrame]:
    return [pl.DataFrame({"doc_id": [f"doc-{i}-{j}" for j in range(size)], "text": ["x"] * size}) for i in range(n)]


def _alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _left_running(pids: set[int], timeout: float = 10.0) -> list[str]:
    """The processes of ``pids`` still running after ``timeout`` seconds, described (pid, status, parent, command)."""
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    described = []
    for pid in sorted(pid for pid in pids if _alive(pid)):
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            described.append(f"{pid} {process.status()} ppid={process.ppid()} {' '.join(process.cmdline())[:200]}")
    return described


def test_batches_run_in_worker_processes_in_input_order():
    batches = _frames(7)
    outputs = list(local.run_batches(_where, batches, workers=2))
    assert [ids.to_list() for ids, _, _ in outputs] == [b["doc_id"].to_list() for b in batches]
    assert [r.kept.equals(b) for (_, _, r), b in zip(outputs, batches)] == [True] * 7
    assert all(columns.columns == ["doc_id", "text"] and columns.height == 0 for _, columns, _ in outputs)
    pids = {r.metrics["pid"] for _, _, r in outputs}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # One batch (a small drop) runs here: no pool start-up for it; so does workers=1.
    assert [r.metrics["pid"] for _, _, r in local.run_batches(_where, _frames(1), workers=2)] == [os.getpid()]
    assert {r.metrics["pid"] for _, _, r in local.run_batches(_where, _frames(3), workers=1)} == {os.getpid()}


def test_a_worker_error_is_the_in_process_error_and_leaves_no_worker_behind():
    failing = functools.partial(_fail_on, "doc-4-1")
    with pytest.raises(CurationError) as here:
        list(local.run_batches(failing, _frames(8), workers=1))
    pids = {r.metrics["pid"] for _, _, r in local.run_batches(_where, _frames(6), workers=2)}
    with pytest.raises(CurationError) as there:
        list(local.run_batches(failing, _frames(8), workers=2))
    assert type(there.value) is type(here.value) and str(there.value) == str(here.value)
    assert not _left_running(pids)  # the workers running later batches: terminated
    # An exception that cannot travel back whole is named, with the worker's traceback, instead of breaking the pool.
    with pytest.raises(RuntimeError, match="_Unpicklable: the operator broke") as unpicklable:
        list(local.run_batches(_fail_unpicklably, _frames(3), workers=2))
    assert "_Unpicklable" in str(unpicklable.value.__cause__)  # the worker's traceback
    # A worker that dies gives one clear error, not a hang; the next run starts a new pool.
    with pytest.raises(local.WorkerLostError, match="engine.workers"):
        list(local.run_batches(_die, _frames(3), workers=2))
    assert len(list(local.run_batches(_where, _frames(3), workers=2))) == 3


def test_a_stage_error_in_a_worker_reads_as_in_process(tmp_path: Path):
    # Imported here: the workers import this module for its operators, and need none of these.
    from curation_platform.config import CurationConfig
    from curation_platform.pipeline import run_stage
    from curation_platform.samples import synthetic_corpus, write_corpus_drop
    from curation_platform.workspace import Workspace

    landing = tmp_path / "landing"
    write_corpus_drop(landing, "d1", synthetic_corpus(12, seed=3).select("id", "text"), source="web")
    ws = Workspace(tmp_path / "ws")
    ws.register_drop("d1", landing / "d1")
    cfg = CurationConfig.model_validate({"versioning": {"enabled": False}, "engine": {"batch_rows": 3, "workers": 1}})
    for stage in ("raw_documents", "url_filtered", "normalized", "language", "line_deduped"):
        run_stage(ws, cfg, stage, "d1")
    # A word list that is not there: the quality-signals operator fails on its first batch (in a worker with 2).
    bad = cfg.model_copy(deep=True)
    bad.signals.flagged_words.lists[0].path = str(tmp_path / "missing.txt")
    errors = []
    for workers in (1, 2):
        bad.engine.workers = workers
        with pytest.raises(CurationError) as error:
            run_stage(ws, bad, "quality_signals", "d1")
        errors.append(f"{type(error.value).__name__}: {error.value}")
    assert "missing.txt" in errors[0] and errors[1] == errors[0]
    assert ws.read_stage("line_deduped", "d1").height > 3  # several batches: the pool ran them
