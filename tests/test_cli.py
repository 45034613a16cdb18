"""The `curate` CLI contract on small real drops: clear errors, profiles, benchmarks, takedowns, what-if."""

import json
import subprocess

import polars as pl
import pytest

from curation_platform.samples import synthetic_corpus, write_corpus_drop
from curation_platform.workspace import Workspace
from tests.conftest import REPO, run_cli

CONFIG = str(REPO / "curation.yaml")


def _clean(n: int, seed: int) -> pl.DataFrame:
    corpus = synthetic_corpus(n, seed=seed, dup_rate=0, near_dup_rate=0, pii_rate=0, low_quality_rate=0)
    return corpus.with_columns(pl.format("s{}-{}", pl.lit(seed), pl.col("id")).alias("id"))


@pytest.fixture(scope="module")
def two_licenses(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write_corpus_drop(root / "landing", "2026-01-open", _clean(12, 1), source="open-web", license="CC-BY-4.0")
    write_corpus_drop(root / "landing", "2026-02-nc", _clean(6, 2), source="nc-essays", license="CC BY-NC 4.0")
    args = ["--landing", str(root / "landing"), "--workspace", str(root / "data"), "--config", CONFIG]
    code, output = run_cli("run", *args)
    assert code == 0, output
    return root, args


def _shards(root, release):
    return pl.read_parquet(str(root / "data" / "releases" / release / "shards" / "*.parquet"))


def test_non_commercial_drop_reaches_research_but_not_commercial(two_licenses):
    root, args = two_licenses
    commercial = _shards(root, "latest")
    assert set(commercial["license"]) == {"CC-BY-4.0"} and commercial.height == 12
    code, output = run_cli("run", *args, "--profile", "research", "--release", "research")
    assert code == 0, output
    research = _shards(root, "research")
    assert sorted(set(research["license"])) == ["CC-BY-4.0", "CC-BY-NC-4.0"] and research.height == 18
    card = json.loads((root / "data" / "releases" / "research" / "data_card.json").read_text())
    assert card["profile"] == "research"
    assert {l["license"]: l["documents"] for l in card["licenses"]} == {"CC-BY-4.0": 12, "CC-BY-NC-4.0": 6}


def test_whatif_counts_documents_a_threshold_change_would_remove(two_licenses):
    root, args = two_licenses
    words = Workspace(root / "data").read_stage("quality_signals", "2026-01-open")["word_count"]
    threshold = float(words.sort()[3])
    # Newly removed: documents the filters keep today whose word count is below the new minimum.
    kept = Workspace(root / "data").read_stage("filtered", "2026-01-open")
    expected = int((kept["word_count"] < threshold).sum())
    assert expected > 0
    code, output = run_cli("whatif", "--set", f"gopher_quality.min_words={threshold}",
                           "--workspace", str(root / "data"), "--config", CONFIG)
    assert code == 0, output
    assert "2026-01-open" in output and "gopher_quality.min_words" in output
    line = next(l for l in output.splitlines() if "2026-01-open" in l)
    assert line.split()[2:4] == ["0", str(expected)]


def test_takedown_removes_documents_from_the_next_release_with_a_tombstone(two_licenses):
    root, args = two_licenses
    victim = _shards(root, "latest")["doc_id"][0]
    code, output = run_cli("takedown", "--doc-id", victim, "--reason", "DMCA 123",
                           "--workspace", str(root / "data"), "--config", CONFIG)
    assert code == 0 and "took down 1" in output
    code, output = run_cli("run", *args)
    assert code == 0, output
    assert victim not in _shards(root, "latest")["doc_id"].to_list()
    code, output = run_cli("explain", victim, "--workspace", str(root / "data"), "--config", CONFIG)
    assert "takedown" in output and "DMCA 123" in output
    # Document indexes only: the line index (index/lines/) holds line hashes and counts, no document ids.
    assert not any(pl.read_parquet(p)["doc_id"].is_in([victim]).any()
                   for p in (root / "data" / "index").rglob("*.parquet") if "doc_id" in pl.read_parquet_schema(p))


def test_bad_manifest_is_rejected_with_one_clear_message_and_no_traceback(tmp_path):
    write_corpus_drop(tmp_path / "landing", "2026-01-good", _clean(8, 3), source="good")
    bad = write_corpus_drop(tmp_path / "landing", "2026-02-bad", _clean(3, 4), source="bad")
    manifest = (bad / "manifest.yaml").read_text()
    (bad / "manifest.yaml").write_text("\n".join(l for l in manifest.splitlines() if not l.startswith("license")))
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "curate") if (REPO / ".venv" / "bin" / "curate").exists() else "curate",
         "run", "--landing", str(tmp_path / "landing"), "--workspace", str(tmp_path / "data"), "--config", CONFIG],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "2026-02-bad" in proc.stderr and "license" in proc.stderr
    assert "2026-01-good" in proc.stdout and "curated" in proc.stdout  # the good drop still went through


