"""Where files live: a local path, or an object-store URI (``s3://bucket/prefix``) opened through fsspec.

Local paths stay plain ``pathlib.Path`` objects and take exactly the code paths they always took. A URI becomes an
``ObjectPath``: the URI string itself (so Polars, DuckDB and f-strings take it as they take a path string) with the
``/``, ``exists``, ``stat``, ``open``, ``read_bytes`` and ``glob`` of a ``Path``, served by the fsspec filesystem
of its scheme (s3fs for ``s3://``). Object-store specifics live here:

* Endpoint and credentials come from the standard environment variables (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), which s3fs, Polars' native reader
  and DVC's ``dvc-s3`` all read, so every tool sees the same store. ``CURATION_STORAGE_OPTIONS`` (a JSON object)
  adds fsspec options for our own reads and writes.
* Writes are atomic for a reader: an object appears only when its upload completes (one PUT, or the completion
  of a multipart upload), so no temporary name and rename is needed (S3 has no rename).
* DuckDB reads URIs through the same filesystem (``register_filesystem``): the httpfs extension would be
  downloaded at run time, which is not allowed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Self, Union

if TYPE_CHECKING:
    import duckdb
    import fsspec
    import polars as pl

AnyPath = Union[Path, "ObjectPath"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: object) -> bool:
    """True for an object-store location (``s3://...``, an ObjectPath); False for local paths and
    ``file://``."""
    if isinstance(location, Path):
        return False
    text = str(location)
    return bool(_URI.match(text)) and not text.startswith("file://")


def storage_options() -> dict[str, Any]:
    """fsspec options for object stores: ``CURATION_STORAGE_OPTIONS`` (JSON) plus the endpoint of
    ``AWS_ENDPOINT_URL`` (also read by botocore itself; passed explicitly so older clients agree)."""
    options: dict[str, Any] = json.loads(os.environ.get("CURATION_STORAGE_OPTIONS") or "{}")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in options:
        options["endpoint_url"] = endpoint
    return options


class ObjectPath(str):
    """An object-store location that is at once its URI string, so Polars, DuckDB and f-strings read it as they
    read a local path string, and a path with the ``pathlib`` methods the workspace code uses, served by fsspec
    (the scheme's filesystem: s3fs for ``s3://``). Immutable like ``Path``; ``/`` joins with ``/``."""

    __slots__ = ()

    def __new__(cls, uri: str) -> Self:
        scheme, _, rest = str(uri).partition("://")
        return super().__new__(cls, f"{scheme}://{rest.rstrip('/')}")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The scheme's fsspec filesystem (one instance per set of options, cached by fsspec)."""
        from fsspec.core import url_to_fs

        # Listings are not cached: the landing sensor must see objects written since its last tick.
        return url_to_fs(str(self), use_listings_cache=False, **storage_options())[0]

    @property
    def key(self) -> str:
        """The location as the filesystem names it (``bucket/key`` for S3)."""
        return str(self).partition("://")[2]

    # Pure path operations ---------------------------------------------------------------------------------
    def __truediv__(self, other: str) -> ObjectPath:
        return ObjectPath(f"{self}/{str(other).strip('/')}")

    def joinpath(self, *others: str) -> ObjectPath:
        path = self
        for other in others:
            path = path / other
        return path

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parent(self) -> ObjectPath:
        head = self.key.rsplit("/", 1)[0] if "/" in self.key else self.key
        return ObjectPath(f"{str(self).partition('://')[0]}://{head}")

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> ObjectPath:
        return self.parent / (Path(self.name).with_suffix(suffix).name)

    def relative_to(self, other: str) -> PurePosixPath:
        return PurePosixPath(self.key).relative_to(ObjectPath(other).key)

    def resolve(self) -> ObjectPath:
        return self

    def expanduser(self) -> ObjectPath:
        return self

    def as_posix(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    # Store operations -------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.fs.exists(self.key)

    def is_file(self) -> bool:
        return self.fs.isfile(self.key)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.key)

    def stat(self) -> ObjectStat:
        return _object_stat(self.fs.info(self.key))

    def open(self, mode: str = "rb", **kwargs: Any):
        return self.fs.open(self.key, mode, **kwargs)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        self.fs.pipe_file(self.key, data)  # one PUT: readers see the old object or the new one
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a prefix exists once an object is under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        self.fs.rm_file(self.key)

    def iterdir(self) -> list[ObjectPath]:
        return [self / info["name"].rstrip("/").rsplit("/", 1)[-1] for info in self.fs.ls(self.key, detail=True)]

    def glob(self, pattern: str) -> list[ObjectPath]:
        scheme = str(self).partition("://")[0]
        return sorted(ObjectPath(f"{scheme}://{key}") for key in self.fs.glob(f"{self.key}/{pattern}"))


def as_path(location: str | os.PathLike) -> AnyPath:
    """A ``Path`` for a local location, an ``ObjectPath`` for a URI; either kind passes through unchanged."""
    if isinstance(location, (Path, ObjectPath)):
        return location
    return ObjectPath(str(location)) if is_uri(location) else Path(location)


def location(path: str | os.PathLike) -> str:
    """The string to store for a path: the absolute path locally, the URI (``s3://bucket/key``) remotely."""
    path = as_path(path)
    return str(path) if is_uri(path) else str(path.resolve())


@dataclass(frozen=True)
class ObjectStat:
    """What the landing rules need of an object, shaped like ``os.stat_result``."""

    st_size: int
    st_mtime_ns: int
    st_mode: int = stat_module.S_IFREG | 0o644
    etag: str = ""

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9


def _object_stat(info: dict) -> ObjectStat:
    return ObjectStat(int(info.get("size") or 0), _mtime_ns(info), etag=str(info.get("ETag") or "").strip('"'))


def _mtime_ns(info: dict) -> int:
    modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if modified is None:
        return 0
    if hasattr(modified, "timestamp"):
        return int(modified.timestamp() * 1_000_000) * 1000
    return int(float(modified) * 1e9)


def list_objects(folder: AnyPath) -> list[tuple[str, ObjectStat]]:
    """(relative posix path, stat) of every object under a URI prefix, sorted, from one recursive listing (S3
    ``LastModified`` is the modification time). Object stores have no folders, links or devices."""
    fs, prefix = folder.fs, folder.key
    fs.invalidate_cache(prefix)
    found = fs.find(prefix, detail=True, withdirs=False)
    entries = []
    for key, info in found.items():
        rel = key[len(prefix):].lstrip("/")
        if rel and info.get("type") != "directory":
            entries.append((rel, _object_stat(info)))
    return sorted(entries)


def child_folders(folder: AnyPath) -> list[AnyPath]:
    """The immediate sub-prefixes ("folders") of a URI prefix, in name order."""
    fs, prefix = folder.fs, folder.key
    fs.invalidate_cache(prefix)
    if not fs.exists(prefix):
        return []
    names = sorted(info["name"].rstrip("/").rsplit("/", 1)[-1] for info in fs.ls(prefix, detail=True)
                   if info.get("type") == "directory")
    return [folder / name for name in names]


# Writing ----------------------------------------------------------------------------------------------------------
def write_parquet(frame: pl.DataFrame, path: ObjectPath) -> ObjectPath:
    """Upload a frame as one Parquet object (visible only once the upload completes), with the same fixed
    compression and statistics as local files, so the bytes are identical."""
    with path.open("wb") as handle:
        frame.write_parquet(handle, compression="zstd", compression_level=3, statistics=True)
    return path


def remove_tree(path: AnyPath) -> None:
    """Delete a folder (or prefix) and everything under it; nothing happens when it is absent."""
    if not is_uri(path):
        if path.exists():
            shutil.rmtree(path)
        return
    fs = path.fs
    if fs.exists(path.key):
        fs.rm(path.key, recursive=True)
    fs.invalidate_cache(path.key)


def move_tree(source: AnyPath, target: AnyPath) -> None:
    """Rename a folder locally. An object store has no rename: every object is copied under ``target``, then
    ``source`` is deleted (readers see whole objects, never half of one)."""
    if not is_uri(source):
        source.rename(target)
        return
    fs = source.fs
    # Sub-folders first, top-level objects last: a release's data card and shard index appear after its shards.
    for rel in sorted((rel for rel, _ in list_objects(source)), key=lambda rel: ("/" not in rel, rel)):
        fs.copy(f"{source.key}/{rel}", f"{target.key}/{rel}")
    remove_tree(source)
    fs.invalidate_cache(target.key)


# DuckDB -----------------------------------------------------------------------------------------------------------
def register(con: duckdb.DuckDBPyConnection, *paths: object) -> None:
    """Let ``con`` read the URIs among ``paths`` through their fsspec filesystem (no httpfs download)."""
    import duckdb

    seen: set[int] = set()
    for path in paths:
        if is_uri(path):
            fs = as_path(path).fs
            if id(fs) in seen:
                continue
            seen.add(id(fs))
            try:
                con.register_filesystem(fs)
            except duckdb.InvalidInputException:  # this connection already reads through it
                pass


# Arrow ------------------------------------------------------------------------------------------------------------
def arrow_filesystem(path: AnyPath) -> tuple[object | None, str]:
    """``(pyarrow filesystem, path on it)`` for readers that take a pyarrow filesystem (Ray Data, pyarrow.dataset):
    ``(None, path)`` locally, the fsspec filesystem wrapped for pyarrow and the ``bucket/key`` path for a URI."""
    if not is_uri(path):
        return None, str(path)
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    path = as_path(path)
    return PyFileSystem(FSSpecHandler(path.fs)), path.key
