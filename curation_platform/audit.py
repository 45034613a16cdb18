"""What each gate checks, per stage and for the release. ``gates`` runs the suites; this module picks the columns
and aggregates to validate and the bounds from ``curation.yaml``."""

from __future__ import annotations

import functools

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.gates import GateResult, identity_expectations, max_value_expectation, validate
from curation_platform.ledger import DECIDING, read_ledger
from curation_platform.records import KEEP
from curation_platform.workspace import Workspace

ID_COLUMNS = ["doc_id", "source", "drop", "source_id", "license", "kind"]


def _deciding_rows(path) -> pl.DataFrame:
    """(doc_id, verdict) of a ledger file's deciding rows; annotation rows (redact, flag) do not decide."""
    if not path.exists():
        return pl.DataFrame(schema={"doc_id": pl.String, "verdict": pl.String})
    return pl.read_parquet(path, columns=["doc_id", "verdict"]).filter(pl.col("verdict").is_in(DECIDING))


def reconciliation_counts(ws: Workspace, stage: str, upstream: str | None, drop: str,
                         output_ids: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row of counts proving, from the LEDGER rows (never the operator's own counters), that every document
    entering ``stage`` has exactly one deciding row there and that nothing appeared from elsewhere.

    The documents entering a stage are the upstream stage's ``keep`` rows; for the first stage (no upstream),
    the records it wrote plus the records it quarantined. Columns: ``input`` (documents entering),
    ``deciding_rows`` (keep/drop/quarantine rows of this stage), ``accounted`` (entering documents with exactly
    one deciding row), ``unexpected`` (documents with a deciding row that never entered), ``kept`` (keep rows),
    ``output_rows`` (rows of the stage output), ``output_mismatch`` (documents kept but not in the output, or in
    the output but not kept) and ``removal_rate``. They reconcile when accounted = deciding_rows = input,
    unexpected = 0, kept = output_rows and output_mismatch = 0.
    """
    here = _deciding_rows(ws.ledger_path(stage, drop))
    if output_ids is None:
        output_ids = pl.read_parquet(ws.stage_path(stage, drop), columns=["doc_id"])
    if upstream is None:
        quarantined = (pl.read_parquet(ws.quarantine_path(drop), columns=["doc_id"])
                       if ws.quarantine_path(drop).exists() else output_ids.clear())
        entering = pl.concat([output_ids, quarantined]).unique()
    else:
        entering = _deciding_rows(ws.ledger_path(upstream, drop)).filter(pl.col("verdict") == KEEP).select(
            "doc_id").unique()
    per_doc = here.group_by("doc_id").agg(pl.len().alias("rows"))
    kept_ids = here.filter(pl.col("verdict") == KEEP).select("doc_id").unique()
    accounted = entering.join(per_doc.filter(pl.col("rows") == 1), on="doc_id", how="semi").height
    unexpected = per_doc.join(entering, on="doc_id", how="anti").height
    output_mismatch = (output_ids.unique().join(kept_ids, on="doc_id", how="anti").height
                       + kept_ids.join(output_ids, on="doc_id", how="anti").height)
    kept = int((here["verdict"] == KEEP).sum())
    return pl.DataFrame({
        "input": [entering.height],
        "deciding_rows": [here.height],
        "accounted": [accounted],
        "unexpected": [unexpected],
        "kept": [kept],
        "output_rows": [output_ids.height],
        "output_mismatch": [output_mismatch],
        "removal_rate": [(entering.height - kept) / entering.height if entering.height else 0.0],
    })


def _reconciliation_expectations(max_removal_rate: float) -> list:
    import great_expectations as gx

    equal = gx.expectations.ExpectColumnPairValuesToBeEqual
    return [
        equal(column_A="accounted", column_B="input"),  # an entering document with no row, or with two
        equal(column_A="deciding_rows", column_B="input"),  # a duplicated or extra row
        max_value_expectation("unexpected", 0),  # a row for a document that never entered the stage
        equal(column_A="kept", column_B="output_rows"),
        max_value_expectation("output_mismatch", 0),
        gx.expectations.ExpectColumnValuesToBeBetween(column="removal_rate", min_value=0.0,
                                                      max_value=max_removal_rate),
    ]


def stage_gate(ws: Workspace, cfg: CurationConfig, stage: str, upstream: str | None, drop: str,
               residual: pl.DataFrame | None = None) -> list[GateResult]:
    """Schema and ids of the stage output, reconciliation from the ledger and removal rate, plus the stage's own
    checks on ``residual`` (a per-document frame with the columns the stage-specific expectation names)."""
    output = pl.read_parquet(ws.stage_path(stage, drop), columns=ID_COLUMNS)
    results = [validate(f"{stage}.identity", output, identity_expectations(ID_COLUMNS))]
    bound = cfg.gates.max_removal_rate.get(stage, 1.0)
    counts = reconciliation_counts(ws, stage, upstream, drop, output.select("doc_id"))
    results.append(validate(f"{stage}.reconciliation", counts, _reconciliation_expectations(bound)))
    if residual is not None:
        results.append(validate(f"{stage}.residual", residual,
                                [max_value_expectation(c, 0) for c in residual.columns if c != "doc_id"]))
    return results


def cluster_sizes(ws: Workspace, drop: str) -> pl.DataFrame:
    """Per near-duplicate cluster the drop's stage recorded: the distinct documents in its verified pairs (both
    ends, this drop's and other drops'), counted from the ledger rather than the stage's own metrics."""
    pairs = read_ledger(ws, drop).filter(
        (pl.col("stage") == "near_deduped") & (pl.col("rule") == "near_dedup.duplicate")
        & pl.col("cluster_id").is_not_null()
    )
    members = pl.concat([pairs.select("cluster_id", "doc_id"),
                         pairs.select("cluster_id", pl.col("duplicate_of").alias("doc_id"))])
    return members.group_by("cluster_id").agg(pl.col("doc_id").n_unique().alias("cluster_size")).select(
        pl.col("cluster_id").alias("doc_id"), pl.col("cluster_size").cast(pl.Int64)
    ).sort("doc_id")


def near_dedup_gate(ws: Workspace, cfg: CurationConfig, drop: str) -> GateResult:
    sizes = cluster_sizes(ws, drop)
    if sizes.is_empty():
        sizes = pl.DataFrame({"doc_id": ["-"], "cluster_size": [1]})
    return validate("near_deduped.cluster_size", sizes,
                    [max_value_expectation("cluster_size", cfg.near_dedup.max_cluster_size)])


@functools.lru_cache(maxsize=1)
def _spdx_licensing():
    """license-expression's own SPDX Licensing (``build_spdx_licensing``) over the bundled ScanCode database: the
    library's parser and symbol table, not the normalizer that labelled the documents at ingest."""
    from license_expression import build_spdx_licensing

    from curation_platform.licenses import scancode_licenses

    return build_spdx_licensing([
        {"license_key": e.key, "spdx_license_key": e.spdx, "other_spdx_license_keys": list(e.other_ids),
         "is_exception": e.is_exception, "is_deprecated": e.is_deprecated}
        for e in scancode_licenses().values()
    ])


def release_license_audit(shard_glob: str, allowed_categories: list[str]) -> pl.DataFrame:
    """Per distinct license of the shards matching ``shard_glob``: ``license``, ``documents`` and ``violation``
    (null when the license may ship under ``allowed_categories``, else why not).

    Independent of the selection (which used ``licenses.license_allowed``): the ``license`` column is read with
    DuckDB, each distinct value is parsed by ``license_expression``'s own SPDX Licensing, and each license id's
    category is looked up in the ScanCode database (``licenses.scancode_licenses``) through the documented
    ScanCode-to-platform mapping. "A OR B" may ship when one side may, "A AND B" when both may; an exception
    (WITH) leaves its license's category.
    """
    import duckdb
    from license_expression import ExpressionError, LicenseSymbol, LicenseWithExceptionSymbol

    from curation_platform.licenses import platform_category, scancode_licenses

    from curation_platform.storage import register

    with duckdb.connect() as con:
        register(con, shard_glob)  # staged shards in object storage are read through fsspec
        per_license = con.sql(
            "SELECT license, count(*) AS documents FROM read_parquet(?) GROUP BY license ORDER BY license NULLS FIRST",
            params=[shard_glob],
        ).pl()
    licensing = _spdx_licensing()
    database = scancode_licenses()
    allowed = frozenset(allowed_categories)

    def categories(node) -> tuple[bool, list[str]]:
        """(may ship, categories of the ids deciding that)."""
        if isinstance(node, LicenseWithExceptionSymbol):
            node = node.license_symbol
        if isinstance(node, LicenseSymbol):
            entry = database.get(node.key)
            category = "not in the ScanCode database" if entry is None else platform_category(entry)
            return category in allowed, [f"{node.key}: {category}"]
        sides = [categories(arg) for arg in node.args]
        ok = all(s[0] for s in sides) if isinstance(node, licensing.AND) else any(s[0] for s in sides)
        return ok, [c for s in sides for c in s[1]]

    def violation(value: str | None) -> str | None:
        if value is None:
            return "license missing"
        try:
            parsed = licensing.parse(value, validate=True, strict=True)
        except (ExpressionError, IndexError) as error:  # IndexError: license-expression on an empty "( )"
            return f"license {value!r} does not parse as SPDX ({error or type(error).__name__})"
        if parsed is None:
            return f"license {value!r} is empty"
        ok, found = categories(parsed)
        return None if ok else f"{value} ({', '.join(found)}) not in [{', '.join(allowed_categories)}]"

    return per_license.with_columns(
        pl.Series("violation", [violation(v) for v in per_license["license"].to_list()], dtype=pl.String)
    )


def release_gate(cfg: CurationConfig, staging_dir, residual: pl.DataFrame) -> list[GateResult]:
    """The audit step of write-audit-publish, over the staged shards: ids, licenses inside the profile (audited
    independently of the selection, see ``release_license_audit``), and the per-document ``residual`` columns
    (benchmark overlap, PII) at zero."""
    import great_expectations as gx

    shard_glob = str(staging_dir / "shards" / "*.parquet")
    shards = pl.read_parquet(shard_glob, columns=ID_COLUMNS)
    profile = cfg.licenses.profiles[cfg.release.profile]
    licenses = release_license_audit(shard_glob, list(profile.allowed_categories))
    return [
        # An empty candidate would replace the previous release with nothing.
        validate("release.identity", shards, [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
                                              *identity_expectations(ID_COLUMNS)]),
        validate("release.license_policy", licenses,
                 [gx.expectations.ExpectColumnValuesToBeNull(column="violation")]),
        validate("release.residual", residual, [max_value_expectation(c, 0) for c in residual.columns if c != "doc_id"]),
    ]


# Residue each gate re-scans for independently: the stage's own output must leave these at zero.
_RESIDUE_BY_STAGE = {"pii_redacted": ("residual_pii",), "decontaminated": ("benchmark_overlap",)}


def residue(docs: pl.DataFrame, cfg: CurationConfig, checks: tuple[str, ...]) -> pl.DataFrame:
    """Per document (``doc_id``, ``text`` in ``docs``): remaining PII hits and/or benchmark items it still contains
    (re-scanned by ``benchmark_residue``'s own DuckDB implementation, not by the stage's code)."""
    from curation_platform.benchmark_residue import benchmark_items, contaminating_items
    from curation_platform.ops.pii import scan_pii

    columns = {"doc_id": docs["doc_id"]}
    if "residual_pii" in checks:
        languages = docs["language"] if "language" in docs.columns else None
        columns["residual_pii"] = scan_pii(docs["text"], cfg.pii, languages)["total"].cast(pl.Int64)
    if "benchmark_overlap" in checks:
        columns["benchmark_overlap"] = contaminating_items(
            docs["text"], benchmark_items(cfg.decontamination), cfg.decontamination).cast(pl.Int64)
    return pl.DataFrame(columns, schema={"doc_id": pl.String, **{c: pl.Int64 for c in checks}})


def _text_columns(path) -> list[str]:
    """``doc_id``, ``text`` and, when the file has it, ``language`` (it chooses the phone regions of the scan)."""
    return ["doc_id", "text", *(["language"] if "language" in pl.read_parquet_schema(path) else [])]


def stage_residue(ws: Workspace, cfg: CurationConfig, stage: str, drop: str) -> pl.DataFrame | None:
    """The residue frame a stage's gate validates, or None for stages without one.

    For ``pii_redacted`` it also carries ``residual_rate_above_bound``: how far the share of the drop dropped as
    ``pii.residual`` exceeds ``gates.max_residual_pii_rate`` (0 when within the bound)."""
    checks = _RESIDUE_BY_STAGE.get(stage)
    if checks is None:
        return None
    path = ws.stage_path(stage, drop)
    frame = residue(pl.read_parquet(path, columns=_text_columns(path)), cfg, checks)
    if stage == "pii_redacted":
        excess = _residual_pii_excess(ws, cfg, drop)
        frame = frame.with_columns(residual_rate_above_bound=pl.lit(excess))
        if frame.is_empty():  # every document dropped: the rate still has to be checked
            frame = pl.DataFrame({"doc_id": ["-"], "residual_pii": [0], "residual_rate_above_bound": [excess]},
                                 schema=frame.schema)
    return frame


def _residual_pii_excess(ws: Workspace, cfg: CurationConfig, drop: str) -> float:
    from curation_platform.ops.pii import RESIDUAL_RULE

    rows = pl.read_parquet(ws.ledger_path("pii_redacted", drop), columns=["verdict", "rule"])
    decided = rows.filter(pl.col("verdict").is_in(DECIDING))
    residual = int((decided["rule"] == RESIDUAL_RULE).sum())
    rate = residual / decided.height if decided.height else 0.0
    return round(max(0.0, rate - cfg.gates.max_residual_pii_rate), 6)


def release_residue(cfg: CurationConfig, staging_dir) -> pl.DataFrame:
    """PII and benchmark overlap of every staged shard, one shard's text in memory at a time."""
    checks = ("benchmark_overlap", "residual_pii")
    return pl.concat([
        residue(pl.read_parquet(path, columns=_text_columns(path)), cfg, checks)
        for path in sorted((staging_dir / "shards").glob("*.parquet"))
    ])
