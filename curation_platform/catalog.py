"""The catalog: one DuckDB database per workspace (``<workspace>/catalog.duckdb``) with views over the lake, so
users answer questions in SQL (``curate sql``, the DuckDB CLI or UI) without code.

Views (all glob-based and schema-agnostic: ``read_parquet(glob, union_by_name=true)``, so a column another stage
adds shows up without a catalog change):

- ``stage_<name>``: every drop's output of one stage (``stages/<name>/*.parquet``)
- ``ledger``: every verdict of every per-drop stage, plus takedown tombstones (``ledger/*/*.parquet`` but
  ``release``); ``release_ledger``: release verdicts with the ``release`` name
- ``documents``: one row per input record (``doc_id``, ``drop``, ``source``, ``license``, ``kind``), read or
  quarantined, for joining verdicts to sources
- ``quarantine``, ``index_<name>`` (``index_exact``, ``index_near``), ``takedowns``
- ``drops``: the registry (``drop``, ``path``, ``registered_at`` as a timestamp, ``drop_order``, ``fingerprint``)
- ``releases`` (one row per published data card), ``release_shards`` and ``release_shard_index`` (every release,
  with its ``release`` name)

Columns a view's files do not carry are derived from the path: ``drop`` from the file name, ``stage`` from the
ledger folder, ``release`` from the release folder. A view whose files do not exist yet is an empty view with
those path columns (the ledger views with the full ledger schema), so queries written for a finished run also run
on a new workspace. Paths inside the views are absolute: the catalog opens from any directory; after moving the
workspace, ``curate sql`` rebuilds it.

The catalog is written into a fresh file that replaces the old one atomically, so a reader (``curate sql``, a DuckDB
UI session) never blocks a run and never sees half a catalog.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from curation_platform.errors import CurationError
from curation_platform.ledger import LEDGER_SCHEMA
from curation_platform.workspace import Workspace, file_lock

CATALOG_FILE = "catalog.duckdb"
_ATTACHED = "curation_catalog"

_DUCKDB_TYPES = {"String": "VARCHAR", "Float64": "DOUBLE", "Int64": "BIGINT", "Int32": "INTEGER",
                 "Boolean": "BOOLEAN", "Int8": "TINYINT"}
_LEDGER_COLUMNS = {name: _DUCKDB_TYPES.get(str(dtype), "VARCHAR") for name, dtype in LEDGER_SCHEMA.items()}
_DOCUMENT_COLUMNS = {"doc_id": "VARCHAR", "drop": "VARCHAR", "source": "VARCHAR", "license": "VARCHAR",
                     "kind": "VARCHAR"}


class CatalogError(CurationError):
    """A catalog query failed (bad SQL, unknown view) or the catalog cannot be opened."""


def catalog_path(ws: Workspace) -> Path:
    return ws.root / CATALOG_FILE


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _has_files(pattern: str) -> bool:
    return any(Path("/").glob(pattern.lstrip("/")))


def _file_part(part: str) -> str:
    """SQL for a path-derived column: ``drop`` (file name), ``folder`` (parent folder), ``release`` (two up)."""
    parts = "string_split(_file, '/')"
    return {
        "drop": "regexp_replace(parse_filename(_file), '\\.parquet$', '')",
        "folder": f"{parts}[-2]",
        "release": f"{parts}[-3]",
    }[part]


def _parquet_view(conn, view: str, globs: Sequence[str], derived: dict[str, str],
                  empty: dict[str, str], where: str = "") -> None:
    """``view`` over every file of ``globs`` (with ``derived`` path columns the files lack), or an empty typed view
    with ``empty``'s columns when there are no files yet (DuckDB cannot read an empty glob)."""
    present = [g for g in globs if _has_files(g)]
    if not present:
        columns = ", ".join(f"CAST(NULL AS {t}) AS {_ident(c)}" for c, t in {**dict.fromkeys(derived, "VARCHAR"), **empty}.items())
        sql = f"SELECT {columns} WHERE false"
    else:
        source = (f"read_parquet([{', '.join(_quote(g) for g in present)}], union_by_name=true, "
                  "filename='_file')")
        existing = {row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        extra = "".join(f", {_file_part(part)} AS {_ident(col)}" for col, part in derived.items() if col not in existing)
        sql = f"SELECT * EXCLUDE (_file){extra} FROM {source}" + (f" WHERE {where}" if where else "")
    conn.execute(f"CREATE OR REPLACE VIEW {_ATTACHED}.main.{_ident(view)} AS {sql}")


def _json_view(conn, view: str, pattern: str, select: str, empty: dict[str, str]) -> None:
    if not _has_files(pattern):
        columns = ", ".join(f"CAST(NULL AS {t}) AS {_ident(c)}" for c, t in empty.items())
        sql = f"SELECT {columns} WHERE false"
    else:
        sql = select.format(source=f"read_json({_quote(pattern)}, union_by_name=true, filename='_file')")
    conn.execute(f"CREATE OR REPLACE VIEW {_ATTACHED}.main.{_ident(view)} AS {sql}")


def _subfolders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []


def _define_views(conn, ws: Workspace, stages: Iterable[str]) -> list[str]:
    root = str(ws.root)
    views = []
    for stage in sorted(set(stages) | set(_subfolders(ws.root / "stages"))):
        _parquet_view(conn, f"stage_{stage}", [f"{root}/stages/{stage}/*.parquet"], {"drop": "drop"}, {})
        views.append(f"stage_{stage}")
    ledger_globs = [f"{root}/ledger/{name}/*.parquet" for name in _subfolders(ws.root / "ledger") if name != "release"]
    _parquet_view(conn, "ledger", ledger_globs, {"stage": "folder", "drop": "drop"}, _LEDGER_COLUMNS)
    _parquet_view(conn, "release_ledger", [f"{root}/ledger/release/*.parquet"], {"release": "drop"}, _LEDGER_COLUMNS)
    _parquet_view(conn, "quarantine", [f"{root}/quarantine/*.parquet"], {"drop": "drop"}, {"doc_id": "VARCHAR"})
    documents = [f"{root}/stages/raw_documents/*.parquet", f"{root}/quarantine/*.parquet"]
    present = [g for g in documents if _has_files(g)]
    if present:
        source = f"read_parquet([{', '.join(_quote(g) for g in present)}], union_by_name=true)"
        existing = {row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        columns = ", ".join(_ident(c) if c in existing else f"CAST(NULL AS VARCHAR) AS {_ident(c)}"
                            for c in _DOCUMENT_COLUMNS)
        conn.execute(f"CREATE OR REPLACE VIEW {_ATTACHED}.main.documents AS SELECT {columns} FROM {source}")
    else:
        _parquet_view(conn, "documents", [], {}, _DOCUMENT_COLUMNS)
    views += ["ledger", "release_ledger", "quarantine", "documents"]
    for index in sorted({"exact", "near"} | set(_subfolders(ws.root / "index"))):
        _parquet_view(conn, f"index_{index}", [f"{root}/index/{index}/*.parquet"], {"drop": "drop"},
                      {"doc_id": "VARCHAR"})
        views.append(f"index_{index}")
    _parquet_view(conn, "takedowns", [f"{root}/takedowns.parquet"], {}, {"doc_id": "VARCHAR"})
    _parquet_view(conn, "release_shards", [f"{root}/releases/*/shards/*.parquet"], {"release": "release"},
                  {"doc_id": "VARCHAR", "drop": "VARCHAR", "source": "VARCHAR", "license": "VARCHAR",
                   "kind": "VARCHAR", "token_count": "BIGINT"})
    _parquet_view(conn, "release_shard_index", [f"{root}/releases/*/shard_index.parquet"], {"release": "folder"},
                  {"doc_id": "VARCHAR", "release_shard": "VARCHAR"})
    _json_view(conn, "releases", f"{root}/releases/*/data_card.json",
               "SELECT string_split(_file, '/')[-2] AS release, * EXCLUDE (_file) FROM {source}",
               {"release": "VARCHAR", "profile": "VARCHAR", "documents": "BIGINT", "tokens": "BIGINT"})
    _json_view(conn, "drops", f"{root}/registry/drops.json",
               'SELECT name AS "drop", path, to_timestamp(registered_at) AS registered_at, "order" AS drop_order, '
               "fingerprint FROM {source}",
               {"drop": "VARCHAR", "path": "VARCHAR", "registered_at": "TIMESTAMP WITH TIME ZONE",
                "drop_order": "BIGINT", "fingerprint": "VARCHAR"})
    conn.execute(f"CREATE OR REPLACE TABLE {_ATTACHED}.main.catalog_info AS SELECT {_quote(root)} AS workspace, "
                 "now() AS refreshed_at")
    return [*views, "release_shard_index", "takedowns", "release_shards", "releases", "drops"]


def refresh_catalog(conn, ws: Workspace, stages: Iterable[str] = ()) -> list[str]:
    """Rebuild ``<workspace>/catalog.duckdb`` through ``conn`` (any DuckDB connection: the assets pass their
    ``DuckDBResource`` connection): the views are written into a fresh file, which then replaces the catalog.
    ``stages`` names stage views to create even before their folder exists. Returns the view names."""
    target = catalog_path(ws)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    with file_lock(ws.root / ".catalog.lock"):
        try:
            conn.execute(f"ATTACH {_quote(str(tmp))} AS {_ATTACHED}")
            try:
                views = _define_views(conn, ws, stages)
                conn.execute(f"CHECKPOINT {_ATTACHED}")
            finally:
                conn.execute(f"DETACH {_ATTACHED}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    return views


def _current(ws: Workspace) -> bool:
    """The catalog exists and was built for this workspace path (views hold absolute paths)."""
    import duckdb

    path = catalog_path(ws)
    if not path.exists():
        return False
    try:
        with contextlib.closing(duckdb.connect(str(path), read_only=True)) as conn:
            return conn.execute("SELECT workspace FROM catalog_info").fetchone()[0] == str(ws.root)
    except duckdb.Error:
        return False


@contextlib.contextmanager
def open_catalog(ws: Workspace, stages: Iterable[str] = ()) -> Iterator:
    """A read-only connection to the workspace catalog, built first if it is missing or was built for another
    workspace path."""
    import duckdb

    if not ws.root.is_dir():
        raise CatalogError(f"workspace {ws.root} does not exist; run `curate run` first")
    if not _current(ws):
        with contextlib.closing(duckdb.connect()) as scratch:
            refresh_catalog(scratch, ws, stages)
    for attempt in range(5):
        try:
            conn = duckdb.connect(str(catalog_path(ws)), read_only=True)
            break
        except duckdb.IOException as exc:  # a DuckDB session holding it read-write
            if attempt == 4:
                raise CatalogError(f"cannot open {catalog_path(ws)}: {str(exc).splitlines()[0]}") from None
            time.sleep(0.2 * 2 ** attempt)
    try:
        yield conn
    finally:
        conn.close()


def query(ws: Workspace, sql: str, stages: Iterable[str] = ()):
    """Run one SQL statement on the workspace catalog; returns a Polars frame. Bad SQL raises CatalogError with
    DuckDB's one-line message."""
    import duckdb
    import polars as pl

    with open_catalog(ws, stages) as conn:
        try:
            relation = conn.sql(sql)
            return pl.DataFrame() if relation is None else relation.pl()
        except duckdb.Error as exc:
            message = str(exc).strip().splitlines()
            raise CatalogError(f"SQL failed: {message[0] if message else type(exc).__name__}") from None
