"""The landing area: which drop folders are ready to read, still settling, empty, without a manifest, or rejected
(bad manifest)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from curation_platform.errors import CurationError, ManifestError
from curation_platform.manifest import (
    MANIFEST_NAME, READY_MARKER, drop_is_ready, last_change, load_manifest, manifest_fingerprint,
)
from curation_platform.storage import AnyPath, as_path, child_folders, is_uri, list_objects
from curation_platform.workspace import check_name

if TYPE_CHECKING:
    from curation_platform.licenses import LicensePolicy


@dataclass
class LandingScan:
    ready: list[tuple[str, Path, str]] = field(default_factory=list)  # (name, path, fingerprint)
    waiting: list[str] = field(default_factory=list)  # still being written: changed within settle_seconds
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, message)
    no_manifest: list[str] = field(default_factory=list)  # settled folders that have no manifest.yaml
    empty: list[str] = field(default_factory=list)  # settled drops with a manifest but no data file
    # Seconds until the next waiting drop may have settled (None when nothing waits).
    settles_in: float | None = None

    def messages(self) -> list[tuple[str, str]]:
        """(name, one-line message) for every folder that will not be read, in name order."""
        lines = [(name, message) for name, message in self.rejected]
        lines += [(name, f"drop '{name}': no {MANIFEST_NAME}; add one (source, kind, license, provenance) to have "
                         "it read") for name in self.no_manifest]
        lines += [(name, f"drop '{name}' is empty: it has a {MANIFEST_NAME} but no data (no file, or only empty files)")
                  for name in self.empty]
        return sorted(lines)


def _has_data_files(folder: AnyPath) -> bool:
    """True when the drop holds at least one non-empty data file (zero-byte files hold no record)."""
    if is_uri(folder):
        return any(not rel.rsplit("/", 1)[-1].startswith(".") and rel not in (MANIFEST_NAME, READY_MARKER)
                   and stat.st_size > 0 for rel, stat in list_objects(folder))
    return any(p.is_file() and not p.name.startswith(".") and p.name not in (MANIFEST_NAME, READY_MARKER)
               and p.stat().st_size > 0 for p in folder.rglob("*"))


def scan_landing(landing: str | Path, settle_seconds: float, policy: LicensePolicy | None = None,
                 now: float | None = None) -> LandingScan:
    """Every drop folder under ``landing`` in name order, sorted into ready, waiting, rejected, no manifest and
    empty. A folder counts as settled when a ``_READY`` marker is present or nothing in it changed during the last
    ``settle_seconds`` before ``now`` (a Unix timestamp, default: the current time). With ``policy``, a drop whose
    generator terms are not in its vocabulary is rejected too. ``landing`` may be an object-store URI
    (``s3://bucket/landing``): drops are the prefixes under it, and an object's LastModified is its change time."""
    scan = LandingScan()
    landing = as_path(landing)
    if is_uri(landing):
        folders = [p for p in child_folders(landing) if not p.name.startswith((".", "_"))]
    elif not landing.is_dir():
        return scan
    else:
        folders = sorted(p for p in landing.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    now = time.time() if now is None else now
    for folder in folders:
        marked = (folder / READY_MARKER).exists()
        age = None if marked else now - last_change(folder)
        if age is not None and age < settle_seconds:
            scan.waiting.append(folder.name)  # still being copied
            wait = settle_seconds - age
            scan.settles_in = wait if scan.settles_in is None else min(scan.settles_in, wait)
            continue
        if not (folder / MANIFEST_NAME).exists():
            scan.no_manifest.append(folder.name)
            continue
        try:
            check_name("drop", folder.name)
            load_manifest(folder, policy)
        except (ManifestError, CurationError) as exc:
            scan.rejected.append((folder.name, str(exc)))
            continue
        if not _has_data_files(folder):
            scan.empty.append(folder.name)
        elif drop_is_ready(folder, settle_seconds, now=now):
            scan.ready.append((folder.name, folder, manifest_fingerprint(folder)))
        else:
            scan.waiting.append(folder.name)
    return scan
