"""`curate gc`: remove what fully curated drops no longer need, keeping what releases, `curate explain`, the
ledger, takedowns and later drops' dedup read.

A drop is collectable when it is ``current`` (every stage ran with this configuration) and a release read it (its
documents are in a release's shards or release ledger). Its intermediate full-row stages (``raw_documents``,
``normalized``, ``line_deduped``) lose their text columns and keep every other column, so identities,
provenance, explain, takedowns, the catalog and whatif keep working. Kept whole: ``pii_redacted`` (the text the
release ships and near-duplicate verification of later drops reads), every decide-only stage (a few columns per
document), the ledger, the quarantine, the dedup indexes and the token-count cache. The cost: a gc'd drop can be
re-curated only from its landing folder (a changed configuration re-runs it from ``raw_documents``), and
``curate whatif`` on line dedup or normalize settings has no text to preview for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.workspace import Workspace

# Full-row stages whose text is intermediate: later stages rewrote it (pii_redacted keeps the final text).
GC_STAGES = ("raw_documents", "normalized", "line_deduped")


@dataclass
class GcResult:
    drops: list[str] = field(default_factory=list)  # drops collected (or that would be, on a dry run)
    files: int = 0
    freed_bytes: int = 0
    dry_run: bool = False


def released_drops(ws: Workspace) -> set[str]:
    """Drops a published release read: in any release's shards or release ledger."""
    files = [*ws.root.glob("releases/*/shards/*.parquet"), *ws.root.glob("ledger/release/*.parquet")]
    found: set[str] = set()
    for path in files:
        if "drop" in pl.read_parquet_schema(path):
            found |= set(pl.scan_parquet(path).select("drop").unique().collect()["drop"].drop_nulls().to_list())
    return found


def collectable_drops(ws: Workspace, cfg: CurationConfig) -> list[str]:
    """Registered drops that are current and released, in drop order."""
    from curation_platform.pipeline import drop_state

    released = released_drops(ws)
    return [d.name for d in ws.drops() if d.name in released and drop_state(ws, cfg, d.name) == "current"]


def collect_garbage(ws: Workspace, cfg: CurationConfig, dry_run: bool = False,
                    drops: list[str] | None = None) -> GcResult:
    """Remove the intermediate text of ``drops`` (default: every collectable drop). Returns what was freed."""
    from curation_platform.pipeline import drop_state

    result = GcResult(dry_run=dry_run)
    for drop in collectable_drops(ws, cfg) if drops is None else drops:
        if drop_state(ws, cfg, drop) != "current":  # re-checked per drop: a run may have re-ingested it since
            continue
        freed = [ws.remove_text(stage, drop, cfg.engine.batch_rows, dry_run)
                 for stage in GC_STAGES if ws.has_stage(stage, drop)]
        if any(freed):
            result.drops.append(drop)
            result.files += sum(1 for f in freed if f)
            result.freed_bytes += sum(freed)
    return result
