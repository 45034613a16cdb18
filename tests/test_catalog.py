"""The workspace catalog (``catalog.duckdb``): views over the lake, refreshed by the assets, queried with `curate sql`."""

import json
import re
import shutil
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from curation_platform.catalog import catalog_is_current, catalog_path, query, refresh_catalog
from curation_platform.ledger import LEDGER_SCHEMA
from curation_platform.pipeline import STAGES
from curation_platform.samples import write_sample_landing
from curation_platform.workspace import Workspace, write_parquet_atomic
from tests.conftest import REPO, run_cli

CONFIG = str(REPO / "curation.yaml")
LATE_DROP = "2026-07-synthetic"


def readme_queries() -> list[str]:
    """The SQL blocks of the README's "Query the lake" section, exactly as shown there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Query the lake", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def _ledger_file(ws: Workspace, stage: str, drop: str, extra: dict | None = None) -> None:
    rows = {name: [None] for name in LEDGER_SCHEMA}
    rows.update({"drop": [drop], "stage": [stage], "doc_id": [f"{drop}-1"], "verdict": ["drop"], "rule": ["r.x"]})
    frame = pl.DataFrame(rows, schema=LEDGER_SCHEMA)
    if extra:
        frame = frame.with_columns(**{k: pl.lit(v) for k, v in extra.items()})
    write_parquet_atomic(frame, ws.ledger_path(stage, drop))


def test_empty_workspace_has_every_view_and_the_readme_queries_run(tmp_path):
    ws = Workspace(tmp_path / "data")
    ws.root.mkdir()
    with duckdb.connect() as conn:
        views = refresh_catalog(conn, ws, STAGES)
    assert {"ledger", "release_ledger", "quarantine", "documents", "index_exact", "index_near", "takedowns",
            "release_shards", "release_shard_index", "releases", "drops", *(f"stage_{s}" for s in STAGES)} <= set(views)
    for view in views:
        assert query(ws, f"SELECT count(*) AS n FROM {view}")["n"].item() == 0
    assert set(query(ws, "SELECT * FROM ledger").columns) == set(LEDGER_SCHEMA)
    for sql in readme_queries():
        assert query(ws, sql).height == 0


def test_views_are_schema_agnostic_and_derive_missing_path_columns(tmp_path):
    ws = Workspace(tmp_path / "data")
    _ledger_file(ws, "filtered", "d1")
    _ledger_file(ws, "filtered", "d2", extra={"new_column": "x"})  # a schema change in a later drop
    write_parquet_atomic(pl.DataFrame({"doc_id": ["a"], "content_hash": ["h"]}), ws.index_path("exact", "d1"))
    with duckdb.connect() as conn:
        refresh_catalog(conn, ws, STAGES)
    ledger = query(ws, "SELECT drop, stage, new_column FROM ledger ORDER BY drop")
    assert ledger.rows() == [("d1", "filtered", None), ("d2", "filtered", "x")]
    # The index files carry no drop column: the view takes it from the file name.
    assert query(ws, "SELECT drop, doc_id FROM index_exact").rows() == [("d1", "a")]


def test_refresh_rebuilds_when_a_folder_fills_and_is_a_no_op_otherwise(tmp_path):
    ws = Workspace(tmp_path / "data")
    _ledger_file(ws, "filtered", "d1")
    with duckdb.connect() as conn:
        refresh_catalog(conn, ws, STAGES)
        built = catalog_path(ws).stat().st_ino
        _ledger_file(ws, "filtered", "d2")  # a new drop: the ledger glob already covers it
        refresh_catalog(conn, ws, STAGES)
        assert catalog_path(ws).stat().st_ino == built
        assert query(ws, "SELECT count(*) AS n FROM ledger")["n"].item() == 2
        # The first takedown fills an empty view: the catalog is rebuilt with the file in it.
        assert catalog_is_current(ws, STAGES)
        write_parquet_atomic(pl.DataFrame({"doc_id": ["x"], "reason": ["request"]}), ws.takedowns_path)
        assert not catalog_is_current(ws, STAGES)
        refresh_catalog(conn, ws, STAGES)
        assert catalog_is_current(ws, STAGES)
        assert catalog_path(ws).stat().st_ino != built
    assert query(ws, "SELECT doc_id, reason FROM takedowns").rows() == [("x", "request")]


def test_the_catalog_opens_read_only_from_another_directory(tmp_path):
    ws = Workspace(tmp_path / "data")
    _ledger_file(ws, "filtered", "d1")
    with duckdb.connect() as conn:
        refresh_catalog(conn, ws, STAGES)
    # What a user of the DuckDB CLI does: open the file by its path, from anywhere.
    proc = subprocess.run(
        [sys.executable, "-c", f"import duckdb; c = duckdb.connect({str(catalog_path(ws))!r}, read_only=True); "
                         "print(c.execute('SELECT count(*) FROM ledger').fetchone()[0])"],
        cwd="/", capture_output=True, text=True, env=None,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_curate_sql_prints_a_table_csv_json_and_one_line_errors(tmp_path):
    ws = Workspace(tmp_path / "data")
    _ledger_file(ws, "filtered", "d1")
    code, output = run_cli("sql", "SELECT drop, rule FROM ledger", "--workspace", str(ws.root))
    assert code == 0, output
    assert "d1" in output and "r.x" in output and "1 row(s)" in output
    code, output = run_cli("sql", "SELECT drop, rule FROM ledger", "--workspace", str(ws.root), "--format", "csv")
    assert output.splitlines() == ["drop,rule", "d1,r.x"]
    code, output = run_cli("sql", "SELECT drop, rule FROM ledger", "--workspace", str(ws.root), "--format", "json")
    assert json.loads(output) == {"drop": "d1", "rule": "r.x"}
    code, output = run_cli("sql", "SELEC 1", "--workspace", str(ws.root))
    assert code == 1 and "error: SQL failed: Parser Error" in output and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1
    code, output = run_cli("sql", "SELECT * FROM no_such_view", "--workspace", str(ws.root))
    assert code == 1 and "no_such_view" in output and len(output.strip().splitlines()) == 1
    # Read-only: the catalog cannot be changed through `curate sql`.
    code, output = run_cli("sql", "CREATE TABLE t AS SELECT 1", "--workspace", str(ws.root))
    assert code == 1 and "read-only" in output


@pytest.fixture(scope="module")
def catalog_project(tmp_path_factory):
    """A sample run without the last drop (it is added later)."""
    root = tmp_path_factory.mktemp("catalog_project")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write_sample_landing(root / "all")
    (root / "landing").mkdir()
    for drop in sorted(p.name for p in (root / "all").iterdir() if p.name != LATE_DROP):
        shutil.copytree(root / "all" / drop, root / "landing" / drop)
    code, output = run_cli("run", "--landing", str(root / "landing"), "--workspace", str(root / "data"),
                           "--config", CONFIG)
    assert code == 0, output
    return root


def test_views_return_the_lake_counts_after_a_sample_run(catalog_project):
    ws = Workspace(catalog_project / "data")
    # The assets built the catalog: no `curate sql` has run yet.
    assert catalog_path(ws).exists()
    with duckdb.connect(str(catalog_path(ws)), read_only=True) as conn:
        def count(sql: str) -> int:
            return conn.execute(sql).fetchone()[0]

        ledger = pl.read_parquet(str(ws.root / "ledger" / "*" / "*.parquet"), columns=["stage", "drop"])
        ledger = ledger.filter(pl.col("stage") != "release")
        assert count("SELECT count(*) FROM ledger") == ledger.height
        assert count("SELECT count(DISTINCT drop) FROM ledger") == len(ws.drops()) == 6
        for stage in STAGES:
            expected = sum(ws.read_stage(stage, d.name, ["doc_id"]).height for d in ws.drops())
            assert count(f"SELECT count(*) FROM stage_{stage}") == expected
            # Full rows, also where the stage stores only its decisions (composed in SQL).
            assert count(f"SELECT count(*) FROM stage_{stage} WHERE text IS NULL AND messages IS NULL") == 0
        quarantined = pl.read_parquet(str(ws.root / "quarantine" / "*.parquet"), columns=["doc_id"]).height
        assert count("SELECT count(*) FROM quarantine") == quarantined
        read = ledger.filter(pl.col("stage") == "raw_documents").height
        assert count("SELECT count(*) FROM documents") == read
        card = json.loads((ws.release_dir("latest") / "data_card.json").read_text())
        assert count("SELECT count(*) FROM release_shards WHERE release = 'latest'") == card["documents"]
        assert count("SELECT sum(token_count) FROM release_shards") == card["tokens"]
        assert count("SELECT documents FROM releases WHERE release = 'latest'") == card["documents"]
        assert count("SELECT count(*) FROM drops") == 6
        assert count("SELECT count(*) FROM index_exact") > 0 and count("SELECT count(*) FROM index_near") > 0


def test_readme_queries_run_as_shown(catalog_project):
    ws = Workspace(catalog_project / "data")
    removals, tokens, per_split, cross_drop = readme_queries()
    code, output = run_cli("sql", removals, "--workspace", str(ws.root), "--format", "csv")
    assert code == 0, output
    table = pl.read_csv(output.encode())
    assert {"source", "stage", "rule", "removed"} <= set(table.columns)
    removed = pl.read_parquet(str(ws.root / "ledger" / "*" / "*.parquet"), columns=["stage", "verdict"]).filter(
        (pl.col("stage") != "release") & pl.col("verdict").is_in(["drop", "quarantine"])).height
    assert table["removed"].sum() == removed
    assert "news-crawl" in table["source"].to_list()
    code, output = run_cli("sql", tokens, "--workspace", str(ws.root), "--format", "csv")
    table = pl.read_csv(output.encode())
    shards = pl.read_parquet(str(ws.release_dir("latest") / "shards" / "*.parquet"))
    expected = shards.group_by("license").agg(pl.col("token_count").sum().alias("tokens"))
    assert dict(table.select("license", "tokens").iter_rows()) == dict(expected.iter_rows())
    code, output = run_cli("sql", per_split, "--workspace", str(ws.root), "--format", "csv")
    table = pl.read_csv(output.encode())
    files = pl.read_parquet(str(ws.release_dir("latest") / "shards" / "*.parquet"), include_file_paths="file")
    expected = files.group_by(pl.col("file").str.extract(r"(train|validation)-\d+\.parquet$").alias("split"),
                              "domain").agg(pl.col("doc_id").n_unique().alias("documents"))
    assert sorted(table.select("split", "domain", "documents").iter_rows()) == sorted(expected.iter_rows())
    code, output = run_cli("sql", cross_drop, "--workspace", str(ws.root), "--format", "csv")
    table = pl.read_csv(output.encode())
    # The web refresh drop repeats documents of the first web crawl (samples.py plants them).
    assert ("2026-05-web-refresh", "2026-01-web-crawl") in set(table.select("drop", "duplicate_of_drop").iter_rows())


def test_a_new_drop_appears_in_the_catalog_and_a_fresh_workspace_gives_byte_identical_shards(catalog_project, project):
    """Also: this workspace, curated in two runs (six drops, then the seventh), gives shards byte-identical to the
    session's one-run curation of the same drops in another workspace (tests/conftest.py `project`)."""
    ws = Workspace(catalog_project / "data")
    with duckdb.connect(str(catalog_path(ws)), read_only=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM ledger WHERE drop = '{LATE_DROP}'").fetchone()[0] == 0
    shutil.copytree(catalog_project / "all" / LATE_DROP, catalog_project / "landing" / LATE_DROP)
    code, output = run_cli("run", "--landing", str(catalog_project / "landing"), "--workspace", str(ws.root),
                           "--config", CONFIG)
    assert code == 0, output
    with duckdb.connect(str(catalog_path(ws)), read_only=True) as conn:
        stages = conn.execute(f"SELECT count(DISTINCT stage) FROM ledger WHERE drop = '{LATE_DROP}'").fetchone()[0]
        assert stages == len(STAGES)
        assert conn.execute(f"SELECT count(*) FROM drops WHERE drop = '{LATE_DROP}'").fetchone()[0] == 1
        # The rebuilt release saw the drop (the commercial profile leaves out its synthetic documents).
        released = conn.execute(f"SELECT rule, count(*) FROM release_ledger WHERE drop = '{LATE_DROP}' GROUP BY ALL")
        assert released.fetchall() == [("license.generator_terms", 10)]
    # Nothing new: no drop is curated and the release is not rebuilt.
    code, output = run_cli("run", "--landing", str(catalog_project / "landing"), "--workspace", str(ws.root),
                           "--config", CONFIG)
    assert code == 0, output
    assert "0 to curate" in output and "release latest: unchanged" in output
    # A fresh workspace, curated incrementally, gives byte-identical shards.
    first = sorted((project[0] / "data" / "releases" / "latest" / "shards").glob("*.parquet"))
    second = sorted((catalog_project / "data" / "releases" / "latest" / "shards").glob("*.parquet"))
    assert [p.name for p in first] == [p.name for p in second] and first
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
