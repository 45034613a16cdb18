"""The Ray executor: the per-document stages as Ray Data ``map_batches`` over the lake's Parquet, and near-dedup
candidate generation as a shuffle by band key over the Ray workers.

Nothing here re-implements a stage. A worker calls ``pipeline.apply_operator`` (the function the local executor
calls on each batch) on one Arrow batch of ``engine.batch_rows`` documents; the driver consumes the workers'
results batch by batch in the drop's row order (Ray Data's ``preserve_order``) and hands them, as an iterator, to
``pipeline.run_stage``, which writes the stage output and the ledger with the same streaming writers as locally:
the driver holds a few batches, never the drop. Near dedup shuffles the (band, key, node) rows by (band, key), runs
the in-process band join (``dedup_minhash.bucket_candidates``, the same SQL) on each partition of whole buckets,
and the pairs go through the same exact verification (its batches, like the signature batches before the shuffle, as
Ray tasks: :func:`map_on_ray`) and keep rule. So both executors give byte-identical files.

Ray is imported lazily: the local executor never needs it. Ray is started (or connected to) once per process:
by the Dagster ``ray`` resource before a step runs, else here on first use.
"""

from __future__ import annotations

import io
import json
import logging
import math
import socket
from collections import deque
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import numpy as np
import polars as pl
import pyarrow as pa

from curation_platform.config import CurationConfig, EngineConfig
from curation_platform.errors import CurationError
from curation_platform.ops.dedup_minhash import (BatchMapper, CandidateGenerator, NearDedupConfig, bucket_candidates,
                                                 bucket_rows)
from curation_platform.records import StageResult
from curation_platform.workspace import ParquetStreamWriter, Workspace

# Rows of (band, key, node) per shuffle partition: small enough that Ray Data never splits a partition's block
# (its default target block size is 128 MiB; a row is 24 bytes), so every partition holds whole buckets.
SHUFFLE_PARTITION_ROWS = 1_000_000


class ExecutorError(CurationError):
    """The requested executor cannot run: Ray is not installed, or its cluster cannot be reached."""


def import_ray():
    """The ``ray`` module with Ray Data, or an ExecutorError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ExecutorError(
            f"executor 'ray' needs Ray Data, which cannot be imported ({exc}); install it with "
            "pip install 'ray[data]>=2.60,<3', or run with --executor local") from None
    return ray


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a Ray address does not answer (``ray.init`` would retry for minutes).
    ``None`` (start a local Ray) and ``auto`` (the cluster this machine belongs to) are not checked."""
    if address in (None, "auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ExecutorError(f"--ray-address {address!r} is not HOST:PORT or ray://HOST:PORT (for example "
                            "ray-head:6379 or ray://ray-head:10001)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check "
                            "--ray-address (engine.ray_address), or leave it out to start a local Ray") from None


def ray_init_options(engine: EngineConfig) -> dict[str, Any]:
    """``ray.init`` keyword arguments for the engine settings: connect to ``ray_address``, else start a local
    Ray without its dashboard. Shared by the Dagster resource and :func:`ensure_ray`."""
    options: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    if engine.ray_address is None:
        options["include_dashboard"] = False
    return options


def quiet_data_context() -> None:
    """Ray Data settings of this platform: no progress bars on the CLI's terminal, outputs in input order."""
    import ray.data

    # The CLI and Dagster print their own progress: Ray Data's per-dataset lines and its notice that the bars are
    # off add nothing there (its warnings still show).
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.execution_options.preserve_order = True


def ensure_ray(engine: EngineConfig):
    """The ``ray`` module, connected: the running Ray of this process if any (started by the Dagster resource or a
    test), else a new connection to ``engine.ray_address`` (a local Ray when None)."""
    ray = import_ray()
    if not ray.is_initialized():
        check_reachable(engine.ray_address)
        try:
            ray.init(address=engine.ray_address, **ray_init_options(engine))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = engine.ray_address or "a local Ray"
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExecutorError(f"cannot start or connect to {where}: {first_line}") from None
    quiet_data_context()
    return ray


# ------------------------------------------------------------------------------------------- per-document stages

def _ipc(frame: pl.DataFrame) -> bytes:
    sink = io.BytesIO()
    frame.write_ipc(sink)
    return sink.getvalue()


def _run_batch(batch: pa.Table, stage: str, cfg: CurationConfig, context: dict[str, Any]) -> pa.Table:
    """On a worker: the stage's operator on one batch, returned as one row (the batch's input doc_ids, kept
    documents and verdicts as Arrow IPC, metrics as JSON), since kept rows and verdicts have different schemas."""
    from curation_platform.pipeline import apply_operator

    docs = pl.from_arrow(batch)
    result = apply_operator(stage, docs, cfg, context)
    return pa.table({
        "ids": pa.array([_ipc(docs.select("doc_id"))], pa.large_binary()),
        "kept": pa.array([_ipc(result.kept)], pa.large_binary()),
        "verdicts": pa.array([_ipc(result.verdicts)], pa.large_binary()),
        "metrics": pa.array([json.dumps(result.metrics, default=str)], pa.string()),
    })


