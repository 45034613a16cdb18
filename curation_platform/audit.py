"""What each gate checks, per stage and for the release. ``gates`` runs the suites; this module picks the columns
and aggregates to validate and the bounds from ``curation.yaml``."""

from __future__ import annotations

import functools

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.gates import (GateResult, great_expectations, identity_expectations, max_value_expectation,
                                     validate)
from curation_platform.ledger import DECIDING, read_ledger
from curation_platform.records import KEEP
from curation_platform.workspace import Workspace, iter_parquet
from curation_platform.storage import register

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
        output_ids = ws.read_stage(stage, drop, columns=["doc_id"])
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
    gx = great_expectations()

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
    output = ws.read_stage(stage, drop, columns=ID_COLUMNS)
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


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _domain_sql(cfg: CurationConfig) -> str:
    """``release.domains`` as a SQL CASE over kind, source and language (the gate's own reading of the mapping)."""
    release = cfg.release
    fallback = "kind" if release.default_domain is None else _sql_text(release.default_domain)
    branches = []
    for name, rule in release.domains.items():
        tests = [f"coalesce({column} IN ({', '.join(_sql_text(v) for v in values)}), false)"
                 for column, values in (("kind", rule.kind), ("source", rule.source), ("language", rule.language))
                 if values is not None]
        branches.append(f"WHEN {' AND '.join(tests) or 'true'} THEN {_sql_text(name)}")
    return f"CASE {' '.join(branches)} ELSE {fallback} END" if branches else fallback


def release_selection_audit(cfg: CurationConfig, shard_glob: str) -> pl.DataFrame:
    """Per domain of the shards matching ``shard_glob`` and overall (``scope`` = ``domain:<name>`` or ``overall``):
    ``tokens``, ``synthetic_tokens``, the ``cap`` on their share and ``over_cap`` (1 when above it), plus
    ``mislabelled`` (rows whose ``domain`` column differs from the mapping), and on the overall row
    ``over_budget`` (tokens above ``release.token_budget``) and ``split_leaks`` (documents or texts in both train and
    validation shards).

    Re-counted with DuckDB from the shards, independently of ``selection``: synthetic is re-read from the
    provenance JSON (the manifest's ``generator``) or ``kind``, the domain is re-derived from ``release.domains``
    in SQL, the split from the file name."""
    import duckdb

    with duckdb.connect() as con:
        register(con, shard_glob)  # staged shards in object storage are read through fsspec
        source = f"read_parquet({_sql_text(shard_glob)}, union_by_name = true, filename = true)"
        present = {row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}

        def column(name: str, sql_type: str) -> str:
            return name if name in present else f"CAST(NULL AS {sql_type}) AS {name}"

        cols = ", ".join(column(c, t) for c, t in (
            ("doc_id", "VARCHAR"), ("kind", "VARCHAR"), ("source", "VARCHAR"), ("language", "VARCHAR"),
            ("provenance", "VARCHAR"), ("domain", "VARCHAR"), ("token_count", "BIGINT"), ("text", "VARCHAR")))
        con.sql(f"""CREATE TEMP TABLE shard_rows AS
            SELECT {cols}, regexp_extract(filename, '(train|validation)-[0-9]+\\.parquet$', 1) AS split
            FROM {source}""")
        per_domain = con.sql(f"""
            SELECT 'domain:' || d AS scope, d AS domain, sum(coalesce(token_count, 0))::BIGINT AS tokens,
                   sum(CASE WHEN synthetic THEN coalesce(token_count, 0) ELSE 0 END)::BIGINT AS synthetic_tokens,
                   count(*) FILTER (WHERE domain IS DISTINCT FROM d)::BIGINT AS mislabelled
            FROM (SELECT *, {_domain_sql(cfg)} AS d,
                         (kind = 'synthetic' OR json_extract_string(provenance, '$.generator.model') IS NOT NULL)
                         IS TRUE AS synthetic
                  FROM shard_rows)
            GROUP BY d ORDER BY d""").pl()
        leaks = con.sql("""
            SELECT (SELECT count(*) FROM (SELECT doc_id FROM shard_rows WHERE split = 'train'
                                          INTERSECT SELECT doc_id FROM shard_rows WHERE split = 'validation'))
                 + (SELECT count(*) FROM (SELECT md5(text) FROM shard_rows WHERE split = 'train' AND text IS NOT NULL
                                          INTERSECT
                                          SELECT md5(text) FROM shard_rows WHERE split = 'validation'))""").fetchall()[0][0]
    caps = cfg.release.synthetic_cap
    per_domain = per_domain.with_columns(
        pl.col("domain").replace_strict(caps.per_domain, default=None, return_dtype=pl.Float64).alias("cap"))
    tokens, synthetic = int(per_domain["tokens"].sum()), int(per_domain["synthetic_tokens"].sum())
    budget = cfg.release.token_budget
    overall = pl.DataFrame({
        "scope": ["overall"], "domain": [None], "tokens": [tokens], "synthetic_tokens": [synthetic],
        "mislabelled": [0], "cap": [caps.overall],
        "over_budget": [max(0, tokens - budget) if budget is not None else 0], "split_leaks": [int(leaks)],
    }, schema_overrides={"domain": pl.String, "cap": pl.Float64})
    frame = pl.concat([per_domain.with_columns(over_budget=pl.lit(0), split_leaks=pl.lit(0)), overall],
                      how="diagonal_relaxed")
    # Share above the cap by more than float rounding: synthetic > cap * all tokens of the scope.
    return frame.with_columns(
        pl.when(pl.col("cap").is_not_null()
                & (pl.col("synthetic_tokens") > pl.col("cap") * pl.col("tokens") + 1e-6)).then(1).otherwise(0)
        .alias("over_cap"),
        pl.when(pl.col("tokens") > 0).then(pl.col("synthetic_tokens") / pl.col("tokens")).otherwise(0.0)
        .alias("synthetic_share"),
    ).with_columns(pl.col("scope").alias("doc_id"))


