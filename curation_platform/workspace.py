"""The lake: where every stage, ledger, index and release lives, and the registry of drops in their order.

Layout under the workspace directory::

    registry/drops.json               registered drops, in order (registration time, then name)
    stages/<stage>/<drop>.parquet     each stage's kept documents for one drop: full rows where the stage
                                      changes text, else ``doc_id`` plus the columns the stage adds (read them
                                      through ``Workspace.scan_stage``, which composes the full rows)
    ledger/<stage>/<drop>.parquet     every verdict of that stage on that drop
    quarantine/<drop>.parquet         records that could not be read, with file, line and reason
    index/<name>/<drop>.parquet       persistent dedup indexes, one file set per drop
    tmp/spill/                        out-of-core spill files of a running stage (removed after it)
    cache/tokens/<drop>.parquet       token counts of curated documents, rebuilt when stale
    takedowns.parquet                 documents removed from every future release, with the content hash and
                                      near-dup signature that block their content in drops curated later
    releases/<name>/                  published releases (shards, data card), versioned by DVC
    releases/.staging/<name>/         write-audit-publish staging area

With a lake URI (``Workspace(root, lake="s3://bucket/lake")`` or ``CURATION_LAKE``), everything but the registry
lives under the lake; the registry, locks, catalog, Dagster home and DVC pointers stay under the local root.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import polars as pl

from curation_platform import storage
from curation_platform.errors import ConfigError, CurationError


def resolve_resource(path: str, what: str = "resource") -> Path:
    """``pkg://package/inner/path`` to a file inside an installed package; other strings are paths (``~``
    expanded). A package that is not installed raises ConfigError naming ``what``."""
    if not path.startswith("pkg://"):
        return Path(path).expanduser()
    package, _, inner = path.removeprefix("pkg://").partition("/")
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise ConfigError(f"{what}: package {package!r} in path {path!r} is not installed") from None
    return Path(str(root.joinpath(inner)))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so the sensor, the CLI and runs never interleave writes to shared files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_file(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` with the permissions a plain ``open`` would give (0666 minus the umask):
    ``mkstemp`` creates 0600, which would keep other users of the machine from reading a release."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> Path:
    """Write to a temporary name in the same folder, then rename: readers never see half a file. An object-store
    path is uploaded as one object, which readers likewise see whole or not at all."""
    if storage.is_uri(path):
        return storage.write_parquet(frame, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    os.close(fd)
    try:
        # Fixed compression and statistics so the same frame gives byte-identical files.
        frame.write_parquet(tmp, compression="zstd", compression_level=3, statistics=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# Rows per Parquet row group of stage and ledger files. Fixed (not ``engine.batch_rows``) so a file's bytes do not
# depend on how the drop was batched; a reader decodes one row group at a time, so it also bounds read memory.
ROW_GROUP_ROWS = 8192

# Parquet key-value metadata of a stage file that stores only decisions: the stage its rows compose on.
DECIDES_ON_KEY = b"curation_platform.decides_on"
# Metadata of a full-row stage file whose text columns `curate gc` removed (the columns it removed).
TEXT_REMOVED_KEY = b"curation_platform.text_removed"
TEXT_COLUMNS = ("text", "messages")


class ParquetStreamWriter:
    """Write a Parquet file from a stream of frames, atomically: rows go to a temporary file beside ``path`` in
    row groups of exactly ``ROW_GROUP_ROWS`` (the last one shorter), which is renamed into place on ``close``, so
    the same rows give byte-identical files however they were split into frames. ``metadata`` goes into the
    file's key-value metadata. Use as a context manager: an exception removes the temporary file.

    Example::

        with ParquetStreamWriter(path) as out:
            for batch in batches:
                out.write(batch)
    """

    def __init__(self, path: Path, metadata: dict[bytes, bytes] | None = None):
        # An object-store path is written to a local temporary file and uploaded as one object on ``close``.
        self.path = path if storage.is_uri(path) else Path(path)
        self.metadata = metadata or {}
        self.rows = 0
        self.bytes = 0
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0
        self._schema: pl.Schema | None = None
        self._writer = None
        self._tmp: str | None = None

    def __enter__(self) -> "ParquetStreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: pl.DataFrame) -> None:
        """Append ``frame``'s rows (an empty frame only fixes the schema when nothing else was written)."""
        if self._schema is None or (self.rows == 0 and self._pending_rows == 0 and frame.height):
            self._schema = frame.schema
        if not frame.height:
            return
        self._pending.append(frame)
        self._pending_rows += frame.height
        while self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, rows: int) -> None:
        pending = pl.concat(self._pending, how="vertical_relaxed", rechunk=True) if len(self._pending) > 1 \
            else self._pending[0].rechunk()
        head, rest = pending.slice(0, rows), pending.slice(rows)
        self._pending, self._pending_rows = ([rest] if rest.height else []), rest.height
        self._write_table(head)

    def _write_table(self, frame: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
        if self._writer is None:
            if storage.is_uri(self.path):
                fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, self._tmp = _temp_file(self.path)
            os.close(fd)
            schema = table.schema.with_metadata({**(table.schema.metadata or {}), **self.metadata})
            # Fixed compression and statistics so the same rows give byte-identical files. Text columns get
            # neither dictionary nor min/max statistics: both cost bytes (a page's min and max are two whole
            # documents) and no query prunes on text.
            small = [c for c in schema.names if c not in TEXT_COLUMNS]
            self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd", compression_level=3,
                                            use_dictionary=small, write_statistics=small)
            self._arrow_schema = schema
        self._writer.write_table(table.cast(self._arrow_schema), row_group_size=ROW_GROUP_ROWS)
        self.rows += frame.height

    def close(self) -> Path:
        if self._pending_rows:
            self._flush(self._pending_rows)
        if self._writer is None:  # no rows: a file with the schema only
            self._write_table(pl.DataFrame(schema=self._schema or {"doc_id": pl.String}))
        self._writer.close()
        self.bytes = Path(self._tmp).stat().st_size
        if storage.is_uri(self.path):
            try:
                self.path.fs.put_file(self._tmp, self.path.key)
            finally:
                Path(self._tmp).unlink(missing_ok=True)
        else:
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tmp:
            Path(self._tmp).unlink(missing_ok=True)