def _worker_error(ray, exc: BaseException) -> BaseException | None:
    """The CurationError a worker raised (bad input, bad configuration) inside Ray's wrappers, if it is one."""
    cause: BaseException | None = exc
    # Ray wraps a worker's exception (RayTaskError.cause), Ray Data may chain it again (__cause__).
    while cause is not None and not (isinstance(cause, CurationError)
                                     and not isinstance(cause, ray.exceptions.RayTaskError)):
        cause = getattr(cause, "cause", None) or cause.__cause__
    return cause


def _collect(ray, dataset) -> list[pa.Table]:
    """Run ``dataset`` and fetch its blocks. A CurationError raised in a worker reaches the caller as itself, so
    the CLI prints its one line and not the worker's traceback."""
    try:
        return ray.get(dataset.to_arrow_refs())
    except Exception as exc:
        cause = _worker_error(ray, exc)
        if cause is None:
            raise
        raise cause from None


def _in_order(ray, dataset) -> Iterator[pa.Table]:
    """The blocks of ``dataset`` as the workers finish them, in input order (``preserve_order``), streamed: Ray
    Data's backpressure bounds how many finished blocks wait for the driver. Worker CurationErrors as themselves."""
    blocks = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1))
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except Exception as exc:
            cause = _worker_error(ray, exc)
            if cause is None:
                raise
            raise cause from None
        yield block


def _input_file(ws: Workspace, upstream: str, drop: str, batch_rows: int) -> tuple[Any, bool]:
    """The Parquet file the workers read (full rows of the upstream stage) and whether it is a temporary file."""
    path = ws.stage_path(upstream, drop)
    if ws.decides_on(upstream, drop) is None:
        return path, False
    # A decide-only upstream stores its decisions, not rows: the workers read its composed view, written once
    # (streamed, batch by batch) beside the workspace's spill files, and removed when the stage is done.
    path = ws.spill_dir / "ray" / f"{upstream}-{drop}.parquet"
    with ParquetStreamWriter(path) as out:
        for batch in ws.iter_stage(upstream, drop, batch_rows):
            out.write(batch)
    return path, True


def _next_ids(cursor: Iterator[pl.DataFrame], buffer: list[pl.Series], count: int) -> pl.Series:
    """The next ``count`` doc_ids of the input (``buffer`` holds what was read but not yet consumed)."""
    have = sum(len(s) for s in buffer)
    while have < count:
        chunk = next(cursor, None)
        if chunk is None:
            break
        buffer.append(chunk["doc_id"])
        have += chunk.height
    joined = pl.concat(buffer) if buffer else pl.Series("doc_id", [], pl.String)
    buffer[:] = [joined.slice(count)] if len(joined) > count else []
    return joined.slice(0, count)


def stream_stage_output(ws: Workspace, cfg: CurationConfig, stage: str, drop: str,
                        context: dict[str, Any]) -> Iterator[tuple[pl.Series, StageResult]]:
    """A per-document ``stage`` on ``drop``, computed by Ray Data workers from the upstream stage's Parquet in the
    lake: (input doc_ids, result) per batch of ``engine.batch_rows`` documents, in the drop's row order, as
    ``pipeline.run_stage`` writes them. The driver holds a few batches at a time, never the drop: workers return
    each batch's result as one small envelope, consumed in input order as they finish.

    Each batch's doc_ids are checked against the next doc_ids of the input file, read alongside (a few bytes per
    document): a lost, repeated or reordered batch stops the stage with an error instead of writing a wrong file.
    """
    from curation_platform.pipeline import UPSTREAM, apply_operator

    upstream = UPSTREAM[stage]
    batch_rows = cfg.engine.batch_rows
    path, temporary = _input_file(ws, upstream, drop, batch_rows)
    try:
        import pyarrow.parquet as pq

        from curation_platform.storage import arrow_filesystem, is_uri
        from curation_platform.workspace import iter_parquet

        if is_uri(path):
            with path.open("rb") as handle:
                total = pq.read_metadata(handle).num_rows
        else:
            total = pq.read_metadata(path).num_rows
        if total == 0:  # nothing to distribute; the operator still gives the stage's empty schema
            empty = ws.scan_stage(upstream, drop).limit(0).collect()
            yield empty["doc_id"], apply_operator(stage, empty, cfg, context)
            return
        ray = ensure_ray(cfg.engine)
        filesystem, location = arrow_filesystem(path)
        envelopes = (
            ray.data.read_parquet(location, filesystem=filesystem)
            # One block per batch, so the batches spread over the workers even when the file is one row group.
            .repartition(target_num_rows_per_block=batch_rows)
            .map_batches(_run_batch, batch_size=batch_rows, batch_format="pyarrow",
                         fn_kwargs={"stage": stage, "cfg": cfg, "context": context})
        )
        expected, pending, done = iter_parquet(path, batch_rows, ["doc_id"]), [], 0
        for block in _in_order(ray, envelopes):
            for ids_ipc, kept, verdicts, metrics in zip(*(block[c].to_pylist()
                                                          for c in ("ids", "kept", "verdicts", "metrics"))):
                ids = pl.read_ipc(io.BytesIO(ids_ipc))["doc_id"]
                if not ids.equals(_next_ids(expected, pending, len(ids))):
                    raise CurationError(f"stage '{stage}' on drop '{drop}': a Ray batch came back out of input "
                                        f"order after {done} documents; run it again")
                done += len(ids)
                yield ids, StageResult(kept=pl.read_ipc(io.BytesIO(kept)),
                                       verdicts=pl.read_ipc(io.BytesIO(verdicts)),
                                       metrics={**json.loads(metrics), "ray_batches": 1})
        if done != total:
            raise CurationError(f"stage '{stage}' on drop '{drop}': the Ray workers returned {done} of {total} "
                                "documents; run it again")
    finally:
        if temporary:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- near dedup