def release_gate(cfg: CurationConfig, staging_dir, residual: pl.DataFrame) -> list[GateResult]:
    """The audit step of write-audit-publish, over the staged shards: ids (a document repeated for several
    epochs appears once per epoch), licenses inside the profile (audited independently of the selection, see
    ``release_license_audit``), the per-document ``residual`` columns (benchmark overlap, PII) at zero, and the
    selection's promises re-counted from the shards (``release_selection_audit``: synthetic shares within their
    caps, domains as mapped, the token budget, no document or text in both train and validation)."""
    gx = great_expectations()

    shard_glob = str(staging_dir / "shards" / "*.parquet")
    has_epoch = "epoch" in pl.read_parquet_schema(min((staging_dir / "shards").glob("*.parquet")))
    shards = pl.read_parquet(shard_glob, columns=[*ID_COLUMNS, *(["epoch"] if has_epoch else [])])
    if not has_epoch:
        shards = shards.with_columns(pl.lit(0, dtype=pl.Int64).alias("epoch"))
    profile = cfg.licenses.profiles[cfg.release.profile]
    licenses = release_license_audit(shard_glob, list(profile.allowed_categories))
    selection = release_selection_audit(cfg, shard_glob)
    return [
        # An empty candidate would replace the previous release with nothing.
        validate("release.identity", shards.filter(pl.col("epoch") == 0).drop("epoch"),
                 [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1), *identity_expectations(ID_COLUMNS)]),
        validate("release.epochs", shards.select("doc_id", "epoch"),
                 [gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["doc_id", "epoch"])]),
        validate("release.license_policy", licenses,
                 [gx.expectations.ExpectColumnValuesToBeNull(column="violation")]),
        validate("release.residual", residual, [max_value_expectation(c, 0) for c in residual.columns if c != "doc_id"]),
        validate("release.selection", selection.select("doc_id", "over_cap", "mislabelled", "over_budget",
                                                       "split_leaks"),
                 [max_value_expectation(c, 0) for c in ("over_cap", "mislabelled", "over_budget", "split_leaks")]),
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