def _source(path: Path):
    """What pyarrow reads: the local path, or an object's fsspec file (pyarrow's own S3 client is not configured
    from the platform's storage options)."""
    return path.open("rb") if storage.is_uri(path) else path


def iter_parquet(path: Path | list[Path], batch_rows: int, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """Frames of exactly ``batch_rows`` rows of a Parquet file, or of several files read one after the other (the
    last frame shorter), in row order; memory is one row group plus one batch, never a whole file.

    Row groups are read one at a time, each with its own reader: pyarrow's one reader over a whole file
    (``iter_batches`` without ``row_groups``) keeps more memory the more row groups it has passed (measured: peak
    RSS 260 -> 410 MB for a file 4x larger at 20,000 rows a batch; 240 -> 270 MB one row group at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = pa.default_memory_pool()
    pending: list[pl.DataFrame] = []
    rows = 0
    for one in path if isinstance(path, list) else [path]:
        with pq.ParquetFile(_source(one)) as handle:
            for group in range(handle.num_row_groups):
                for batch in handle.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns,
                                                 use_threads=True):
                    pending.append(pl.from_arrow(batch))
                    rows += batch.num_rows
                    while rows >= batch_rows:
                        frame = pl.concat(pending, how="vertical") if len(pending) > 1 else pending[0]
                        yield frame.slice(0, batch_rows)
                        # pyarrow's default pool (mimalloc) keeps the pages of the buffers the consumer freed:
                        # without this, RSS grew about 5 KB per document read while the pool's own count stayed flat.
                        pool.release_unused()
                        rest = frame.slice(batch_rows)
                        pending, rows = ([rest] if rest.height else []), rest.height
    if rows:
        yield pl.concat(pending, how="vertical") if len(pending) > 1 else pending[0]


class _Cursor:
    """Reads a decision file's rows alongside the batches of the stage it decides on (both in row order, its rows
    a subsequence of the base rows): ``take(ids)`` returns its next rows whose ``doc_id`` is in ``ids``."""

    def __init__(self, batches: Iterator[pl.DataFrame]):
        self._batches = batches
        self._buffer: pl.DataFrame | None = None

    def take(self, ids: pl.Series) -> pl.DataFrame:
        while self._buffer is None or self._buffer.height < len(ids):
            nxt = next(self._batches, None)
            if nxt is None:
                break
            self._buffer = nxt if self._buffer is None else pl.concat([self._buffer, nxt], how="vertical_relaxed")
        if self._buffer is None:
            raise StopIteration
        inside = self._buffer["doc_id"].is_in(ids.implode())
        count = len(inside) if inside.all() else int(inside.arg_min())
        taken, self._buffer = self._buffer.slice(0, count), self._buffer.slice(count)
        return taken


def write_text_atomic(text: str, path: Path) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    """Write to a temporary name beside ``path``, then rename; an object-store path is one PUT (seen whole or not
    at all)."""
    if storage.is_uri(path):
        with path.open("wb") as handle:
            handle.write(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return path


# Drop and release names become file names and glob patterns: keep them to a safe, portable alphabet.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a safe drop or release name, else a CurationError saying what is allowed."""
    if not SAFE_NAME.match(name) or name.startswith(".") or ".." in name:
        raise CurationError(
            f"{kind} name {name!r} is not allowed: use letters, digits, '.', '_' and '-', starting with a letter or "
            "digit (it becomes a folder and file name)"
        )
    return name


