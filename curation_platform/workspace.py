"""The lake: where every stage, ledger, index and release lives, and the registry of drops in their order.

Layout under the workspace directory::

    registry/drops.json               registered drops, in order (registration time, then name)
    stages/<stage>/<drop>.parquet     each stage's kept documents for one drop
    ledger/<stage>/<drop>.parquet     every verdict of that stage on that drop
    quarantine/<drop>.parquet         records that could not be read, with file, line and reason
    index/<name>/<drop>.parquet       persistent dedup indexes, one file set per drop
    tmp/spill/                        out-of-core spill files of a running stage (removed after it)
    cache/tokens/<drop>.parquet       token counts of curated documents, rebuilt when stale
    takedowns.parquet                 documents removed from every future release, with the content hash and
                                      near-dup signature that block their content in drops curated later
    releases/<name>/                  published releases (shards, data card), versioned by DVC
    releases/.staging/<name>/         write-audit-publish staging area
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
from typing import Iterator

import polars as pl

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
    """Write to a temporary name in the same folder, then rename: readers never see half a file."""
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


def write_text_atomic(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
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
    """Paths and small shared state of one workspace directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    # Paths -------------------------------------------------------------------------------------------------
    def stage_path(self, stage: str, drop: str) -> Path:
        return self.root / "stages" / stage / f"{drop}.parquet"

    def ledger_path(self, stage: str, drop: str) -> Path:
        return self.root / "ledger" / stage / f"{drop}.parquet"

    def quarantine_path(self, drop: str) -> Path:
        return self.root / "quarantine" / f"{drop}.parquet"

    def index_path(self, index: str, drop: str) -> Path:
        return self.root / "index" / index / f"{drop}.parquet"

    def cache_path(self, kind: str, drop: str) -> Path:
        """Derived per-drop data that can be rebuilt at any time (token counts)."""
        return self.root / "cache" / kind / f"{drop}.parquet"

    def release_ledger_path(self, release: str) -> Path:
        return self.root / "ledger" / "release" / f"{release}.parquet"

    @property
    def takedowns_path(self) -> Path:
        return self.root / "takedowns.parquet"

    def release_dir(self, name: str) -> Path:
        return self.root / "releases" / name

    def staging_dir(self, name: str) -> Path:
        return self.root / "releases" / ".staging" / name

    @property
    def dagster_home(self) -> Path:
        return self.root / ".dagster"

    def glob(self, kind: str, stage: str) -> str:
        """A DuckDB/Polars glob over one stage's (or ledger's, or index's) files for every drop."""
        return str(self.root / kind / stage / "*.parquet")

    # Reading stage data --------------------------------------------------------------------------------------
    def read_stage(self, stage: str, drop: str) -> pl.DataFrame:
        path = self.stage_path(stage, drop)
        if not path.exists():
            raise CurationError(
                f"stage '{stage}' has no output for drop '{drop}' yet ({path}); materialize it first"
            )
        return pl.read_parquet(path)

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
                    if entry.path != str(Path(path).resolve()):
                        # The landing area moved: read the drop where it is now, keep its place in the order.
                        moved = replace(entry, path=str(Path(path).resolve()))
                        payload = [asdict(moved if e.name == name else e) for e in entries]
                        write_text_atomic(json.dumps(payload, indent=2), self._registry_path)
                        return moved
                    return entry
            entry = DropEntry(
                name=name,
                path=str(Path(path).resolve()),
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
