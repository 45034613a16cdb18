"""The Ray executor: the per-document stages as Ray Data ``map_batches`` over the lake's Parquet, and near-dedup
candidate generation as a shuffle by band key over the Ray workers.

Nothing here re-implements a stage. A worker calls ``pipeline.apply_operator`` (the function the local executor
calls on the whole drop) on one Arrow batch of ``engine.batch_rows`` documents; the driver puts the batches back in
the drop's row order and hands one ``StageResult`` to ``pipeline.run_stage``, which writes the stage output and
the ledger with the same writer as locally. Near dedup shuffles the (band, key, node) rows by (band, key), runs
the in-process band join (``dedup_minhash.bucket_candidates``, the same SQL) on each partition of whole buckets,
and the pairs go through the same exact verification and keep rule. So both executors give byte-identical files.

Ray is imported lazily: the local executor never needs it. Ray is started (or connected to) once per process:
by the Dagster ``ray`` resource before a step runs, else here on first use.
"""

from __future__ import annotations

import io
import json
import logging
import math
import socket
from typing import Any, Iterator
from urllib.parse import urlsplit

import numpy as np
import polars as pl
import pyarrow as pa

from curation_platform.config import CurationConfig, EngineConfig
from curation_platform.errors import CurationError
from curation_platform.ops.dedup_minhash import CandidateGenerator, NearDedupConfig, bucket_candidates, bucket_rows
from curation_platform.records import StageResult, merge_metrics
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
    """On a worker: the stage's operator on one batch, returned as one row (first doc_id, rows, kept documents
    and verdicts as Arrow IPC, metrics as JSON), since kept rows and verdicts have different schemas."""
    from curation_platform.pipeline import apply_operator

    docs = pl.from_arrow(batch)
    result = apply_operator(stage, docs, cfg, context)
    return pa.table({
        "first_doc_id": pa.array([docs["doc_id"][0] if docs.height else None], pa.string()),
        "rows": pa.array([docs.height], pa.int64()),
        "kept": pa.array([_ipc(result.kept)], pa.large_binary()),
        "verdicts": pa.array([_ipc(result.verdicts)], pa.large_binary()),
        "metrics": pa.array([json.dumps(result.metrics, default=str)], pa.string()),
    })


def _collect(ray, dataset) -> list[pa.Table]:
    """Run ``dataset`` and fetch its blocks. A CurationError raised in a worker (bad input, bad configuration)
    reaches the caller as itself, so the CLI prints its one line and not the worker's traceback."""
    try:
        return ray.get(dataset.to_arrow_refs())
    except Exception as exc:
        cause: BaseException | None = exc
        # Ray wraps a worker's exception (RayTaskError.cause), Ray Data may chain it again (__cause__).
        while cause is not None and not (isinstance(cause, CurationError)
                                         and not isinstance(cause, ray.exceptions.RayTaskError)):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is None:
            raise
        raise cause from None


def run_stage_output(ws: Workspace, cfg: CurationConfig, stage: str, drop: str,
                     context: dict[str, Any]) -> tuple[pl.Series, StageResult]:
    """The input doc_ids and the result of a per-document ``stage`` on ``drop``, computed by Ray Data workers from
    the upstream stage's Parquet in the lake, in the drop's row order (what ``apply_operator`` gives locally)."""
    from curation_platform.pipeline import UPSTREAM, apply_operator

    upstream = UPSTREAM[stage]
    batch_rows = cfg.engine.batch_rows
    path = ws.stage_path(upstream, drop)
    if ws.decides_on(upstream, drop) is not None:
        # A decide-only upstream stores its decisions, not rows: the workers read its composed view, written
        # once (streamed, batch by batch) beside the workspace's spill files.
        path = ws.spill_dir / "ray" / f"{upstream}-{drop}.parquet"
        with ParquetStreamWriter(path) as out:
            for batch in ws.iter_stage(upstream, drop, batch_rows):
                out.write(batch)
    input_ids = pl.read_parquet(path, columns=["doc_id"])["doc_id"]
    if input_ids.is_empty():  # nothing to distribute; the operator still gives the stage's empty schema
        return input_ids, apply_operator(stage, ws.scan_stage(upstream, drop).collect(), cfg, context)
    ray = ensure_ray(cfg.engine)
    envelopes = (
        ray.data.read_parquet(str(path))
        # One block per batch, so the batches spread over the workers even when the file is one row group.
        .repartition(target_num_rows_per_block=batch_rows)
        .map_batches(_run_batch, batch_size=batch_rows, batch_format="pyarrow",
                     fn_kwargs={"stage": stage, "cfg": cfg, "context": context})
    )
    tables = [t for t in _collect(ray, envelopes) if t.num_rows]
    positions = input_ids.to_frame().with_row_index("_position").unique("doc_id", keep="first", maintain_order=True)
    batches = (pl.from_arrow(pa.concat_tables(tables)).join(positions, left_on="first_doc_id", right_on="doc_id")
               .sort("_position"))
    if batches["rows"].sum() != len(input_ids):
        raise CurationError(f"stage '{stage}' on drop '{drop}': the Ray workers returned "
                            f"{batches['rows'].sum()} of {len(input_ids)} documents; run it again")
    kept = pl.concat([pl.read_ipc(io.BytesIO(b)) for b in batches["kept"]], how="vertical_relaxed")
    # Sorted by the original row order before writing, whatever order the workers finished in.
    kept = (kept.join(positions, on="doc_id", how="left", maintain_order="left")
            .sort("_position", maintain_order=True).drop("_position").rechunk())
    verdicts = pl.concat([pl.read_ipc(io.BytesIO(b)) for b in batches["verdicts"]], how="vertical_relaxed")
    metrics: dict[str, Any] = {}
    done = 0
    for part, rows in zip(batches["metrics"], batches["rows"]):
        metrics = merge_metrics(metrics, json.loads(part), done, rows)
        done += rows
    metrics["ray_batches"] = batches.height
    return input_ids, StageResult(kept=kept, verdicts=verdicts, metrics=metrics)


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