def band_shuffle_candidates(engine: EngineConfig) -> CandidateGenerator:
    """A near-dedup candidate generator that shuffles the band join's (band, key, node) rows, the drop's and the
    index's, by (band, key) over the Ray workers and runs the band join on each partition; the pairs are the ones
    the in-process DuckDB join gives, distinct and sorted, in batches of ``batch_rows``."""

    def generate(connection, cfg: NearDedupConfig, batch_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rows = bucket_rows(connection)
        if not rows.num_rows:
            return
        ray = ensure_ray(engine)
        partitions = max(int(ray.cluster_resources().get("CPU", 1)), math.ceil(rows.num_rows / SHUFFLE_PARTITION_ROWS))
        pairs = (
            ray.data.from_arrow(rows)
            .repartition(partitions, keys=["band", "key"])  # the shuffle: every bucket lands whole in one partition
            .map_batches(bucket_candidates, batch_size=None, batch_format="pyarrow", fn_kwargs={"cfg": cfg})
        )
        tables = [t for t in _collect(ray, pairs) if t.num_rows]
        if not tables:
            return
        found = pa.concat_tables(tables)
        src = found["src"].to_numpy().astype(np.int64)
        dst = found["dst"].to_numpy().astype(np.int64)
        # A pair shares several buckets, which may sit in different partitions: distinct, in (src, dst) order.
        order = np.lexsort((dst, src))
        src, dst = src[order], dst[order]
        first = np.ones(len(src), dtype=bool)
        first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
        src, dst = src[first], dst[first]
        for start in range(0, len(src), batch_rows):
            yield src[start:start + batch_rows], dst[start:start + batch_rows]

    return generate


def _map_task(function: Callable[[Any], Any], item: Any) -> Any:
    """On a Ray worker: one batch (an input batch to sign, or a verification batch that reads its documents
    itself)."""
    return function(item)


def map_on_ray(engine: EngineConfig) -> BatchMapper:
    """Near dedup's signature and verification batches as Ray tasks, one per batch, results taken in batch order.
    The batches are independent (a signature needs only its document, a pair's verdict only its two documents),
    so no shuffle is needed: a signature task carries its input batch (Arrow), a verification task its pair ids
    and the positions of its documents in the gathered files (spill_dir must be on storage the workers see, as
    for the Ray stages' composed inputs); the function with its settings is put in the object store once. At most
    twice the cluster's CPUs tasks are in flight: the batches stream, never all held."""

    def run(function: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        ray = ensure_ray(engine)
        remote = ray.remote(num_cpus=1)(_map_task)
        function_ref = ray.put(function)
        in_flight = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending: deque = deque()
        try:
            for task in tasks:
                pending.append(remote.remote(function_ref, task))
                while len(pending) >= in_flight:
                    yield _result(ray, pending.popleft())
            while pending:
                yield _result(ray, pending.popleft())
        finally:
            for ref in pending:  # an error or the caller stopped early: the rest is not needed
                ray.cancel(ref)

    return run


def _result(ray, ref) -> Any:
    """A task's result; a CurationError it raised reaches the caller as itself."""
    try:
        return ray.get(ref)
    except Exception as exc:
        cause = _worker_error(ray, exc)
        if cause is None:
            raise
        raise cause from None
