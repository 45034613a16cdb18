"""Release selection: domains, train/validation split, quotas, mixture with up- and down-sampling, token budget and
synthetic-data caps, decided over metadata columns (no text).

The documents that reach selection are the release's candidates (license policy applied, one copy per duplicate
cluster). Selection turns each into *units* (one per epoch it may be repeated) and removes units in steps, each a
cumulative token sum in one fixed rank order compared with a cap:

1. ``selection.quota.<dim>``: per source, license, language and domain, at most ``max_tokens`` or ``max_share``;
2. ``selection.mixture``: per domain, its weight's share of the target total (up-sampled domains repeat whole
   documents, up to the source's maximum epochs; down-sampled ones keep their best documents);
3. ``selection.budget``: the total token budget;
4. ``selection.synthetic_cap``: synthetic tokens per domain and overall at most the configured share.

Each step only removes units, so every earlier cap still holds after a later one. The rank order is: epoch
(fresh documents before repeats), real before synthetic (synthetic data fills room, never replaces real data), best
``quality_score`` first, then a hash of the doc_id seeded with ``release.seed``. A document whose first unit
(epoch 0) is removed is left out of the release with a ledger row naming the step; one whose repeats are removed
just ships fewer epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import polars as pl
import polars_hash as plh
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.records import DROP, verdict_frame

if TYPE_CHECKING:
    from curation_platform.config import CurationConfig, ReleaseConfig

TRAIN, VALIDATION = "train", "validation"
RULE_QUOTA, RULE_MIXTURE, RULE_BUDGET, RULE_SYNTHETIC = (
    "selection.quota", "selection.mixture", "selection.budget", "selection.synthetic_cap")
QUOTA_DIMENSIONS = ("source", "license", "language", "domain")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DomainRule(_Strict):
    """A document belongs to the domain when every listed field matches one of its values (unlisted: any)."""

    kind: list[str] | None = None
    source: list[str] | None = None
    language: list[str] | None = None


class Quota(_Strict):
    """At most ``max_tokens`` and at most ``max_share`` of the reference total (the token budget when one is set,
    else the tokens of every candidate document)."""

    max_tokens: int | None = Field(default=None, ge=0)
    max_share: float | None = Field(default=None, ge=0, le=1)


class SyntheticCap(_Strict):
    """Largest share of synthetic tokens (a drop whose manifest names a `generator`, or `kind: synthetic`)."""

    overall: float | None = Field(default=None, ge=0, lt=1)
    per_domain: dict[str, Annotated[float, Field(ge=0, lt=1)]] = Field(default_factory=dict)


class Curriculum(_Strict):
    """Order documents across shards by a signal: a numeric column of the curated documents (``quality_score``,
    a quality signal) or ``length`` (tokens). ``asc`` runs easy to hard for ``length``; for ``quality_score``,
    ``desc`` starts with the cleanest documents."""

    signal: str = "quality_score"
    order: Literal["asc", "desc"] = "asc"


# ------------------------------------------------------------------------------------------------- domains


def domain_expr(cfg: CurationConfig | ReleaseConfig) -> pl.Expr:
    """The ``domain`` of each document from ``kind``, ``source`` and ``language`` by ``release.domains`` (first
    matching rule in mapping order), else ``release.default_domain``, else the document's kind.

    >>> docs.with_columns(domain_expr(cfg))   # e.g. {code: {kind: [code]}, web-en: {kind: [web], language: [en]}}
    """
    release = getattr(cfg, "release", cfg)
    fallback = (pl.col("kind").cast(pl.String) if release.default_domain is None
                else pl.lit(release.default_domain, dtype=pl.String))
    expr = None
    for name, rule in release.domains.items():
        conditions = [pl.col(column).cast(pl.String).is_in(values).fill_null(False)
                      for column, values in (("kind", rule.kind), ("source", rule.source), ("language", rule.language))
                      if values is not None]
        matches = pl.all_horizontal(conditions) if conditions else pl.lit(True)
        expr = (pl.when(matches) if expr is None else expr.when(matches)).then(pl.lit(name, dtype=pl.String))
    return (fallback if expr is None else expr.otherwise(fallback)).alias("domain")


def synthetic_expr() -> pl.Expr:
    """True for synthetic documents: ingest writes the manifest's ``generator`` into ``provenance``; a drop may also
    say ``kind: synthetic``."""
    generator = pl.col("provenance").str.json_path_match("$.generator.model").is_not_null()
    return (generator.fill_null(False) | (pl.col("kind") == "synthetic").fill_null(False)).alias("synthetic")


def _seeded_fraction(keys: pl.Expr, seed: int) -> pl.Expr:
    """A uniform number in [0, 1) per key, fixed by ``seed`` (XXH3-64 of "seed:key")."""
    return pl.format("{}:{}", pl.lit(str(seed)), keys).map_batches(
        lambda s: pl.DataFrame({"k": s}).select(plh.col("k").nchash.xxh3_64())["k"], return_dtype=pl.UInt64
    ).cast(pl.Float64) / float(2**64)


# ------------------------------------------------------------------------------------------------- split


def split_assignment(docs: pl.DataFrame, pairs: pl.DataFrame | None, fraction: float, seed: int) -> pl.DataFrame:
    """(``doc_id``, ``split``, ``split_group``) for every document of ``docs`` (all curated documents, before
    license and dedup choices).

    Documents are grouped into connected components of the duplicate clusters dedup recorded: same
    ``content_hash`` (exact copies) and verified near pairs (``pairs``: ``doc_id``, ``duplicate_of``), including
    pairs through documents outside ``docs``. A whole component goes to validation when the seeded hash of its
    smallest doc_id falls under ``fraction``, so a validation document's exact and near duplicates are never in
    train (even A~B~C chains whose ends both ship)."""
    ids = docs.select("doc_id").unique()
    edges = []
    if pairs is not None and not pairs.is_empty():
        edges.append(pairs.select(pl.col("doc_id").alias("a"), pl.col("duplicate_of").alias("b")))
    if "content_hash" in docs.columns:
        first = docs.filter(pl.col("content_hash").is_not_null()).group_by("content_hash").agg(
            pl.col("doc_id").min().alias("b"))
        edges.append(docs.join(first, on="content_hash", how="inner").select(pl.col("doc_id").alias("a"), "b"))
    edge_frame = pl.concat(edges) if edges else pl.DataFrame(schema={"a": pl.String, "b": pl.String})
    nodes = pl.concat([ids["doc_id"], edge_frame["a"], edge_frame["b"]]).unique().sort()
    groups = pl.DataFrame({"doc_id": nodes, "split_group": nodes})
    if edge_frame.height:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        index = {"doc_id": nodes, "_i": np.arange(len(nodes))}
        lookup = pl.DataFrame(index)
        coded = (edge_frame.join(lookup.rename({"doc_id": "a", "_i": "_a"}), on="a")
                 .join(lookup.rename({"doc_id": "b", "_i": "_b"}), on="b"))
        graph = coo_matrix((np.ones(coded.height), (coded["_a"].to_numpy(), coded["_b"].to_numpy())),
                           shape=(len(nodes), len(nodes)))
        _, labels = connected_components(graph, directed=False)
        groups = pl.DataFrame({"doc_id": nodes, "_label": labels}).with_columns(
            pl.col("doc_id").min().over("_label").alias("split_group")).drop("_label")
    assigned = ids.join(groups, on="doc_id", how="left").with_columns(
        pl.when(_seeded_fraction(pl.col("split_group"), seed) < fraction)
        .then(pl.lit(VALIDATION)).otherwise(pl.lit(TRAIN)).alias("split"))
    return assigned.select("doc_id", "split", "split_group")


# ------------------------------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """``units``: the selected (document, epoch) rows with ``domain``, ``split``, ``synthetic``, ``epoch``;
    ``verdicts``: one drop row per candidate document left out; ``report``: the card's ``selection`` section."""

    units: pl.DataFrame
    verdicts: pl.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def _with_defaults(docs: pl.DataFrame) -> pl.DataFrame:
    missing = {"source": pl.String, "language": pl.String, "license": pl.String, "kind": pl.String,
               "provenance": pl.String, "quality_score": pl.Float64, "drop": pl.String, "drop_order": pl.Int64}
    return docs.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in missing.items() if c not in docs.columns])


