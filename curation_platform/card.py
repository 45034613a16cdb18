"""The parts of a release's data card beyond the basics in ``release.build_card``: breakdowns by documents and
tokens, per-drop released counts, plots, the Hugging Face dataset-card header, and Markdown for the sections other
parts of the release add (``selection``, ``quality_model``, ``formatting``, ``verification``) whatever their shape.
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl
import yaml

# Optional card sections written by other release steps, rendered when present, in this order.
OPTIONAL_SECTIONS = {
    "selection": "Selection and mixture",
    "quality_model": "Quality model",
    "formatting": "Formatting",
    "verification": "Verification of synthetic code",
}
CARD_PLOTS = ("lengths", "scores", "removals", "mixture")
# Hugging Face size_categories buckets (the Hub's dataset-card metadata vocabulary).
_SIZE_BUCKETS = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                 (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                 (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]
_SHARD_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-\d+\.parquet$")


def breakdown(selected: pl.DataFrame, column: str) -> list[dict[str, Any]]:
    """Documents and tokens per value of ``column`` (null as "unknown"), most tokens first."""
    if selected.is_empty() or column not in selected.columns:
        return []
    return (selected.group_by(pl.col(column).fill_null("unknown"))
            .agg(pl.len().alias("documents"), pl.col("token_count").sum().cast(pl.Int64).alias("tokens"))
            .sort(["tokens", column], descending=[True, False]).to_dicts())


def per_drop(docs: pl.DataFrame, selected: pl.DataFrame, verdicts: pl.DataFrame) -> list[dict[str, Any]]:
    """Per curated drop: documents curated (final stage, minus takedowns), released (documents, tokens) and left out
    by the release per rule. curated = released + sum(left out) for every drop."""
    if docs.is_empty():
        return []
    curated = docs.group_by("drop").agg(pl.len().alias("curated"), pl.col("drop_order").first())
    released = selected.group_by("drop").agg(pl.len().alias("released"),
                                             pl.col("token_count").sum().cast(pl.Int64).alias("released_tokens"))
    removed = (verdicts.filter(pl.col("verdict") == "drop").join(docs.select("doc_id", "drop"), on="doc_id")
               .group_by("drop", "rule").len().sort("rule")
               .group_by("drop").agg(pl.struct("rule", "len").alias("left_out")))
    rows = (curated.join(released, on="drop", how="left").join(removed, on="drop", how="left")
            .sort("drop_order").drop("drop_order")
            .with_columns(pl.col("released", "released_tokens").fill_null(0)))
    return [{**r, "released": int(r["released"]), "released_tokens": int(r["released_tokens"]),
             "left_out": {x["rule"]: int(x["len"]) for x in (r["left_out"] or [])}} for r in rows.to_dicts()]


def _hf_license(spdx: str) -> str:
    """A license as the Hub names it: SPDX ids in lower case (``apache-2.0``, ``cc-by-4.0``); expressions and
    ``LicenseRef-`` ids are ``other``."""
    value = spdx.strip().lower()
    return "other" if (" " in value or value.startswith("licenseref") or not value) else value


def _size_category(documents: int) -> str:
    return next((label for bound, label in _SIZE_BUCKETS if documents < bound), "n>1T")


def data_files(shards: list[str]) -> list[dict[str, str]]:
    """``configs[0].data_files`` for the shard files: one split per file-name prefix (``train-00000.parquet`` ->
    split ``train``, path ``shards/train-*.parquet``); shards named ``shard-NNNNN`` (no split) form ``train``."""
    splits: dict[str, str] = {}
    for name in sorted(shards):
        match = _SHARD_NAME.match(name)
        if match:
            prefix = match["split"]
            splits.setdefault("train" if prefix == "shard" else prefix, f"shards/{prefix}-*.parquet")
    order = sorted(splits, key=lambda s: (s != "train", s != "validation", s))
    return [{"split": s, "path": splits[s]} for s in order]


def hf_header(card: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face dataset-card metadata (YAML front matter of the release's README.md), so the release folder
    can be pushed to the Hub as a dataset as is."""
    licenses = sorted({_hf_license(l["license"]) for l in card.get("licenses", [])})
    # Natural languages only (ISO 639 codes from lid.176); code documents carry programming languages.
    languages = sorted({l["language"] for l in card.get("languages", [])
                        if re.fullmatch(r"[a-z]{2,3}", str(l["language"])) and l["language"] != "unknown"})
    kinds = sorted(k["kind"] for k in card.get("kinds", []))
    tags = sorted({"curation_platform", *kinds, *(["synthetic"] if card.get("generators") else [])})
    header: dict[str, Any] = {
        "pretty_name": card.get("pretty_name") or f"{card['name']} ({card['profile']} profile)",
        "license": licenses,  # always a list (the Hub accepts one or more), so every card has one shape
        "language": languages,
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(card["documents"])],
        "tags": tags,
        "configs": [{"config_name": "default", "data_files": data_files(card.get("shards", []))}],
    }
    if "other" in licenses:
        header["license_name"] = "see-data-card"  # the Hub asks for a name when the license is `other`
    return header


