"""The local executor: a per-document stage's batches over a pool of worker processes, one per core.

fastText language ID, the quality signals, the PII patterns and the decontamination n-grams run Python code that
holds the GIL, so threads would keep one core busy. ``run_batches`` maps a stage's operator over its input
batches with a standard-library ``ProcessPoolExecutor`` (``spawn`` start method: the caller may have threads, as
Dagster, DuckDB and Polars do, and forking a threaded process is unsafe) and yields the results in input order, so
the stage files and the ledger are byte-identical to an in-process run. At most ``workers + 1`` batches are in
flight (memory stays bounded by ``engine.batch_rows`` times that). A drop of one batch runs in-process: it would
not use a second core anyway, and it does not pay the pool's start-up.

The pool is started on first use and reused by every later stage of the process (the Dagster in-process executor
runs a drop's steps in one process), so a worker loads the fastText model or the UT1 lists once. Each task carries
the operator with its configuration and stage context: they pickle to under 1 MB (the benchmark n-gram index is the
largest, 0.7 MB) against about 60 MB for a batch of 20,000 web pages, so sending them once per worker would not be
measurably cheaper. The batch itself goes as an Arrow table (its pickle is Arrow IPC: a third of the CPU of
pickling the Polars frame), and a stage that only decides sends back doc_id and its columns, not the text (the
pipeline wraps its operator). ``map_in_order`` runs any picklable function over items the same way (ingest decides
its batches with it). Workers run Polars with ``cores // workers`` threads (``POLARS_MAX_THREADS``, set before they
import Polars, unless it is set already), so workers x threads does not oversubscribe the cores.

Errors: an exception raised by an operator in a worker is re-raised here as itself (a ``CurationError`` keeps its
one-line message; any other exception keeps the worker's traceback as its cause); a worker that dies (killed, out
of memory) gives a ``WorkerLostError``. Then, as on Ctrl-C (which the workers ignore, so only this process handles
it), the workers are terminated and the pool is discarded: no orphan process, no hang. Workers also exit by
themselves when this process dies.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import polars as pl
import pyarrow as pa

from curation_platform.errors import CurationError

if TYPE_CHECKING:  # a worker imports this module first: keep it light (the operators import what they need)
    from curation_platform.config import EngineConfig
    from curation_platform.records import StageResult

# The per-document stages worth a worker pool (measured on 2 cores, see README "Every core"): their operators spend
# their time in Python holding the GIL (0.2 to 1 ms of CPU per document). URL filtering, filters and scoring are
# Polars expressions and joins (already multi-threaded) costing 10 to 30 us per document, less than pickling the
# batch to a worker and back (about 20 to 40 us per 3 KB document); normalize costs about 150 us per document but
# sends its text back, and took 50 to 70% more CPU in workers with no gain in time: they stay in-process. A worker
# would also load the UT1 lists (4.5 million domains) again.
PARALLEL_STAGES: frozenset[str] = frozenset({"language", "quality_signals", "pii_redacted", "decontaminated"})


class WorkerLostError(CurationError):
    """A worker process of the local executor died while running a batch (killed, or out of memory)."""


def worker_count(engine: EngineConfig) -> int:
    """Worker processes of the local executor: ``engine.workers``, or every core when it is None."""
    return engine.workers or os.cpu_count() or 1


def stage_workers(stage: str, engine: EngineConfig) -> int:
    """Workers for ``stage``: the configured count for the stages in ``PARALLEL_STAGES``, else 1 (in-process)."""
    return worker_count(engine) if stage in PARALLEL_STAGES else 1


def polars_threads(workers: int) -> int:
    """Polars threads per worker: the cores shared out between the workers, at least one."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_batches(operator: Callable[[pl.DataFrame], StageResult], batches: Iterable[pl.DataFrame], workers: int,
                label: str = "the local executor") -> Iterator[tuple[pl.Series, pl.DataFrame, StageResult]]:
    """``operator`` on every batch, as (the batch's doc_ids, its columns as a 0-row frame, result), in input order.

    With ``workers`` > 1 and more than one batch, the batches run in a pool of ``workers`` processes, at most
    ``workers + 1`` at a time; ``operator`` must then pickle (a module-level function, or a ``functools.partial``
    of one). Otherwise every batch runs here, one after the other. ``label`` (e.g. the stage and drop) starts the
    message of a ``WorkerLostError``."""
    rest = iter(batches)
    head = list(itertools.islice(rest, 2))
    parallel = workers > 1 and len(head) == 2
    batches = _released(head, rest)  # the first two batches are not held for the whole stage
    if not parallel:
        for batch in batches:
            yield batch["doc_id"], batch.clear(), operator(batch)
        return
    inputs: deque[tuple[pl.Series, pl.DataFrame]] = deque()

    def sent() -> Iterator[pa.Table]:
        for batch in batches:
            inputs.append((batch["doc_id"], batch.clear()))  # the worker has its copy: hold only ids while it runs
            yield batch.to_arrow()

    with contextlib.closing(_in_pool(functools.partial(_on_arrow, operator), sent(), workers, label)) as results:
        for result in results:
            yield *inputs.popleft(), result


