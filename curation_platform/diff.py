"""`curate diff`: what changed between two releases, per source, domain and reason, from their shards and ledgers.

A document is *removed* when release A shipped it and release B does not; the reason is the rule of B's own verdict
on it (``release_verdicts.parquet`` in B: license profile, duplicate, budget, selection), else the per-drop ledger
rule that dropped it since (a stage, or a takedown), else that B does not contain its drop. A document is *added*
when B ships it and A did not: its drop is new to A, or A left it out by a rule of A's verdicts, or it is new in a
drop A already had (re-curated). Everything runs as DuckDB SQL over the Parquet files in place.

A release is named by its folder under ``releases/``, or ``NAME@REV`` for the version DVC recorded in git
revision REV (the release's ``.dvc`` pointer at that commit, read from the DVC cache or remote).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from curation_platform.errors import CurationError
from curation_platform.workspace import Workspace

DIFF_SCHEMA = {"change": pl.String, "source": pl.String, "domain": pl.String, "reason": pl.String,
               "documents": pl.Int64, "tokens": pl.Int64}


@dataclass
class ReleaseDiff:
    a: str
    b: str
    rows: pl.DataFrame  # DIFF_SCHEMA: one row per (change, source, domain, reason)
    totals: dict[str, dict[str, int]]  # {"a"|"b"|"added"|"removed"|"unchanged": {"documents", "tokens"}}


def _known(ws: Workspace) -> str:
    return ", ".join(ws.release_names()) or "none yet"


@contextlib.contextmanager
def release_folder(ws: Workspace, spec: str) -> Iterator[Path]:
    """The folder of release ``spec``: ``NAME`` (published under ``releases/``) or ``NAME@REV`` (its DVC version at
    git revision REV, fetched into a temporary folder). Unknown releases raise CurationError naming the known ones."""
    name, _, rev = spec.partition("@")
    if not rev:
        folder = ws.release_dir(name)
        if not (folder / "shards").is_dir():
            raise CurationError(f"unknown release '{spec}': no {folder / 'shards'}; releases: {_known(ws)}")
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="curate-diff-") as tmp:
        yield _fetch_version(ws, name, rev, Path(tmp))


def _fetch_version(ws: Workspace, name: str, rev: str, tmp: Path) -> Path:
    """Copy the shards and verdicts of release ``name`` as versioned at git revision ``rev`` into ``tmp``."""
    import subprocess

    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ws.root, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise CurationError(f"unknown release '{name}@{rev}': {ws.root} is not in a git repository, so it has no "
                            "revisions")
    git_root = Path(proc.stdout.strip())
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=git_root,
                           capture_output=True, text=True, check=False)
    if known.returncode != 0:
        raise CurationError(f"unknown release '{name}@{rev}': git revision {rev!r} not found in {git_root}")
    from dvc.api import DVCFileSystem

    relative = ws.release_dir(name).resolve().relative_to(git_root.resolve()).as_posix()
    # The workspace is a DVC repository inside the git project (`dvc init --subdir`): a subrepo.
    fs = DVCFileSystem(str(git_root), rev=known.stdout.strip(), subrepos=True)
    present = fs.exists(f"{relative}/shards")
    if not present:
        raise CurationError(f"unknown release '{name}@{rev}': revision {rev} has no DVC-versioned {relative} "
                            f"(commit {relative}.dvc to version it)")
    target = tmp / name
    for part in ("shards", "release_verdicts.parquet"):
        if fs.exists(f"{relative}/{part}"):
            fs.get(f"{relative}/{part}", str(target / part), recursive=part == "shards")
    return target


def _columns(conn: duckdb.DuckDBPyConnection, files: str) -> set[str]:
    described = conn.execute(f"DESCRIBE SELECT * FROM read_parquet({files}, union_by_name=true)").fetchall()
    return {row[0] for row in described}


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def release_diff(ws: Workspace, a: str, b: str) -> ReleaseDiff:
    """Documents and tokens added and removed from release ``a`` to release ``b`` per source, domain (when the
    shards carry one) and reason."""
    with release_folder(ws, a) as folder_a, release_folder(ws, b) as folder_b, duckdb.connect() as conn:
        for alias, folder in (("a", folder_a), ("b", folder_b)):
            shards = _sql_list(sorted((folder / "shards").glob("*.parquet")))
            domain = "domain" if "domain" in _columns(conn, shards) else "NULL"
            conn.execute(f"""CREATE TEMP VIEW {alias} AS SELECT doc_id, source, "drop", token_count,
                             CAST({domain} AS VARCHAR) AS domain
                             FROM read_parquet({shards}, union_by_name=true)""")
            verdicts = folder / "release_verdicts.parquet"
            # One deciding release verdict per document (the rule that left it out of that release).
            conn.execute(f"""CREATE TEMP VIEW v{alias} AS """ + (
                f"""SELECT doc_id, "drop", rule FROM read_parquet({_sql_list([verdicts])})
                    WHERE verdict = 'drop' QUALIFY row_number() OVER (PARTITION BY doc_id ORDER BY rule) = 1"""
                if verdicts.exists()
                else 'SELECT NULL::VARCHAR AS doc_id, NULL::VARCHAR AS "drop", NULL::VARCHAR AS rule WHERE false'))
            conn.execute(f"""CREATE TEMP VIEW drops_{alias} AS SELECT DISTINCT "drop" FROM {alias}
                             UNION SELECT DISTINCT "drop" FROM v{alias}""")
        ledgers = [p for p in sorted((ws.root / "ledger").glob("*/*.parquet")) if p.parent.name != "release"]
        conn.execute("CREATE TEMP VIEW removed_by_stage AS " + (
            f"""SELECT doc_id, CASE WHEN stage = 'takedown' THEN 'takedown' ELSE stage || ': ' || rule END AS why
                FROM read_parquet({_sql_list(ledgers)}, union_by_name=true)
                WHERE verdict IN ('drop', 'quarantine')
                QUALIFY row_number() OVER (PARTITION BY doc_id ORDER BY stage = 'takedown' DESC, stage, rule) = 1"""
            if ledgers else "SELECT NULL::VARCHAR AS doc_id, NULL::VARCHAR AS why WHERE false"))
        label_a, label_b = a.replace("'", "''"), b.replace("'", "''")
        rows = conn.sql(f"""
            SELECT 'removed' AS change, a.source, a.domain,
                   CASE WHEN vb.rule IS NOT NULL THEN vb.rule
                        WHEN s.why IS NOT NULL THEN s.why
                        WHEN a."drop" NOT IN (SELECT "drop" FROM drops_b) THEN 'drop not in {label_b}'
                        ELSE 'not in {label_b}' END AS reason,
                   count(*) AS documents, sum(a.token_count)::BIGINT AS tokens
            FROM a LEFT JOIN b USING (doc_id) LEFT JOIN vb USING (doc_id) LEFT JOIN removed_by_stage s USING (doc_id)
            WHERE b.doc_id IS NULL
            GROUP BY ALL
            UNION ALL
            SELECT 'added' AS change, b.source, b.domain,
                   CASE WHEN b."drop" NOT IN (SELECT "drop" FROM drops_a) THEN 'new drop'
                        WHEN va.rule IS NOT NULL THEN 'left out of {label_a} by ' || va.rule
                        ELSE 'new in its drop' END AS reason,
                   count(*) AS documents, sum(b.token_count)::BIGINT AS tokens
            FROM b LEFT JOIN a USING (doc_id) LEFT JOIN va USING (doc_id)
            WHERE a.doc_id IS NULL
            GROUP BY ALL
            ORDER BY change, source, domain NULLS FIRST, reason""").pl()
        totals_row = conn.execute("""
            SELECT (SELECT count(*) FROM a), (SELECT coalesce(sum(token_count), 0) FROM a),
                   (SELECT count(*) FROM b), (SELECT coalesce(sum(token_count), 0) FROM b),
                   (SELECT count(*) FROM a JOIN b USING (doc_id)),
                   (SELECT coalesce(sum(b.token_count), 0) FROM a JOIN b USING (doc_id))""").fetchone()
    rows = rows.cast(DIFF_SCHEMA) if rows.height else pl.DataFrame(schema=DIFF_SCHEMA)

    def total(change: str) -> dict[str, int]:
        part = rows.filter(pl.col("change") == change)
        return {"documents": int(part["documents"].sum()), "tokens": int(part["tokens"].sum())}
    return ReleaseDiff(a=a, b=b, rows=rows, totals={
        "a": {"documents": int(totals_row[0]), "tokens": int(totals_row[1])},
        "b": {"documents": int(totals_row[2]), "tokens": int(totals_row[3])},
        "unchanged": {"documents": int(totals_row[4]), "tokens": int(totals_row[5])},
        "added": total("added"), "removed": total("removed")})


def diff_text(diff: ReleaseDiff) -> str:
    """The diff as the CLI prints it: totals, then one line per change, source, domain and reason."""
    t = diff.totals
    lines = [(f"{diff.a}: {t['a']['documents']} documents, {t['a']['tokens']} tokens; "
              f"{diff.b}: {t['b']['documents']} documents, {t['b']['tokens']} tokens"),
             (f"added {t['added']['documents']} documents ({t['added']['tokens']} tokens), removed "
              f"{t['removed']['documents']} ({t['removed']['tokens']} tokens), unchanged "
              f"{t['unchanged']['documents']}")]
    if diff.rows.height:
        with_domain = diff.rows["domain"].is_not_null().any()
        lines += ["", f"{'change':<8} {'source':<24} " + (f"{'domain':<14} " if with_domain else "")
                  + f"{'documents':>9} {'tokens':>9}  reason"]
        for r in diff.rows.iter_rows(named=True):
            lines.append(f"{r['change']:<8} {r['source'] or '':<24} "
                         + (f"{r['domain'] or '-':<14} " if with_domain else "")
                         + f"{r['documents']:>9} {r['tokens'] or 0:>9}  {r['reason']}")
    return "\n".join(lines)