def _cap_step(units: pl.DataFrame, by: str | None, caps: dict[str, int] | int, rule: str,
              why: str, only: pl.Expr | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Keep the rank-order prefix of ``units`` (per ``by`` group) whose cumulative tokens stay within its cap.
    ``only``: the step applies to these units only (the others pass and do not count). ``units`` is in rank
    order (filters keep it)."""
    ordered = units
    scope = pl.lit(True) if only is None else only
    tokens = pl.when(scope).then(pl.col("token_count")).otherwise(0)
    cum = tokens.cum_sum() if by is None else tokens.cum_sum().over(by)
    if isinstance(caps, dict):
        cap = pl.col(by).replace_strict(caps, default=None, return_dtype=pl.Int64)
    else:
        cap = pl.lit(caps, dtype=pl.Int64)
    marked = ordered.with_columns(cum.alias("_cum"), cap.alias("_cap"))
    over = scope & pl.col("_cap").is_not_null() & (pl.col("_cum") > pl.col("_cap"))
    removed = marked.filter(over).with_columns(
        pl.lit(rule).alias("_rule"), pl.format(why, *( [pl.col(by)] if by else [])).alias("_why"))
    return marked.filter(~over).drop("_cum", "_cap"), removed


def _quota_caps(quotas: dict[str, Quota], reference: int) -> dict[str, int]:
    caps = {}
    for value, quota in quotas.items():
        bounds = [b for b in (quota.max_tokens,
                              None if quota.max_share is None else math.floor(quota.max_share * reference))
                  if b is not None]
        if bounds:
            caps[value] = min(bounds)
    return caps


def _synthetic_allowance(real_tokens: int, share: float) -> int:
    """Largest synthetic token count s with s / (real + s) <= share (synthetic added, real never replaced)."""
    return math.floor(share * real_tokens / (1.0 - share) + 1e-9) if share < 1 else real_tokens * 10**9


def select(candidates: pl.DataFrame, cfg: CurationConfig, splits: pl.DataFrame | None = None) -> Selection:
    """Choose the (document, epoch) units of the release from ``candidates`` (one row per document the license
    policy and dedup kept, with ``token_count`` and ``quality_score``). ``splits``: (doc_id, split) from
    :func:`split_assignment` (all train when None). Deterministic given ``release.seed``."""
    rel = cfg.release
    docs = _with_defaults(candidates).with_columns(domain_expr(rel), synthetic_expr(),
                                                   pl.col("token_count").cast(pl.Int64))
    if splits is not None:
        docs = docs.join(splits.select("doc_id", "split"), on="doc_id", how="left")
    docs = docs.with_columns(pl.col("split").fill_null(TRAIN) if "split" in docs.columns
                             else pl.lit(TRAIN).alias("split"))
    # Repeats only serve a mixture (a domain short of its target); validation documents are never repeated.
    epochs = (pl.col("source").replace_strict(rel.source_max_epochs, default=rel.max_epochs, return_dtype=pl.Int64)
              if rel.mixture else pl.lit(1, dtype=pl.Int64))
    docs = docs.with_columns(
        pl.when(pl.col("split") == VALIDATION).then(1).otherwise(epochs).alias("_max_epochs"),
        _seeded_fraction(pl.col("doc_id"), rel.seed).alias("_hash"),
    )
    units = (docs.with_columns(pl.int_ranges(0, pl.col("_max_epochs"), dtype=pl.Int64).alias("epoch"))
             .explode("epoch")
             .sort(["epoch", "synthetic", "quality_score", "_hash", "doc_id"],
                   descending=[False, False, True, False, False], nulls_last=True)
             .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_rank")))
    available = int(docs["token_count"].sum())
    reference = rel.token_budget if rel.token_budget is not None else available
    removed: list[pl.DataFrame] = []

    for dim in QUOTA_DIMENSIONS:
        caps = _quota_caps(rel.quotas.get(dim, {}), reference)
        if caps:
            units, out = _cap_step(units, dim, caps, f"{RULE_QUOTA}.{dim}", f"{dim} {{}} quota (release.quotas.{dim})")
            removed.append(out)

    targets: dict[str, int] = {}
    if rel.mixture:
        fresh = units.filter(pl.col("epoch") == 0)
        weighted = {d: w for d, w in rel.mixture.items() if w > 0}
        natural = int(fresh.filter(pl.col("domain").is_in(list(weighted)))["token_count"].sum())
        total = rel.token_budget if rel.token_budget is not None else natural
        weight_sum = sum(weighted.values())
        targets = {d: math.floor(total * w / weight_sum) for d, w in weighted.items()}
        all_domains = units["domain"].unique().to_list()
        caps = {d: targets.get(d, 0) for d in all_domains}
        units, out = _cap_step(units, "domain", caps, RULE_MIXTURE,
                               "mixture target of domain {} (release.mixture)")
        removed.append(out)

    if rel.token_budget is not None:
        units, out = _cap_step(units, None, rel.token_budget, RULE_BUDGET,
                               "token budget (release.token_budget), spent by better-ranked documents")
        removed.append(out)

    cap_cfg = rel.synthetic_cap
    if cap_cfg.per_domain or cap_cfg.overall is not None:
        real = units.filter(~pl.col("synthetic")).group_by("domain").agg(pl.col("token_count").sum())
        real_by_domain = dict(real.iter_rows())
        if cap_cfg.per_domain:
            allowance = {d: _synthetic_allowance(int(real_by_domain.get(d, 0)), share)
                         for d, share in cap_cfg.per_domain.items()}
            units, out = _cap_step(units, "domain", allowance, RULE_SYNTHETIC,
                                   "synthetic share cap of domain {} (release.synthetic_cap.per_domain)",
                                   only=pl.col("synthetic"))
            removed.append(out)
        if cap_cfg.overall is not None:
            allowance_all = _synthetic_allowance(int(sum(real_by_domain.values())), cap_cfg.overall)
            units, out = _cap_step(units, None, allowance_all, RULE_SYNTHETIC,
                                   "overall synthetic share cap (release.synthetic_cap.overall)",
                                   only=pl.col("synthetic"))
            removed.append(out)

    gone = pl.concat(removed, how="diagonal_relaxed") if removed else units.clear().with_columns(
        pl.lit(None, dtype=pl.Int64).alias("_cum"), pl.lit(None, dtype=pl.Int64).alias("_cap"),
        pl.lit(None, dtype=pl.String).alias("_rule"), pl.lit(None, dtype=pl.String).alias("_why"))
    left_out = gone.filter(pl.col("epoch") == 0)
    verdicts = verdict_frame(left_out.select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.col("_rule").alias("rule"),
        pl.col("_cum").cast(pl.Float64).alias("value"),
        pl.format("> {}", pl.col("_cap")).alias("threshold"),
        pl.format("{} tokens would exceed the {}", pl.col("_cum"), pl.col("_why")).alias("detail"),
    )).sort("doc_id")
    units = units.sort("_rank").drop("_max_epochs", "_hash", "_rank")
    return Selection(units=units, verdicts=verdicts, report=selection_report(docs, units, rel, targets))


def selection_report(docs: pl.DataFrame, units: pl.DataFrame, rel: ReleaseConfig,
                     targets: dict[str, int]) -> dict[str, Any]:
    """Per domain tokens available, target, selected and repeated; per source epochs; synthetic shares; split
    counts. ``docs``: the candidates (one row each); ``units``: the selected (document, epoch) rows."""
    available = docs.group_by("domain").agg(pl.len().alias("available_documents"),
                                            pl.col("token_count").sum().alias("available_tokens"))
    chosen = units.group_by("domain").agg(
        pl.col("doc_id").filter(pl.col("epoch") == 0).len().alias("documents"),
        pl.col("token_count").sum().alias("selected_tokens"),
        pl.col("token_count").filter(pl.col("epoch") > 0).sum().alias("repeated_tokens"),
        pl.col("token_count").filter(pl.col("synthetic")).sum().alias("synthetic_tokens"),
    )
    domains = {}
    joined = available.join(chosen, on="domain", how="full", coalesce=True).with_columns(
        pl.col("domain").fill_null("(none)"))
    for row in joined.sort("domain").iter_rows(named=True):
        selected = int(row["selected_tokens"] or 0)
        synthetic = int(row["synthetic_tokens"] or 0)
        domains[row["domain"]] = {
            "available_documents": int(row["available_documents"] or 0),
            "available_tokens": int(row["available_tokens"] or 0),
            "target_tokens": targets.get(row["domain"]) if rel.mixture else None,
            "documents": int(row["documents"] or 0),
            "selected_tokens": selected,
            "repeated_tokens": int(row["repeated_tokens"] or 0),
            "synthetic_tokens": synthetic,
            "synthetic_share": round(synthetic / selected, 6) if selected else 0.0,
        }
    per_source = units.with_columns(pl.col("source").fill_null("(none)")).group_by("source").agg(
        (pl.col("epoch").max() + 1).alias("max_epochs"),
        pl.col("doc_id").filter(pl.col("epoch") > 0).n_unique().alias("repeated_documents"),
        pl.col("token_count").filter(pl.col("epoch") > 0).sum().alias("repeated_tokens"),
    ).sort("source", nulls_last=True)
    total = int(units["token_count"].sum())
    synthetic_total = int(units.filter(pl.col("synthetic"))["token_count"].sum())
    splits = units.group_by("split").agg(pl.col("doc_id").n_unique().alias("documents"), pl.len().alias("rows"),
                                         pl.col("token_count").sum().alias("tokens"))
    return {
        "seed": rel.seed,
        "token_budget": rel.token_budget,
        "domains": domains,
        "sources": {r["source"]: {"max_epochs": int(r["max_epochs"]), "repeated_documents": int(r["repeated_documents"]),
                                  "repeated_tokens": int(r["repeated_tokens"] or 0)}
                    for r in per_source.iter_rows(named=True)},
        "synthetic": {
            "tokens": synthetic_total,
            "share": round(synthetic_total / total, 6) if total else 0.0,
            "cap_overall": rel.synthetic_cap.overall,
            "cap_per_domain": dict(rel.synthetic_cap.per_domain),
        },
        "splits": {s: {"documents": 0, "rows": 0, "tokens": 0} for s in (TRAIN, VALIDATION)} | {
            r["split"]: {"documents": int(r["documents"]), "rows": int(r["rows"]), "tokens": int(r["tokens"])}
            for r in splits.iter_rows(named=True)},
        "validation_fraction": rel.validation_fraction,
    }


# ------------------------------------------------------------------------------------------------- shard order


def shard_plan(units: pl.DataFrame, rel: ReleaseConfig, signal: pl.Series | None = None) -> pl.DataFrame:
    """The shard of every selected unit and its position in it: ``shard`` (``train-00000.parquet``...) and
    ``_position``. Without a curriculum, shards are cut per drop in drop order and shuffled inside by a seeded
    hash of (doc_id, epoch), so a shard holds one drop's documents; with ``release.curriculum``, each split runs
    epoch by epoch through ``signal`` (aligned with ``units``) in the configured order across all shards."""
    shuffle = _seeded_fraction(pl.format("{}:{}", pl.col("doc_id"), pl.col("epoch")), rel.seed).alias("_shuffle")
    frame = units.with_columns(shuffle)
    if rel.curriculum is None:
        keys, descending, group = ["drop_order", "drop", "_shuffle", "doc_id", "epoch"], False, ["split", "drop"]
        frame = frame.sort(keys, nulls_last=True)
    else:
        frame = frame.with_columns((signal if signal is not None else pl.lit(None)).alias("_signal"))
        descending = rel.curriculum.order == "desc"
        frame = frame.sort(["epoch", "_signal", "_shuffle", "doc_id"],
                           descending=[False, descending, False, False], nulls_last=True)
        group = ["split"]
    frame = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).over("split").alias("_position"))
    # Shard numbers per split; without a curriculum a new shard starts at each drop.
    frame = frame.with_columns(
        (pl.int_range(pl.len(), dtype=pl.Int64).over(group) // rel.shard_max_docs).alias("_chunk"))
    chunk_keys = frame.select("split", *([c for c in group if c != "split"]), "_chunk", "_position").group_by(
        [*group, "_chunk"]).agg(pl.col("_position").min()).sort("split", "_position")
    chunk_keys = chunk_keys.with_columns(
        pl.format("{}-{}.parquet", "split",
                  pl.int_range(pl.len(), dtype=pl.Int64).over("split").cast(pl.String).str.zfill(5)).alias("shard"))
    return frame.join(chunk_keys.drop("_position"), on=[*group, "_chunk"], how="left", nulls_equal=True).drop(
        "_chunk", "_shuffle")
