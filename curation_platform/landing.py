"""The landing area: which drop folders are ready to read, still settling, or rejected (bad manifest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from curation_platform.errors import CurationError, ManifestError
from curation_platform.manifest import drop_is_ready, load_manifest, manifest_fingerprint
from curation_platform.workspace import check_name

if TYPE_CHECKING:
    from curation_platform.licenses import LicensePolicy


@dataclass
class LandingScan:
    ready: list[tuple[str, Path, str]] = field(default_factory=list)  # (name, path, fingerprint)
    waiting: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, message)


def scan_landing(landing: Path, settle_seconds: float, policy: LicensePolicy | None = None) -> LandingScan:
    """Every drop folder under ``landing`` in name order, sorted into ready, waiting and rejected. With ``policy``,
    a drop whose generator terms are not in its vocabulary is rejected too."""
    scan = LandingScan()
    if not landing.is_dir():
        return scan
    for folder in sorted(p for p in landing.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if not (folder / "manifest.yaml").exists() and not (folder / "_READY").exists():
            scan.waiting.append(folder.name)  # still being copied: no manifest yet
            continue
        try:
            check_name("drop", folder.name)
            load_manifest(folder, policy)
        except (ManifestError, CurationError) as exc:
            scan.rejected.append((folder.name, str(exc)))
            continue
        if drop_is_ready(folder, settle_seconds):
            scan.ready.append((folder.name, folder, manifest_fingerprint(folder)))
        else:
            scan.waiting.append(folder.name)
    return scan