def front_matter(header: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n"


def selection_per_domain(selection: Any) -> list[dict[str, Any]]:
    """(domain, available, selected) token numbers from the selection report's per-domain table
    (``domains`` or ``per_domain``: an object of objects or a list of objects), taking the first numeric field
    whose name contains ``available`` and ``selected``; empty when the report has no such table."""
    table = (selection.get("domains") or selection.get("per_domain")) if isinstance(selection, dict) else None
    if isinstance(table, dict):
        rows = [{"domain": k, **v} for k, v in table.items() if isinstance(v, dict)]
    else:
        rows = [r for r in table or [] if isinstance(r, dict)]

    def pick(row: dict[str, Any], word: str) -> float | None:
        return next((v for k, v in row.items() if word in k and isinstance(v, (int, float))), None)

    found = [{"domain": str(r.get("domain", r.get("name", ""))), "available": pick(r, "available"),
              "selected": pick(r, "selected")} for r in rows]
    return [r for r in found if r["available"] is not None and r["selected"] is not None]


def card_plots(card: dict[str, Any], selected: pl.DataFrame) -> dict[str, bytes]:
    """PNG plots of a release: token lengths and quality scores of the released documents (per kind), documents
    removed per stage (the release's own rules as one bar), the mixture (token share per domain, or per kind
    when documents have no domain) and, when the selection report has them, tokens available and selected per
    domain."""
    from curation_platform import plots

    def per_kind(column: str) -> dict[str, list]:
        if selected.is_empty() or column not in selected.columns:
            return {}
        return {k: g[column].to_list() for (k,), g in selected.sort("kind").group_by("kind", maintain_order=True)}

    stages = card.get("stages", [])
    removed = [s["dropped"] + s["quarantined"] for s in stages]
    mixture = card.get("domains") or card.get("kinds", [])
    mix_label = "domain" if card.get("domains") else "kind"
    total = sum(r["tokens"] for r in mixture) or 1
    per_domain = selection_per_domain(card.get("selection"))
    extra = {"selection": plots.bars([r["domain"] for r in per_domain],
                                     {"available": [r["available"] for r in per_domain],
                                      "selected": [r["selected"] for r in per_domain]},
                                     "Selection per domain", "tokens")} if per_domain else {}
    return {
        "lengths": plots.histogram(per_kind("token_count"), "Tokens per released document", "tokens (log scale)",
                                   log_x=True),
        "scores": plots.histogram(per_kind("quality_score"), "Quality score of released documents", "quality_score"),
        "removals": plots.bars([s["stage"] for s in stages] + ["release"],
                               {"documents removed": removed + [sum(card.get("release_removals", {}).values())]},
                               "Documents removed per stage (all drops)", "documents"),
        "mixture": plots.bars([r[mix_label] for r in mixture],
                              {"token share": [r["tokens"] / total for r in mixture],
                               "document share": [r["documents"] / max(card["documents"], 1) for r in mixture]},
                              f"Mixture by {mix_label}", "share of the release"),
        **extra,
    }


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    elif isinstance(value, (list, dict)):
        value = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return ("" if value is None else str(value)).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict[str, Any]], first: str | None = None) -> list[str]:
    """A Markdown table of ``rows``: the ``first`` column, then the others by name."""
    columns = ([first] if first else []) + sorted({k for r in rows for k in r} - {first})
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(_scalar(r.get(c)) for c in columns) + " |" for r in rows)]


def render_value(value: Any, level: int = 3) -> list[str]:
    """Markdown for a JSON value of unknown shape: scalars as bullets, a list of objects or an object of objects
    as a table, anything deeper as sub-sections."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return table(value)
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) and not any(isinstance(x, dict) for x in v.values())
                         for v in value.values()):
            return table([{"name": k, **v} for k, v in value.items()], first="name")
        lines, nested = [], []
        for key, item in value.items():
            if isinstance(item, dict) or (isinstance(item, list) and item and isinstance(item[0], dict)):
                nested += ["", f"{'#' * min(level, 6)} {key}", "", *render_value(item, level + 1)]
            else:
                lines.append(f"- {key}: {_scalar(item)}")
        return lines + nested
    return [f"- {_scalar(value)}"]


def optional_sections(card: dict[str, Any]) -> list[str]:
    """Markdown for the optional card keys that are present (absent ones are skipped)."""
    lines: list[str] = []
    for key, title in OPTIONAL_SECTIONS.items():
        if card.get(key) not in (None, {}, []):
            lines += ["", f"## {title}", "", *render_value(card[key])]
    return lines