def map_in_order(function: Callable[[Any], Any], items: Iterable[Any], workers: int,
                 label: str = "the local executor") -> Iterator[Any]:
    """``function`` on every item, the results in input order: in the pool of ``workers`` processes (at most
    ``workers + 1`` items in flight) when ``workers`` > 1 and there is more than one item, else here. ``function``
    and the items must pickle (send Polars frames as Arrow tables: cheaper, see ``run_batches``)."""
    rest = iter(items)
    head = list(itertools.islice(rest, 2))
    items = _released(head, rest)
    if workers > 1 and len(head) == 2:
        with contextlib.closing(_in_pool(function, items, workers, label)) as results:
            yield from results
    else:
        yield from map(function, items)


def _in_pool(function: Callable[[Any], Any], items: Iterator[Any], workers: int, label: str) -> Iterator[Any]:
    pool = _pool(workers)
    pending: deque[Future] = deque()
    finished = False
    try:
        for item in items:
            try:
                future = pool.submit(_call, function, item)
            except BrokenProcessPool:  # a worker died since the last result
                raise _lost(label) from None
            pending.append(future)
            del item
            while len(pending) > workers:
                yield _outcome(pending.popleft(), label)
        while pending:
            yield _outcome(pending.popleft(), label)
        finished = True
    finally:
        # An error, Ctrl-C, or the caller stopped early: stop the work still in flight (terminating the workers: a
        # batch may run for minutes). Always, not only when a batch is seen running: whether a queued batch has
        # reached a worker yet is a race, and a failed run pays one pool start-up at most.
        if not finished:
            _discard(workers)


def _released(head: list[pl.DataFrame], rest: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    while head:
        yield head.pop(0)
    yield from rest


def _outcome(future: Future, label: str) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise _lost(label) from None


def _lost(label: str) -> WorkerLostError:
    return WorkerLostError(
        f"{label}: a worker process died while running a batch (killed, or out of memory?); "
        "lower engine.batch_rows or engine.workers in curation.yaml and run again")


def _on_arrow(operator: Callable[[pl.DataFrame], StageResult], batch: pa.Table) -> StageResult:
    """In a worker: the operator on a batch sent as an Arrow table (its pickle costs a third of a Polars frame's,
    see README "Every core")."""
    return operator(pl.from_arrow(batch))


def _call(function: Callable[[Any], Any], item: Any) -> Any:
    """In a worker: the function on one item. An exception that would not arrive whole in the parent (one that does
    not pickle) becomes a RuntimeError naming it, with its traceback, rather than a broken pool."""
    try:
        return function(item)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise


# ------------------------------------------------------------------------------------------------------ the pool

_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ProcessPoolExecutor:
    """This process's pool of ``workers`` processes, started on first use."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is not None and _broken(pool):  # a worker died while idle (killed between two stages)
            _discard(workers, locked=True)
            pool = None
        if pool is None:
            pool = _POOLS[workers] = _start(workers)
        return pool


def _start(workers: int) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))
    # A spawned worker reads its environment once, at start: set its Polars threads (unless the user set them) for
    # the moment the workers start (they start on demand; one quick task per worker starts them all now).
    threads = os.environ.get("POLARS_MAX_THREADS") or str(polars_threads(workers))
    with _environment(POLARS_MAX_THREADS=threads):
        for _ in range(workers):
            pool.submit(os.getpid)
    return pool


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _init_worker(parent: int) -> None:
    # Ctrl-C goes to the whole process group: only the parent handles it (it terminates the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (killed, so it could not stop its workers) exits instead of waiting forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _broken(pool: ProcessPoolExecutor) -> bool:
    return bool(getattr(pool, "_broken", False))  # set by the executor when a worker died


def _discard(workers: int, locked: bool = False) -> None:
    """Terminate the pool's workers now and forget the pool."""
    if locked:
        pool = _POOLS.pop(workers, None)
    else:
        with _POOLS_LOCK:
            pool = _POOLS.pop(workers, None)
    if pool is None:
        return
    processes = list((pool._processes or {}).values())  # the executor has no public way to stop running tasks
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + 2
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    # A worker started from a thread that blocks SIGTERM (threads of Dagster, gRPC or Ray may) inherits the blocked
    # signal and survives terminate(): SIGKILL cannot be blocked. Then poll until each exit is reaped.
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=10)


def shutdown() -> None:
    """Stop every pool of this process (at exit; also handy between benchmark runs)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