@dataclass(frozen=True)
class DropEntry:
    name: str
    path: str
    registered_at: float
    order: int
    fingerprint: str = ""


class Workspace:
    """Paths and small shared state of one workspace directory.

    ``root`` is a local directory: the drop registry, file locks, the DuckDB catalog, the Dagster home and the DVC
    metadata need a local disk (file locks, a DuckDB database file, git). The lake (stage Parquet, ledger,
    quarantine, dedup indexes, caches, takedowns and releases) lives under ``lake``: the same directory by
    default, or an object-store URI such as ``s3://bucket/lake`` (argument, else ``CURATION_LAKE``)."""

    def __init__(self, root: str | Path, lake: str | Path | None = None):
        self.root = Path(root).resolve()
        lake = lake if lake is not None else os.environ.get("CURATION_LAKE") or None
        self.lake = self.root if lake is None else storage.as_path(lake)
        if not storage.is_uri(self.lake):
            self.lake = Path(self.lake).resolve()

    # Paths -------------------------------------------------------------------------------------------------
    def stage_path(self, stage: str, drop: str) -> Path:
        return self.lake / "stages" / stage / f"{drop}.parquet"

    def ledger_path(self, stage: str, drop: str) -> Path:
        return self.lake / "ledger" / stage / f"{drop}.parquet"

    def quarantine_path(self, drop: str) -> Path:
        return self.lake / "quarantine" / f"{drop}.parquet"

    def index_path(self, index: str, drop: str) -> Path:
        return self.lake / "index" / index / f"{drop}.parquet"

    def cache_path(self, kind: str, drop: str) -> Path:
        """Derived per-drop data that can be rebuilt at any time (token counts)."""
        return self.lake / "cache" / kind / f"{drop}.parquet"

    def release_ledger_path(self, release: str) -> Path:
        return self.lake / "ledger" / "release" / f"{release}.parquet"

    @property
    def takedowns_path(self) -> Path:
        return self.lake / "takedowns.parquet"

    def release_dir(self, name: str) -> Path:
        """The folder of published release ``name``, as every reader finds it. In a local lake ``releases/<name>``
        (published by renaming folders). In object storage, which has no rename, releases are immutable versions
        ``releases/.versions/<version>/<name>`` and the small object ``releases/.current/<name>.json``, written last
        by ``release.publish_release``, names the current one; without it (nothing published yet, or a lake
        published before versions) ``releases/<name>``."""
        folder = self.lake / "releases" / name
        if not storage.is_uri(self.lake):
            return folder
        try:
            current = json.loads(self.release_head(name).read_text())
        except FileNotFoundError:
            return folder
        return self.lake / "releases" / ".versions" / current["version"] / name

    def release_head(self, name: str) -> Path:
        """The pointer object naming the current version of release ``name`` in an object-store lake."""
        return self.lake / "releases" / ".current" / f"{name}.json"

    def release_names(self) -> list[str]:
        """Names of the published releases (folders under ``releases/``, and in object storage the releases a
        pointer names), sorted."""
        releases = self.lake / "releases"
        if not releases.exists():
            return []
        if storage.is_uri(releases):
            folders = [p.name for p in storage.child_folders(releases)]
            heads = [p.stem for p in (releases / ".current").glob("*.json")]
        else:
            folders, heads = [p.name for p in releases.iterdir() if p.is_dir()], []
        return sorted({n for n in folders if not n.startswith(".")} | set(heads))

    def release_pointer(self, name: str) -> Path:
        """The release's DVC pointer file (``releases/<name>.dvc``), always under the local root: it goes to git."""
        return self.root / "releases" / f"{name}.dvc"

    def staging_dir(self, name: str) -> Path:
        return self.lake / "releases" / ".staging" / name

    @property
    def dagster_home(self) -> Path:
        return self.root / ".dagster"

    def glob(self, kind: str, stage: str) -> str:
        """A DuckDB/Polars glob over one stage's (or ledger's, or index's) files for every drop."""
        return str(self.lake / kind / stage / "*.parquet")

    # Reading stage data --------------------------------------------------------------------------------------
    # Decide-only stages store ``doc_id`` plus the columns they add, with the stage they decide on in the file's
    # metadata; the functions below compose the full rows (the stage's kept documents, in their original order):
    # the latest full-row stage at or before ``stage``, joined with every decision file on the way.
    def has_stage(self, stage: str, drop: str) -> bool:
        return self.stage_path(stage, drop).exists()

    def _stage_file(self, stage: str, drop: str) -> Path:
        path = self.stage_path(stage, drop)
        if not path.exists():
            raise CurationError(
                f"stage '{stage}' has no output for drop '{drop}' yet ({path}); materialize it first"
            )
        return path

    def decides_on(self, stage: str, drop: str) -> str | None:
        """The stage whose rows ``stage``'s file for ``drop`` composes on, or None when it stores full rows."""
        import pyarrow.parquet as pq

        metadata = pq.read_schema(_source(self._stage_file(stage, drop))).metadata or {}
        value = metadata.get(DECIDES_ON_KEY)
        return value.decode() if value else None

    def stored_columns(self, stage: str, drop: str) -> list[str]:
        """Columns the stage file itself stores (for a decide-only stage: ``doc_id`` and what the stage adds)."""
        return list(pl.read_parquet_schema(self._stage_file(stage, drop)))

    def scan_stage(self, stage: str, drop: str) -> pl.LazyFrame:
        """The stage's kept documents for ``drop`` with every column, lazily: select columns before collecting
        and only those are read (text is not decoded for a query on scores)."""
        path = self._stage_file(stage, drop)
        frame = pl.scan_parquet(path)
        base_stage = self.decides_on(stage, drop)
        if base_stage is None:
            return frame
        added = [c for c in self.stored_columns(stage, drop) if c != "doc_id"]
        base = self.scan_stage(base_stage, drop)
        return base.drop(added, strict=False).join(frame, on="doc_id", how="inner", maintain_order="left")

    def read_stage(self, stage: str, drop: str, columns: list[str] | None = None) -> pl.DataFrame:
        """``scan_stage`` collected (only ``columns`` when given)."""
        frame = self.scan_stage(stage, drop)
        return (frame.select(columns) if columns else frame).collect()

    def iter_stage(self, stage: str, drop: str, batch_rows: int,
                   columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """``scan_stage`` as frames of at most ``batch_rows`` rows, in row order, streamed: memory holds one batch
        of each file on the chain, never the drop. Empty frames may occur (a batch whose documents were all
        removed); ``columns`` restricts the output (``doc_id`` first is kept when listed)."""
        path = self._stage_file(stage, drop)
        base_stage = self.decides_on(stage, drop)
        if base_stage is None:
            yield from iter_parquet(path, batch_rows, columns)
            return
        stored = self.stored_columns(stage, drop)
        added = [c for c in stored if c != "doc_id"]
        wanted_added = added if columns is None else [c for c in added if c in columns]
        base_columns = None if columns is None else ["doc_id", *[c for c in columns if c not in added and c != "doc_id"]]
        decisions = _Cursor(iter_parquet(path, batch_rows, ["doc_id", *wanted_added]))
        for base in self.iter_stage(base_stage, drop, batch_rows, base_columns):
            try:
                chosen = decisions.take(base["doc_id"])
            except StopIteration:  # an empty decision file
                chosen = pl.DataFrame(schema={c: t for c, t in pl.read_parquet_schema(path).items()
                                              if c == "doc_id" or c in wanted_added})
            joined = base.drop(wanted_added, strict=False).join(chosen, on="doc_id", how="inner",
                                                                maintain_order="left")
            yield joined.select(columns) if columns else joined

    def stage_schema(self, stage: str, drop: str) -> pl.Schema:
        return self.scan_stage(stage, drop).collect_schema()

    def text_removed(self, stage: str, drop: str) -> bool:
        """True when the full-row file under ``stage``'s view had its text removed by ``curate gc``."""
        import pyarrow.parquet as pq

        base = self.decides_on(stage, drop)
        if base is not None:
            return self.text_removed(base, drop)
        return TEXT_REMOVED_KEY in (pq.read_schema(_source(self._stage_file(stage, drop))).metadata or {})

    def remove_text(self, stage: str, drop: str, batch_rows: int, dry_run: bool = False) -> int:
        """Rewrite a full-row stage file without its text columns (keeping ids, provenance and every other column,
        its metadata and modification time), streamed in batches. Returns the bytes freed (estimated from the
        columns' compressed sizes on ``dry_run``)."""
        import pyarrow.parquet as pq

        path = self._stage_file(stage, drop)
        schema = pq.read_schema(_source(path))
        metadata = dict(schema.metadata or {})
        removed = [c for c in TEXT_COLUMNS if c in schema.names]
        if self.decides_on(stage, drop) is not None or TEXT_REMOVED_KEY in metadata or not removed:
            return 0
        before = path.stat().st_size
        if dry_run:
            meta = pq.read_metadata(_source(path))
            return sum(meta.row_group(g).column(i).total_compressed_size for g in range(meta.num_row_groups)
                       for i in range(meta.num_columns)
                       if meta.row_group(g).column(i).path_in_schema.split(".")[0] in removed)
        kept = [c for c in schema.names if c not in removed]
        stat = path.stat()
        metadata.pop(b"ARROW:schema", None)
        with ParquetStreamWriter(path, {**metadata, TEXT_REMOVED_KEY: ",".join(removed).encode()}) as out:
            for batch in iter_parquet(path, batch_rows, kept):
                out.write(batch)
            if out.rows == 0:
                out.write(pl.read_parquet(path, columns=kept, n_rows=0))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return before - path.stat().st_size

    def stage_drops(self, stage: str) -> list[str]:
        """Drops with an output of ``stage``, sorted by name."""
        folder = self.root / "stages" / stage
        return sorted(p.name.removesuffix(".parquet") for p in folder.glob("*.parquet")) if folder.is_dir() else []

    def read_stage_columns(self, stage: str, columns: list[str], drops: Iterable[str] | None = None,
                           empty: dict[str, pl.DataType] | None = None,
                           where: pl.Expr | None = None) -> pl.DataFrame:
        """The listed columns (those that exist) of ``stage``'s kept documents of every drop (or ``drops``), one
        drop after the other, only the rows ``where`` selects if given (pushed down into the Parquet scan);
        ``empty`` is the schema when no drop has an output yet (default: strings)."""
        frames = []
        for drop in (self.stage_drops(stage) if drops is None else drops):
            view = self.scan_stage(stage, drop)
            have = view.collect_schema()
            view = view if where is None else view.filter(where)
            frames.append(view.select([c for c in columns if c in have]).collect())
        if not frames:
            return pl.DataFrame(schema=empty or {c: pl.String for c in columns})
        return pl.concat(frames, how="diagonal_relaxed")

    def index_files(self, index: str, exclude: str | None = None) -> list[tuple[Path, DropEntry]]:
        """Index files of every registered drop except ``exclude``, in drop order, with their drop: the entries
        are queried in place (DuckDB), never loaded whole. Dedup records pairs with every other drop; which copy
        ships is decided per release from the curated drops only."""
        return [(path, d) for d in self.drops()
                if d.name != exclude and (path := self.index_path(index, d.name)).exists()]

    @property
    def spill_dir(self) -> Path:
        """Where out-of-core stages spill (DuckDB temp_directory) unless ``engine.spill_dir`` says otherwise."""
        return self.root / "tmp" / "spill"

    # The drop registry -----------------------------------------------------------------------------------------
    @property
    def _registry_path(self) -> Path:
        return self.root / "registry" / "drops.json"

    def drops(self) -> list[DropEntry]:
        if not self._registry_path.exists():
            return []
        entries = [DropEntry(**e) for e in json.loads(self._registry_path.read_text())]
        return sorted(entries, key=lambda d: d.order)

    def drop(self, name: str) -> DropEntry:
        for entry in self.drops():
            if entry.name == name:
                return entry
        raise CurationError(f"drop '{name}' is not registered in workspace {self.root}; run `curate run` or "
                            "let the landing sensor pick it up")

    def register_drop(self, name: str, path: str | Path, fingerprint: str = "") -> DropEntry:
        """Register a drop once; its order is fixed at first registration (registration time, then name)."""
        with file_lock(self.root / "registry" / ".lock"):
            entries = self.drops()
            for entry in entries:
                if entry.name == name:
                    if entry.path != storage.location(path):
                        # The landing area moved: read the drop where it is now, keep its place in the order.
                        moved = replace(entry, path=storage.location(path))
                        payload = [asdict(moved if e.name == name else e) for e in entries]
                        write_text_atomic(json.dumps(payload, indent=2), self._registry_path)
                        return moved
                    return entry
            entry = DropEntry(
                name=name,
                path=storage.location(path),
                registered_at=time.time(),
                order=len(entries),
                fingerprint=fingerprint,
            )
            payload = [asdict(e) for e in [*entries, entry]]
            write_text_atomic(json.dumps(payload, indent=2), self._registry_path)
            return entry

    def update_fingerprint(self, name: str, fingerprint: str) -> None:
        """Record that a registered drop's files changed (it keeps its place in the order)."""
        with file_lock(self.root / "registry" / ".lock"):
            entries = [replace(e, fingerprint=fingerprint) if e.name == name else e for e in self.drops()]
            write_text_atomic(json.dumps([asdict(e) for e in entries], indent=2), self._registry_path)

    def changed_drops(self, ready: list[tuple[str, Path, str]]) -> list[str]:
        """Registered drops whose files differ from what was curated; their fingerprints are updated."""
        registered = {d.name: d for d in self.drops()}
        changed = []
        for name, _, fingerprint in ready:
            entry = registered.get(name)
            if entry is not None and entry.fingerprint and entry.fingerprint != fingerprint:
                self.update_fingerprint(name, fingerprint)
                changed.append(name)
        return changed

    def register_drops(self, drops: list[tuple[str, Path, str]]) -> list[DropEntry]:
        """Register several drops found together, in name order, so their relative order is deterministic."""
        return [self.register_drop(name, path, fp) for name, path, fp in sorted(drops)]
