"""The catalog: one DuckDB database per workspace (``<workspace>/catalog.duckdb``) with views over the lake, so
users answer questions in SQL (``curate sql``, the DuckDB CLI or UI) without code.

Views (all glob-based and schema-agnostic: ``read_parquet(glob, union_by_name=true)``, so a column another stage
adds shows up without a catalog change):

- ``stage_<name>``: every drop's output of one stage (``stages/<name>/*.parquet``) with full rows: a stage that
  stores only its decisions (``doc_id`` plus the columns it adds) is joined in SQL with the stage it decides on
- ``ledger``: every verdict of every per-drop stage, plus takedown tombstones (``ledger/*/*.parquet`` but
  ``release``); ``release_ledger``: release verdicts with the ``release`` name
- ``documents``: one row per input record (``doc_id``, ``drop``, ``source``, ``license``, ``kind``), read or
  quarantined, for joining verdicts to sources
- ``quarantine``, ``index_<name>`` (``index_exact``, ``index_near``), ``takedowns``
- ``drops``: the registry (``drop``, ``path``, ``registered_at`` as a timestamp, ``drop_order``, ``fingerprint``)
- ``releases`` (one row per published data card), ``release_shards`` and ``release_shard_index`` (every release,
  with its ``release`` name; ``release_shards`` with the ``split`` its file name says, train or validation)

Columns a view's files do not carry are derived from the path: ``drop`` from the file name, ``stage`` from the
ledger folder, ``release`` from the release folder. A view whose files do not exist yet is an empty view with
those path columns (the ledger views with the full ledger schema), so queries written for a finished run also run
on a new workspace. Paths inside the views are absolute: the catalog opens from any directory; after moving the
workspace, the next run or ``curate sql`` rebuilds it.

The catalog is written into a fresh file that replaces the old one atomically, so a reader (``curate sql``, a DuckDB
UI session) never blocks a run and never sees half a catalog.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from curation_platform.errors import CurationError
from curation_platform.ledger import LEDGER_SCHEMA
from curation_platform.storage import as_path, is_uri, register
from curation_platform.workspace import Workspace, file_lock, write_text_atomic

CATALOG_FILE = "catalog.duckdb"
_ATTACHED = "curation_catalog_new"
_CURRENT = "curation_catalog_current"

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
    if is_uri(pattern):
        return bool(as_path(pattern).fs.glob(as_path(pattern).key))
    return any(Path("/").glob(pattern.lstrip("/")))


def _files_matcher(lake: Path | str) -> Callable[[str], bool]:
    """``_has_files`` for the globs of one listing of the workspace: an object-store lake is listed once (a few
    paged requests) and the globs under it are matched against the keys, instead of one listing request per glob
    (about forty per catalog check, which runs after every asset)."""
    if not is_uri(lake):
        return _has_files
    lake = as_path(lake)
    keys = {tuple(key.split("/")) for key in lake.fs.find(lake.key)}
    prefix = f"{lake}/"

    def has_files(pattern: str) -> bool:
        if not pattern.startswith(prefix):
            return _has_files(pattern)
        parts = as_path(pattern).key.split("/")
        return any(len(key) == len(parts) and all(fnmatch.fnmatchcase(k, p) for k, p in zip(key, parts))
                   for key in keys)

    return has_files


def _file_part(part: str) -> str:
    """SQL for a path-derived column: ``drop`` (file name), ``folder`` (parent folder), ``release`` (two up)."""
    parts = "string_split(_file, '/')"
    return {
        "drop": "regexp_replace(parse_filename(_file), '\\.parquet$', '')",
        "folder": f"{parts}[-2]",
        "release": f"{parts}[-3]",
        "split": "regexp_extract(parse_filename(_file), '^(train|validation)-', 1)",
    }[part]


@dataclass(frozen=True)
class _View:
    """One catalog view: its name, its files (``globs`` that match at least one file; empty: no files yet), the
    columns to derive from the path when the files lack them, the typed columns of the empty view, and for JSON
    sources the SELECT over ``{source}``."""

    name: str
    globs: tuple[str, ...]
    derived: tuple[tuple[str, str], ...] = ()
    empty: tuple[tuple[str, str], ...] = ()
    json_select: str = ""
    columns: tuple[str, ...] = ()  # a fixed projection (``documents``); otherwise every column


def _make_view(name: str, globs: Sequence[str], derived: dict[str, str] | None = None,
               empty: dict[str, str] | None = None, json_select: str = "", columns: Sequence[str] = (),
               has_files: Callable[[str], bool] = _has_files) -> _View:
    return _View(name, tuple(g for g in globs if has_files(g)), tuple((derived or {}).items()),
                 tuple((empty or {}).items()), json_select, tuple(columns))


def _subfolders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []


def _views(ws: Workspace, stages: Iterable[str]) -> list[_View]:
    """Every view of the catalog, from a listing of the workspace (no file is read)."""
    root = str(ws.lake)  # the lake: the workspace directory, or an object-store URI
    _view = functools.partial(_make_view, has_files=_files_matcher(ws.lake))
    views = [_view(f"stage_{stage}", [f"{root}/stages/{stage}/*.parquet"], {"drop": "drop"})
             for stage in sorted(set(stages) | set(_subfolders(ws.lake / "stages")))]
    ledger_globs = [f"{root}/ledger/{name}/*.parquet" for name in _subfolders(ws.lake / "ledger") if name != "release"]
    # In object storage each release is the version its pointer names (see Workspace.release_dir).
    releases = ([str(ws.release_dir(name)) for name in ws.release_names()] if is_uri(ws.lake)
                else [f"{root}/releases/*"])
    views += [
        _view("ledger", ledger_globs, {"stage": "folder", "drop": "drop"}, _LEDGER_COLUMNS),
        _view("release_ledger", [f"{root}/ledger/release/*.parquet"], {"release": "drop"}, _LEDGER_COLUMNS),
        _view("quarantine", [f"{root}/quarantine/*.parquet"], {"drop": "drop"}, {"doc_id": "VARCHAR"}),
        _view("documents", [f"{root}/stages/raw_documents/*.parquet", f"{root}/quarantine/*.parquet"], {},
              _DOCUMENT_COLUMNS, columns=list(_DOCUMENT_COLUMNS)),
        *[_view(f"index_{index}", [f"{root}/index/{index}/*.parquet"], {"drop": "drop"}, {"doc_id": "VARCHAR"})
          for index in sorted({"exact", "near"} | set(_subfolders(ws.lake / "index")))],
        _view("takedowns", [f"{root}/takedowns.parquet"], {}, {"doc_id": "VARCHAR"}),
        _view("release_shards", [f"{r}/shards/*.parquet" for r in releases], {"release": "release", "split": "split"},
              {"doc_id": "VARCHAR", "drop": "VARCHAR", "source": "VARCHAR", "license": "VARCHAR", "kind": "VARCHAR",
               "domain": "VARCHAR", "epoch": "BIGINT", "token_count": "BIGINT"}),
        _view("release_shard_index", [f"{r}/shard_index.parquet" for r in releases], {"release": "folder"},
              {"doc_id": "VARCHAR", "release_shard": "VARCHAR"}),
        _view("releases", [f"{r}/data_card.json" for r in releases], {},
              {"release": "VARCHAR", "profile": "VARCHAR", "documents": "BIGINT", "tokens": "BIGINT"},
              json_select="SELECT string_split(_file, '/')[-2] AS release, * EXCLUDE (_file) FROM {source}"),
        _view("drops", [f"{ws.root}/registry/drops.json"], {},
              {"drop": "VARCHAR", "path": "VARCHAR", "registered_at": "TIMESTAMP WITH TIME ZONE",
               "drop_order": "BIGINT", "fingerprint": "VARCHAR"},
              json_select='SELECT name AS "drop", path, to_timestamp(registered_at) AS registered_at, '
                          '"order" AS drop_order, fingerprint FROM {source}'),
    ]
    return views


def _decides_on(globs: tuple[str, ...]) -> str | None:
    """The stage a decide-only stage's files compose on (from the first file's Parquet metadata), or None."""
    import pyarrow.parquet as pq

    from curation_platform.workspace import DECIDES_ON_KEY

    files = sorted(Path("/").glob(globs[0].lstrip("/"))) if globs else []
    if not files:
        return None
    value = (pq.read_schema(files[0]).metadata or {}).get(DECIDES_ON_KEY)
    return value.decode() if value else None


def _stage_view_sql(conn, ws: Workspace, view: _View, views: dict[str, _View]) -> str:
    """A stage view with full rows: a decide-only stage's files joined (on drop and doc_id) with the full-row view
    of the stage it decides on, its own columns winning where both have one."""
    plain = _view_sql(conn, view)
    base_name = _decides_on(view.globs)
    base = views.get(f"stage_{base_name}") if base_name else None
    if base is None or not base.globs:
        return plain
    base_sql = _stage_view_sql(conn, ws, base, views)
    mine = [row[0] for row in conn.execute(f"DESCRIBE {plain}").fetchall() if row[0] not in ("doc_id", "drop")]
    theirs = [row[0] for row in conn.execute(f"DESCRIBE {base_sql}").fetchall()]
    both = [c for c in mine if c in theirs]
    base_columns = ", ".join(f"coalesce(d.{_ident(c)}, u.{_ident(c)}) AS {_ident(c)}" if c in both
                             else f"u.{_ident(c)}" for c in theirs)
    own = "".join(f", d.{_ident(c)}" for c in mine if c not in both)
    return (f"SELECT {base_columns}{own} FROM ({base_sql}) u "
            f"JOIN ({plain}) d ON u.doc_id = d.doc_id AND u.\"drop\" = d.\"drop\"")


def _view_sql(conn, view: _View) -> str:
    """The SELECT behind ``view``: over its files, or an empty typed SELECT when there are none yet (DuckDB
    cannot read an empty glob)."""
    if not view.globs:
        columns = {**{c: "VARCHAR" for c, _ in view.derived}, **dict(view.empty)}
        return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {_ident(c)}" for c, t in columns.items()) + " WHERE false"
    if view.json_select:
        return view.json_select.format(source=f"read_json([{', '.join(_quote(g) for g in view.globs)}], union_by_name=true, filename='_file')")
    source = f"read_parquet([{', '.join(_quote(g) for g in view.globs)}], union_by_name=true, filename='_file')"
    existing = {row[0] for row in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if view.columns:
        return "SELECT " + ", ".join(_ident(c) if c in existing else f"CAST(NULL AS VARCHAR) AS {_ident(c)}"
                                     for c in view.columns) + f" FROM {source}"
    extra = "".join(f", {_file_part(part)} AS {_ident(col)}" for col, part in view.derived if col not in existing)
    return f"SELECT * EXCLUDE (_file){extra} FROM {source}"


def _layout(ws: Workspace, views: list[_View]) -> str:
    """What the view definitions depend on besides file contents: the workspace path and which globs have files."""
    return json.dumps([str(ws.root), [[v.name, v.globs] for v in views]])


def _stored(conn, target: Path) -> tuple[str, str] | None:
    """(workspace, layout) the catalog file was built for, or None when it is missing or cannot be read."""
    import duckdb

    if not target.exists():
        return None
    try:
        conn.execute(f"ATTACH {_quote(str(target))} AS {_CURRENT} (READ_ONLY)")
    except duckdb.Error:  # held read-write by a DuckDB session: rebuild into a new file
        return None
    try:
        return conn.execute(f"SELECT workspace, layout FROM {_CURRENT}.main.catalog_info").fetchone()
    except duckdb.Error:
        return None
    finally:
        conn.execute(f"DETACH {_CURRENT}")


def refresh_catalog(conn, ws: Workspace, stages: Iterable[str] = (), rebuild: str = "changed") -> list[str]:
    """Bring ``<workspace>/catalog.duckdb`` up to date through ``conn`` (any DuckDB connection: the assets pass
    their ``DuckDBResource`` connection). The views are written into a fresh file, which then replaces the catalog;
    when the views would be the same (no folder appeared or filled since, the workspace did not move) nothing is
    rewritten: the views read their globs at query time, so new drops show up without a rebuild. ``stages`` names
    stage views to create even before their folder exists. ``rebuild``: ``changed`` (default), ``moved`` (only
    when missing or built for another workspace path: what readers need) or ``always``. Returns the view names."""
    target = catalog_path(ws)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(ws.root / ".catalog.lock"):
        views = _views(ws, stages)
        layout = _layout(ws, views)
        stored = None if rebuild == "always" else _stored(conn, target)
        if stored is not None and (stored[1] == layout or (rebuild == "moved" and stored[0] == str(ws.root))):
            return [v.name for v in views]
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        register(conn, ws.lake)  # views over an object-store lake read through fsspec
        try:
            conn.execute(f"ATTACH {_quote(str(tmp))} AS {_ATTACHED}")
            try:
                by_name = {view.name: view for view in views}
                for view in views:
                    sql = (_stage_view_sql(conn, ws, view, by_name) if view.name.startswith("stage_")
                           else _view_sql(conn, view))
                    conn.execute(f"CREATE VIEW {_ATTACHED}.main.{_ident(view.name)} AS {sql}")
                conn.execute(f"CREATE TABLE {_ATTACHED}.main.catalog_info AS SELECT {_quote(str(ws.root))} AS "
                             f"workspace, {_quote(layout)} AS layout, now() AS refreshed_at")
                conn.execute(f"CHECKPOINT {_ATTACHED}")
            finally:
                conn.execute(f"DETACH {_ATTACHED}")
            os.replace(tmp, target)
            write_text_atomic(layout, _layout_record(ws))
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    return [v.name for v in views]


def _layout_record(ws: Workspace) -> Path:
    return ws.root / ".catalog.layout"


def catalog_is_current(ws: Workspace, stages: Iterable[str] = ()) -> bool:
    """True when the catalog exists and its views are the ones ``refresh_catalog`` would write now; decided from
    a listing of the workspace and a small record beside the catalog, without opening DuckDB."""
    record = _layout_record(ws)
    return (catalog_path(ws).exists() and record.exists()
            and record.read_text(encoding="utf-8") == _layout(ws, _views(ws, stages)))


@contextlib.contextmanager
def open_catalog(ws: Workspace, stages: Iterable[str] = ()) -> Iterator:
    """A read-only connection to the workspace catalog, built first if it is missing or was built for another
    workspace path (the assets keep it current otherwise; ``refresh_catalog`` rebuilds it on demand)."""
    import duckdb

    if not ws.root.is_dir():
        raise CatalogError(f"workspace {ws.root} does not exist; run `curate run` first")
    with contextlib.closing(duckdb.connect()) as scratch:
        refresh_catalog(scratch, ws, stages, rebuild="moved")
    for attempt in range(5):
        try:
            conn = duckdb.connect(str(catalog_path(ws)), read_only=True)
            break
        except duckdb.IOException as exc:  # a DuckDB session holding it read-write
            if attempt == 4:
                raise CatalogError(f"cannot open {catalog_path(ws)}: {str(exc).splitlines()[0]}") from None
            time.sleep(0.2 * 2 ** attempt)
    register(conn, ws.lake)  # the views over an object-store lake are read at query time, through fsspec
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
