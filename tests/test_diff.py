"""`curate diff`: planted differences between two releases built from different drop sets, per source and reason."""

import polars as pl
import pytest

from curation_platform.diff import release_diff
from tests.conftest import run_cli
from tests.test_card import HandmadeLake, _text


@pytest.fixture(scope="module")
def two_releases(tmp_path_factory) -> HandmadeLake:
    lake = HandmadeLake(tmp_path_factory.mktemp("diff"))
    beta = [{"id": f"b{i}", "text": _text(20 + i, 30 + 10 * i), "license": "MIT"} for i in range(3)]
    lake.drop("2026-01-a", "alpha", [{"id": f"a{i}", "text": _text(i, 25 + 5 * i)} for i in range(3)])
    lake.drop("2026-02-b", "beta", [*beta, {"id": "nc", "text": _text(40, 33), "license": "CC-BY-NC-4.0"}])
    lake.release(["2026-01-a", "2026-02-b"], name="a", profile="commercial")
    # Then: drop b is curated again with a stricter rule that removes b2, drop c lands, drop a is left out.
    lake.drop("2026-02-b", "beta", [*beta[:2], {"id": "nc", "text": _text(40, 33), "license": "CC-BY-NC-4.0"}],
              removed={"b2": ("filtered", "gopher_quality.min_words")})
    lake.drop("2026-03-c", "gamma", [{"id": f"c{i}", "text": _text(60 + i, 45)} for i in range(2)])
    lake.release(["2026-02-b", "2026-03-c"], name="b", profile="research")
    return lake


def _tokens(lake: HandmadeLake, release: str, ids: list[str]) -> int:
    shards = pl.read_parquet(str(lake.ws.release_dir(release) / "shards" / "*.parquet"))
    return int(shards.filter(pl.col("doc_id").is_in(ids))["token_count"].sum())


def test_diff_reports_exactly_the_planted_changes_per_source_and_reason(two_releases):
    lake = two_releases
    diff = release_diff(lake.ws, "a", "b")
    rows = {(r["change"], r["source"], r["reason"]): (r["documents"], r["tokens"]) for r in diff.rows.to_dicts()}
    assert rows == {
        ("removed", "alpha", "drop not in b"): (3, _tokens(lake, "a", [f"2026-01-a:a{i}" for i in range(3)])),
        ("removed", "beta", "filtered: gopher_quality.min_words"): (1, _tokens(lake, "a", ["2026-02-b:b2"])),
        ("added", "gamma", "new drop"): (2, _tokens(lake, "b", ["2026-03-c:c0", "2026-03-c:c1"])),
        ("added", "beta", "left out of a by license.not_in_profile"): (1, _tokens(lake, "b", ["2026-02-b:nc"])),
    }
    assert diff.totals["unchanged"]["documents"] == 2
    # The other way round, the reasons are B's (here a's) release verdicts.
    back = {(r["change"], r["source"], r["reason"]) for r in release_diff(lake.ws, "b", "a").rows.to_dicts()}
    assert ("removed", "beta", "license.not_in_profile") in back and ("added", "alpha", "new drop") in back


def test_diff_cli_prints_the_table_and_refuses_an_unknown_release(two_releases):
    workspace = str(two_releases.ws.root)
    code, output = run_cli("diff", "a", "b", "--workspace", workspace)
    assert code == 0 and "added 3 documents" in output and "removed 4" in output
    assert "drop not in b" in output
    code, output = run_cli("diff", "a", "nope", "--workspace", workspace)
    assert code == 1 and "unknown release 'nope'" in output and "releases: a, b" in output
    assert "Traceback" not in output


def test_diff_of_a_version_names_the_missing_revision(two_releases):
    workspace = str(two_releases.ws.root)
    code, output = run_cli("diff", "a@HEAD", "b", "--workspace", workspace)
    assert code == 1 and "is not in a git repository" in output
    import subprocess

    subprocess.run(["git", "init", "-q", str(two_releases.ws.root.parent)], check=True)
    code, output = run_cli("diff", "a@v9", "b", "--workspace", workspace)
    assert code == 1 and "git revision 'v9' not found" in output and "Traceback" not in output