def _text_columns(path_or_schema) -> list[str]:
    """``doc_id``, ``text`` and, when the file (or schema) has it, ``language`` (it chooses the phone regions of the
    scan)."""
    schema = path_or_schema if isinstance(path_or_schema, pl.Schema) else pl.read_parquet_schema(path_or_schema)
    return ["doc_id", "text", *(["language"] if "language" in schema else [])]


def stage_residue(ws: Workspace, cfg: CurationConfig, stage: str, drop: str) -> pl.DataFrame | None:
    """The residue frame a stage's gate validates, or None for stages without one.

    For ``pii_redacted`` it also carries ``residual_rate_above_bound``: how far the share of the drop dropped as
    ``pii.residual`` exceeds ``gates.max_residual_pii_rate`` (0 when within the bound)."""
    if stage == "scored":
        return score_residue(ws.stage_path(stage, drop), cfg)
    checks = _RESIDUE_BY_STAGE.get(stage)
    if checks is None:
        return None
    view = ws.scan_stage(stage, drop)
    frame = residue(view.select(_text_columns(view.collect_schema())).collect(), cfg, checks)
    if stage == "pii_redacted":
        excess = _residual_pii_excess(ws, cfg, drop)
        frame = frame.with_columns(residual_rate_above_bound=pl.lit(excess))
        if frame.is_empty():  # every document dropped: the rate still has to be checked
            frame = pl.DataFrame({"doc_id": ["-"], "residual_pii": [0], "residual_rate_above_bound": [excess]},
                                 schema=frame.schema)
    return frame


def score_residue(path, cfg: CurationConfig) -> pl.DataFrame:
    """Per kept document of ``scored``, read back with DuckDB (not the scorer): ``score_out_of_range`` (1 when
    ``quality_score`` is null, NaN or outside [0, 1]) and ``kept_below_min_score`` (1 when it is under the lowest
    ``min_score`` configured at any level, which no kept document can be, whatever its source or domain)."""
    import duckdb

    scoring = cfg.scoring
    floor = min([scoring.min_score, *(v.min_score for v in [*scoring.per_source.values(),
                                                           *scoring.per_domain.values()] if v.min_score is not None)])
    with duckdb.connect() as con:
        register(con, path)  # a lake in object storage is read through fsspec
        frame = pl.from_arrow(con.sql(
            "SELECT doc_id, (quality_score IS NULL OR isnan(quality_score) OR quality_score < 0 "
            "OR quality_score > 1)::BIGINT AS score_out_of_range, "
            "coalesce(quality_score < ?, false)::BIGINT AS kept_below_min_score "
            "FROM read_parquet(?) ORDER BY doc_id", params=[floor, str(path)]).to_arrow_table())
    if frame.is_empty():  # an expectation needs a row
        frame = pl.DataFrame({"doc_id": ["-"], "score_out_of_range": [0], "kept_below_min_score": [0]},
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
    """PII and benchmark overlap of every staged shard, ``engine.batch_rows`` documents at a time across shards: a
    release of many small shards (one per drop at least) is scanned in a few passes, not one per shard (each pass
    pays a fixed cost of about 0.2 s, which made a release rebuild grow with the number of drops ever curated)."""
    checks = ("benchmark_overlap", "residual_pii")
    paths = sorted((staging_dir / "shards").glob("*.parquet"))
    columns = _text_columns(paths[0]) if paths else ["doc_id", "text"]
    frames = [residue(batch, cfg, checks) for batch in iter_parquet(paths, cfg.engine.batch_rows, columns)]
    return pl.concat(frames) if frames else residue(pl.DataFrame(schema={"doc_id": pl.String, "text": pl.String}),
                                                    cfg, checks)