def test_user_benchmark_given_on_the_command_line_catches_a_leak(tmp_path):
    bench = tmp_path / "evals.jsonl"
    secret = ("the committee measured the tidal range at the northern pier every morning for eleven weeks and "
              "published the averages in a short appendix")
    bench.write_text(json.dumps({"id": "q1", "question": secret}) + "\n")
    docs = _clean(6, 5)
    leaked = docs.with_columns(
        pl.when(pl.col("id") == docs["id"][0]).then(pl.col("text") + "\n\n" + secret).otherwise(pl.col("text"))
    )
    write_corpus_drop(tmp_path / "landing", "2026-01-web", leaked, source="web")
    code, output = run_cli("run", "--landing", str(tmp_path / "landing"), "--workspace", str(tmp_path / "data"),
                           "--config", CONFIG, "--benchmark", f"mine={bench}:question")
    assert code == 0, output
    ledger = pl.read_parquet(tmp_path / "data" / "ledger" / "decontaminated" / "2026-01-web.parquet")
    hit = ledger.filter(pl.col("verdict") == "drop")
    assert hit["rule"].to_list() == ["decontamination.mine"] and "mine" in hit["detail"][0]


def test_explain_of_an_unknown_document_says_so(tmp_path):
    code, output = run_cli("explain", "nope", "--workspace", str(tmp_path), "--config", CONFIG)
    assert code == 1 and "run `curate run` first" in output


def test_explain_accepts_a_unique_prefix_and_fails_on_an_unknown_id(two_licenses):
    root, _ = two_licenses
    ws = ["--workspace", str(root / "data"), "--config", CONFIG]
    doc_id = _shards(root, "latest")["doc_id"][0]
    code, output = run_cli("explain", doc_id[:12], *ws)  # the prefix `curate whatif` prints
    assert code == 0, output
    assert f"document {doc_id}" in output and "released in latest/shards/" in output
    code, output = run_cli("explain", "not-a-doc-id", *ws)
    assert code == 1 and "not-a-doc-id is not in the ledger" in output


def test_a_symlink_out_of_the_drop_stops_it_with_a_clear_message(tmp_path):
    drop = write_corpus_drop(tmp_path / "landing", "2026-01-web", _clean(4, 6), source="web")
    (drop / "evil.txt").symlink_to("/etc/passwd")
    code, output = run_cli("run", "--landing", str(tmp_path / "landing"), "--workspace", str(tmp_path / "data"),
                           "--config", CONFIG)
    assert code == 1
    assert "evil.txt points outside the drop" in output and "Stack Trace" not in output
    assert not (tmp_path / "data" / "stages" / "raw_documents" / "2026-01-web.parquet").exists()


def test_unsafe_release_and_drop_names_are_refused(tmp_path):
    write_corpus_drop(tmp_path / "landing", "2026-01-web", _clean(4, 8), source="web")
    write_corpus_drop(tmp_path / "landing", "c[1]", _clean(3, 9), source="odd")
    args = ["--landing", str(tmp_path / "landing"), "--workspace", str(tmp_path / "data"), "--config", CONFIG]
    code, output = run_cli("run", *args, "--release", "..")
    assert code == 1 and "release name '..' is not allowed" in output
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))
    code, output = run_cli("run", *args)
    assert code == 1 and "drop name 'c[1]' is not allowed" in output  # rejected, the good drop still runs
    assert (tmp_path / "data" / "releases" / "latest" / "data_card.json").exists()


def test_a_changed_drop_that_fails_its_gate_stays_out_of_releases(tmp_path):
    landing = tmp_path / "landing"
    write_corpus_drop(landing, "2026-01-good", _clean(6, 10), source="good", license="MIT")
    bad = write_corpus_drop(landing, "2026-02-turns-bad", _clean(4, 11), source="later", license="MIT")
    args = ["--landing", str(landing), "--workspace", str(tmp_path / "data"), "--config", CONFIG]
    assert run_cli("run", *args)[0] == 0
    card = tmp_path / "data" / "releases" / "latest" / "data_card.json"
    assert json.loads(card.read_text())["documents"] == 10
    # New files with an unknown license: every record is quarantined and the raw_documents gate fails.
    manifest = (bad / "manifest.yaml").read_text().replace("license: MIT", "license: Proprietary - ask legal")
    (bad / "manifest.yaml").write_text(manifest)
    for attempt in range(2):
        code, output = run_cli("run", *args)
        assert code == 1 and "1 to curate" in output and "gate raw_documents" in output
        assert json.loads(card.read_text())["documents"] == 10  # the old release stands, not rebuilt
    # Removing the broken drop from the landing area lets the release go on without it.
    import shutil

    shutil.rmtree(bad)
    code, output = run_cli("run", *args)
    assert code == 0, output
    released = json.loads(card.read_text())
    assert released["documents"] == 6 and released["excluded_drops"] == ["2026-02-turns-bad"]


