"""Out-of-core helpers of the drop-global stages: a DuckDB connection with a memory limit and a spill folder,
and batch-by-batch Parquet spill files.

The dedup stages read a drop in batches, write what they compute per document (hashes, band keys, line hashes)
to Parquet files in a fresh folder under ``spill_dir``, and let DuckDB join those files with the other drops'
index files in place. DuckDB keeps its working set under ``memory_limit`` and spills the rest of a join or sort
to ``spill_dir``, so memory is set by configuration, not by the size of the drop or the index.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator

import duckdb
import polars as pl
import pyarrow.parquet as pq
from pydantic import AfterValidator


def duckdb_size(limit: str) -> str:
    """``limit`` when it is a DuckDB memory size such as '2GB' or '512MiB': checked when the configuration loads,
    so a typo fails then and not in the middle of a drop."""
    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*", limit, flags=re.IGNORECASE):
        raise ValueError(f"memory_limit {limit!r} is not a DuckDB size such as '2GB' or '512MiB'")
    return limit


# A configuration field holding a DuckDB memory size.
DuckDBSize = Annotated[str, AfterValidator(duckdb_size)]


@dataclass(frozen=True)
class OutOfCore:
    """How a drop-global stage computes (never what): the ``engine`` section of ``curation.yaml``."""

    batch_rows: int = 20_000
    memory_limit: str = "512MB"
    spill_dir: str | None = None  # None: a fresh folder under the system temporary directory
    threads: int | None = None  # None: every core


@contextmanager
def spill_folder(ooc: OutOfCore, prefix: str) -> Iterator[Path]:
    """A fresh folder for one call's spill files, removed afterwards (also on error)."""
    base = Path(ooc.spill_dir) if ooc.spill_dir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def duckdb_connection(ooc: OutOfCore, temp_directory: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-process DuckDB connection that holds at most ``memory_limit`` and spills to ``temp_directory``."""
    config = {
        "memory_limit": ooc.memory_limit,
        "temp_directory": str(temp_directory),
        # Results are ordered explicitly where order matters, so DuckDB need not buffer rows to keep it.
        "preserve_insertion_order": False,
    }
    if ooc.threads:
        config["threads"] = ooc.threads
    connection = duckdb.connect(":memory:", config=config)
    try:
        yield connection
    finally:
        connection.close()


class SpillWriter:
    """Appends frames to one Parquet file (one row group per frame); ``path`` exists once closed, even empty."""

    def __init__(self, path: Path, schema: dict[str, pl.DataType]):
        self.path = path
        self.schema = schema
        self.rows = 0
        self._writer = pq.ParquetWriter(path, pl.DataFrame(schema=schema).to_arrow().schema, compression="zstd",
                                        compression_level=1)

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height:
            table = frame.select([pl.col(c).cast(t) for c, t in self.schema.items()]).to_arrow()
            self._writer.write_table(table.cast(self._writer.schema))
            self.rows += frame.height

    def close(self) -> Path:
        self._writer.close()
        return self.path


def new_spill_folder(ooc: OutOfCore, prefix: str) -> Path:
    """A fresh spill folder that outlives the call creating it (for :func:`frames_then_remove`)."""
    base = Path(ooc.spill_dir) if ooc.spill_dir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=base))


def frames_then_remove(path: Path, schema: dict[str, pl.DataType], batch_rows: int, folder: Path | None
                       ) -> Iterator[pl.DataFrame]:
    """The rows of a spilled Parquet file as frames of at most ``batch_rows`` rows, in file order, one row group
    read at a time; ``folder`` (holding the file; None: nothing) is removed once they are read or the iterator is closed. How a
    drop-global stage hands back what grows with the drop (index entries) without holding it."""
    from curation_platform.workspace import iter_parquet

    try:
        empty = True
        for frame in iter_parquet(path, batch_rows):
            empty = False
            yield frame.select([pl.col(c).cast(t) for c, t in schema.items()])
        if empty:  # no rows: one empty frame, so a writer still gets the schema
            yield pl.DataFrame(schema=schema)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def sql_path(path: Path | str) -> str:
    """A path as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"
