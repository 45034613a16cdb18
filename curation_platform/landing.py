"""The landing area: which drop folders are ready to read, still settling, or rejected (bad manifest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curation_platform.errors import CurationError, ManifestError
from curation_platform.manifest import drop_is_ready, load_manifest, manifest_fingerprint
from curation_platform.workspace import check_name


@dataclass
class LandingScan:
    ready: list[tuple[str, Path, str]] = field(default_factory=list)  # (name, path, fingerprint)
    waiting: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, message)


def scan_landing(landing: Path, settle_seconds: float) -> LandingScan:
    """Every drop folder under ``landing`` in name order, sorted into ready, waiting and rejected."""
    scan = LandingScan()
    if not landing.is_dir():
        return scan
    for folder in sorted(p for p in landing.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if not (folder / "manifest.yaml").exists() and not (folder / "_READY").exists():
            scan.waiting.append(folder.name)  # still being copied: no manifest yet
            continue
        try:
            check_name("drop", folder.name)
            load_manifest(folder)
        except (ManifestError, CurationError) as exc:
            scan.rejected.append((folder.name, str(exc)))
            continue
        if drop_is_ready(folder, settle_seconds):
            scan.ready.append((folder.name, folder, manifest_fingerprint(folder)))
        else:
            scan.waiting.append(folder.name)
    return scan