def test_an_empty_release_is_not_published(tmp_path):
    write_corpus_drop(tmp_path / "landing", "2026-01-nc", _clean(4, 12), source="nc", license="CC-BY-NC-4.0")
    code, output = run_cli("run", "--landing", str(tmp_path / "landing"), "--workspace", str(tmp_path / "data"),
                           "--config", CONFIG)
    assert code == 1 and "release_candidate" in output and "expect_table_row_count_to_be_between" in output
    assert not (tmp_path / "data" / "releases" / "latest").exists()
    # The summary says why: the license profile left every document out.
    assert ("2026-01-nc: none of its 4 kept documents released (license not allowed by profile 'commercial': 4)"
            in output)


def test_a_drop_is_read_once_settled_and_again_when_its_files_change_or_its_landing_area_moves(tmp_path):
    """One drop through four runs: still being written (not read), settled (curated), unchanged (nothing to do),
    a file appended (curated again), then the landing area moved and a file appended there (read from its new
    place)."""
    import time

    drop = write_corpus_drop(tmp_path / "landing", "2026-01-web", _clean(5, 7), source="web")
    (drop / "_READY").unlink()  # a copy in progress: files written just now, no marker
    args = ["--workspace", str(tmp_path / "data"), "--config", CONFIG, "--no-release"]
    landing = ["--landing", str(tmp_path / "landing")]
    raw = tmp_path / "data" / "stages" / "raw_documents" / "2026-01-web.parquet"
    written = time.time()
    code, output = run_cli("run", *landing, *args, "--now", str(written + 3))  # 3 s later; settle_seconds is 10
    assert code == 0, output
    assert "2026-01-web' is still being written" in output and "0 drop(s) registered" in output
    assert not raw.exists()
    code, output = run_cli("run", *landing, *args, "--now", str(written + 60))  # settled
    assert code == 0 and "1 to curate" in output, output
    assert raw.exists()

    # Files unchanged: nothing to curate. A file that changes: the drop is curated again.
    code, output = run_cli("run", *landing, *args, "--now", str(time.time() + 60))
    assert "0 to curate" in output
    more = _clean(6, 7).tail(1).with_columns(pl.lit("extra").alias("id"))
    with open(drop / "data.jsonl", "a") as handle:
        handle.write(more.select("id", "text").write_ndjson())
    code, output = run_cli("run", *landing, *args, "--now", str(time.time() + 60))
    assert code == 0 and "1 to curate" in output
    assert Workspace(tmp_path / "data").read_stage("raw_documents", "2026-01-web").height == 6

    # A moved landing area is read from its new place.
    (tmp_path / "landing").rename(tmp_path / "moved")
    with open(tmp_path / "moved" / "2026-01-web" / "data.jsonl", "a") as handle:
        handle.write(_clean(7, 7).tail(1).with_columns(pl.lit("new").alias("id")).select("id", "text").write_ndjson())
    code, output = run_cli("run", "--landing", str(tmp_path / "moved"), *args, "--now", str(time.time() + 60))
    assert code == 0 and "1 to curate" in output, output
    assert Workspace(tmp_path / "data").read_stage("raw_documents", "2026-01-web").height == 7


SHORT_NOTES = [
    "The library opens at nine on weekdays and closes early on Sunday.",
    "Our team shipped the billing fix after two weeks of careful testing.",
    "Fresh bread is baked each morning in the small shop near the station.",
    "The river flooded the lower fields twice during the wet spring this year.",
    "She planted tomatoes along the fence where the afternoon sun is strongest.",
    "The museum added a new wing for maps and old navigation instruments.",
    "Our cat sleeps on the warm windowsill for most of the quiet afternoon.",
    "The council voted to repair the old bridge before the winter storms.",
    "He learned to sail on the lake during a long and windy summer.",
    "The orchestra rehearsed the new symphony in the empty hall all week.",
]


def test_a_first_drop_of_short_documents_is_explained_and_a_profile_keeps_it(tmp_path):
    docs = pl.DataFrame({"id": [f"note-{i}" for i in range(len(SHORT_NOTES))], "text": SHORT_NOTES})
    drop = write_corpus_drop(tmp_path / "landing", "2026-01-notes", docs, source="team-notes", kind="text")
    args = ["--landing", str(tmp_path / "landing"), "--workspace", str(tmp_path / "data"), "--config", CONFIG]
    code, output = run_cli("run", *args)
    assert code == 1
    # In the user's words: which rule removed how many, the whatif that previews keeping them, the profile to use.
    assert "the quality filters removed 10 of 10 documents of drop '2026-01-notes'" in output
    assert "gopher_quality.min_words removed 10 (word_count < 50" in output
    assert "curate whatif --set gopher_quality.min_words=" in output
    assert "`filter_profile: short-form`" in output and "{team-notes: short-form}" in output
    assert "expect_column_values_to_be_between" not in output and "blocking asset check" not in output
    whatif = output.split("curate whatif ", 1)[1].splitlines()[0].split()
    code, preview = run_cli("whatif", *whatif, "--workspace", str(tmp_path / "data"), "--config", CONFIG)
    assert code == 0 and "2026-01-notes" in preview
    assert next(l for l in preview.splitlines() if " * " in l).split()[2] == "10"  # all changes together keep all
    with open(drop / "manifest.yaml", "a") as handle:
        handle.write("filter_profile: short-form\n")
    code, output = run_cli("run", *args)
    assert code == 0, output
    assert json.loads((tmp_path / "data" / "releases" / "latest" / "data_card.json").read_text())["documents"] == 10


def test_whatif_previews_stage_thresholds_and_says_which_cannot_be_previewed(two_licenses):
    root, _ = two_licenses
    ws = ["--workspace", str(root / "data"), "--config", CONFIG]
    scores = Workspace(root / "data").read_stage("language", "2026-01-open")["language_score"]
    threshold = float(scores.sort()[3])
    expected = int((scores < threshold).sum())  # kept today, under the new minimum score
    assert expected == 3
    code, output = run_cli("whatif", "--set", f"language.min_score={threshold}", *ws)
    assert code == 0, output
    line = next(l for l in output.splitlines() if l.startswith("2026-01-open"))
    assert line.split()[1:4] == ["language.min_score", "0", str(expected)]
    code, output = run_cli("whatif", "--set", "pii.max_hits_per_doc=0", *ws)
    assert code == 0 and "pii.max_hits_per_doc" in output  # clean corpus: nothing to remove
    code, output = run_cli("whatif", "--set", "decontamination.ngram=8", *ws)
    assert code == 1 and "cannot be previewed from stored data" in output


def test_status_shows_released_documents_and_tokens_and_why_a_drop_is_left_out(two_licenses):
    root, args = two_licenses
    shards = _shards(root, "latest")
    open_tokens = int(shards.filter(pl.col("drop") == "2026-01-open")["token_count"].sum())
    (root / "landing" / "2026-03-no-manifest").mkdir()
    (root / "landing" / "2026-03-no-manifest" / "a.jsonl").write_text('{"text": "x"}\n')
    (root / "landing" / "2026-03-no-manifest" / "_READY").write_text("")
    code, output = run_cli("status", "--workspace", str(root / "data"), "--config", CONFIG,
                           "--landing", str(root / "landing"))
    assert code == 0, output
    assert "released" in output and "tokens" in output
    row = next(l for l in output.splitlines() if l.startswith("2026-01-open"))
    assert row.split()[1:5] == ["12", "12", str(shards.filter(pl.col("drop") == "2026-01-open").height), str(open_tokens)]
    nc = next(l for l in output.splitlines() if l.startswith("2026-02-nc"))
    assert nc.split()[3:5] == ["0", "0"]
    assert ("2026-02-nc: none of its 6 kept documents released (license not allowed by profile 'commercial': 6)"
            in output)
    assert "drop '2026-03-no-manifest': no manifest.yaml" in output
    shard_dir = root / "data" / "releases" / "latest" / "shards"
    split = {name: sum(pl.read_parquet(p)["doc_id"].n_unique() for p in shard_dir.glob(f"{name}-*.parquet"))
             for name in ("train", "validation")}
    assert f"train {split['train']} documents, validation {split['validation']};" in output
    import shutil

    shutil.rmtree(root / "landing" / "2026-03-no-manifest")


def test_the_ui_instance_starts_without_the_community_dialog(tmp_path):
    from curation_platform.cli import dagster_instance

    instance = dagster_instance(tmp_path / "data")  # the DAGSTER_HOME `make ui` and `curate run` share
    assert not instance.nux_enabled
