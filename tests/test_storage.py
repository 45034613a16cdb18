"""Object storage: landing, lake and releases on s3://, against a real S3 server (moto) started on 127.0.0.1."""

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from curation_platform.landing import scan_landing
from curation_platform.manifest import manifest_fingerprint
from curation_platform.readers import IngestConfig, read_drop
from curation_platform.samples import (
    synthetic_corpus,
    write_corpus_drop,
    write_sample_landing,
)
from tests.conftest import REPO, run_cli

BUCKET = "curation-test"
MANIFEST = "source: news\nkind: web\nlicense: CC-BY-4.0\nprovenance: {url: https://example.org/news, collected_at: '2026-01-01'}\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free local port, the AWS environment pointing at it, and an empty bucket."""
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = pytest.MonkeyPatch()
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        env.setenv(name, value)
    env.delenv("AWS_PROFILE", raising=False)
    env.delenv("CURATION_LAKE", raising=False)
    S3FileSystem.clear_instance_cache()
    fs = S3FileSystem(endpoint_url=f"http://127.0.0.1:{port}", use_listings_cache=False)
    fs.mkdir(BUCKET)
    yield fs
    S3FileSystem.clear_instance_cache()
    env.undo()
    server.stop()


def _upload(fs, local: Path, prefix: str) -> None:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.pipe_file(f"{BUCKET}/{prefix}/{path.relative_to(local).as_posix()}", path.read_bytes())


def test_landing_on_s3_settles_by_last_modified_or_ready_marker(s3):
    landing = f"s3://{BUCKET}/landing-scan"
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-a/manifest.yaml", MANIFEST.encode())
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-a/docs.jsonl", b'{"id": "1", "text": "hello"}\n')
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-b/manifest.yaml", MANIFEST.encode())
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-b/docs.jsonl", b'{"id": "1", "text": "hello"}\n')
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-b/_READY", b"")
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-c/docs.jsonl", b'{"id": "1", "text": "hello"}\n')
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-d/manifest.yaml", MANIFEST.encode())
    now = time.time()

    fresh = scan_landing(landing, settle_seconds=600, now=now)
    assert [name for name, _, _ in fresh.ready] == ["2026-01-b"]  # the marker skips the wait
    assert fresh.waiting == ["2026-01-a", "2026-01-c", "2026-01-d"]  # written just now (LastModified)
    assert 590 < fresh.settles_in <= 600

    settled = scan_landing(landing, settle_seconds=600, now=now + 601)
    assert [name for name, _, _ in settled.ready] == ["2026-01-a", "2026-01-b"]
    assert settled.no_manifest == ["2026-01-c"] and settled.empty == ["2026-01-d"]
    assert str(settled.ready[0][1]) == f"{landing}/2026-01-a"

    # A rewritten object changes the fingerprint, so a curated drop whose files changed is curated again.
    before = manifest_fingerprint(f"{landing}/2026-01-a")
    s3.pipe_file(f"{BUCKET}/landing-scan/2026-01-a/docs.jsonl", b'{"id": "1", "text": "hullo"}\n')
    assert manifest_fingerprint(f"{landing}/2026-01-a") != before


def test_a_drop_read_from_s3_equals_the_same_drop_read_from_disk(s3, tmp_path):
    landing = tmp_path / "landing"
    names = write_sample_landing(landing)  # JSONL, gzip JSONL, text, Markdown, code, chat, per-record licenses
    tables = landing / "tables"
    tables.mkdir()
    (tables / "manifest.yaml").write_text(MANIFEST)
    pl.DataFrame({"id": ["p1", "p2"], "text": ["A parquet row.", "Another parquet row."]}).write_parquet(
        tables / "rows.parquet")
    (tables / "rows.csv").write_text('id,text\nc1,"A csv row, quoted."\nc2,\n')
    (tables / "broken.parquet").write_bytes(b"PAR1 not really")
    _upload(s3, landing, "landing-read")
    cfg = IngestConfig()
    for name in [*names, "tables"]:
        local = read_drop(landing / name, cfg, drop=name)
        remote = read_drop(f"s3://{BUCKET}/landing-read/{name}", cfg, drop=name)
        assert remote.read_count == local.read_count > 0, name
        assert remote.records.equals(local.records), name
        assert remote.quarantine.equals(local.quarantine), name
    # The same objects through pyarrow (how Ray Data reads the lake).
    import pyarrow.parquet as pq

    from curation_platform.storage import arrow_filesystem

    filesystem, key = arrow_filesystem(f"s3://{BUCKET}/landing-read/tables/rows.parquet")
    assert pl.from_arrow(pq.read_table(key, filesystem=filesystem))["id"].to_list() == ["p1", "p2"]
    assert read_drop(landing / "tables", cfg).quarantine["file"].to_list() == ["broken.parquet", "rows.csv"]


def test_sensor_discovers_a_new_drop_under_an_s3_prefix(s3, tmp_path):
    from assets.resources import CurationResource
    from assets.sensors import landing_sensor

    landing = f"s3://{BUCKET}/landing-sensor"
    resource = CurationResource(workspace=str(tmp_path / "ws"), config_path=str(tmp_path / "none.yaml"),
                                landing=landing)
    with dg.instance_for_test() as instance:
        empty = landing_sensor(dg.build_sensor_context(instance=instance, resources={"curation": resource}))
        assert not empty.run_requests
        s3.pipe_file(f"{BUCKET}/landing-sensor/2026-03-a/manifest.yaml", MANIFEST.encode())
        s3.pipe_file(f"{BUCKET}/landing-sensor/2026-03-a/docs.jsonl", b'{"id": "1", "text": "hello"}\n')
        s3.pipe_file(f"{BUCKET}/landing-sensor/2026-03-a/_READY", b"")
        found = landing_sensor(dg.build_sensor_context(instance=instance, resources={"curation": resource}))
        assert [r.partition_key for r in found.run_requests] == ["2026-03-a"]
        entry = resource.ws().drop("2026-03-a")
        assert entry.path == f"{landing}/2026-03-a"


def _clean(n: int, seed: int) -> pl.DataFrame:
    corpus = synthetic_corpus(n, seed=seed, dup_rate=0, near_dup_rate=0, pii_rate=0, low_quality_rate=0)
    return corpus.with_columns(pl.format("s{}-{}", pl.lit(seed), pl.col("id")).alias("id"))


def _dvc(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr or proc.stdout


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_curate_run_with_landing_lake_and_dvc_remote_on_s3(s3, tmp_path, monkeypatch):
    project = tmp_path / "project"
    _git("init", "-q", str(project), cwd=tmp_path)
    first, second = _clean(12, 1), _clean(6, 2)
    # One document of the second drop is an exact copy of one of the first: the release ships it once.
    second = pl.concat([second, first.head(1).with_columns(pl.lit("copy-1").alias("id"))])
    staged = tmp_path / "staged"
    write_corpus_drop(staged, "2026-01-a", first, source="news-a")
    write_corpus_drop(staged, "2026-02-b", second, source="news-b")
    for name in ("2026-01-a", "2026-02-b"):
        (staged / name / "_READY").write_text("")
    _upload(s3, staged, "landing")
    config = yaml.safe_load((REPO / "curation.yaml").read_text())
    config["versioning"]["remote_url"] = f"s3://{BUCKET}/dvc-remote"
    (project / "curation.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("CURATION_LAKE", f"s3://{BUCKET}/lake")

    code, output = run_cli("run", "--landing", f"s3://{BUCKET}/landing", "--workspace", str(project / "data"),
                           "--config", str(project / "curation.yaml"))
    assert code == 0, output

    # The lake is in the bucket; the workspace directory keeps only the registry, catalog, Dagster home and DVC.
    for folder in ("stages", "ledger", "index", "quarantine"):
        assert not (project / "data" / folder).exists(), folder
    assert {p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/lake/stages")} >= {"raw_documents", "decontaminated"}
    assert not (project / "data" / "releases" / "latest").exists()
    # The release is the immutable version that the pointer object names.
    head = json.loads(s3.cat_file(f"{BUCKET}/lake/releases/.current/latest.json"))
    release = f"{BUCKET}/lake/{head['path']}"
    assert head["path"].startswith("releases/.versions/") and not s3.exists(f"{BUCKET}/lake/releases/latest")
    shard_keys = s3.glob(f"{release}/shards/*.parquet")
    assert shard_keys
    shards = pl.concat([pl.read_parquet(s3.open(key, "rb")) for key in shard_keys])
    landed = pl.concat([first, second])
    assert shards.height == landed["text"].n_unique() == landed.height - 1
    assert set(shards["text"]) == set(landed["text"])
    card = json.loads(s3.cat_file(f"{release}/data_card.json"))
    assert card["documents"] == shards.height
    registry = json.loads((project / "data" / "registry" / "drops.json").read_text())
    assert [d["path"] for d in registry] == [f"s3://{BUCKET}/landing/2026-01-a", f"s3://{BUCKET}/landing/2026-02-b"]

    # DVC: the pointer is local (for git), the data went to the S3 remote; a fresh clone pulls it from there.
    pointer = project / "data" / "releases" / "latest.dvc"
    assert yaml.safe_load(pointer.read_text())["meta"]["documents"] == shards.height
    assert s3.find(f"{BUCKET}/dvc-remote")
    _git("add", "data/.dvc", "data/.dvcignore", "data/releases", cwd=project)
    _git("commit", "-qm", "Release latest", cwd=project)
    clone = tmp_path / "clone"
    _git("clone", "-q", str(project), str(clone), cwd=tmp_path)
    _dvc("remote", "add", "--local", "-d", "s3", f"s3://{BUCKET}/dvc-remote", cwd=clone / "data")
    _dvc("pull", "-q", cwd=clone / "data")
    pulled = sorted((clone / "data" / "releases" / "latest" / "shards").glob("*.parquet"))
    assert [p.name for p in pulled] == [k.rsplit("/", 1)[-1] for k in sorted(shard_keys)]
    for path, key in zip(pulled, sorted(shard_keys)):
        assert path.read_bytes() == s3.cat_file(key)

    # A second run with nothing new is a no-op that still finds every drop current in the bucket.
    code, output = run_cli("run", "--landing", f"s3://{BUCKET}/landing", "--workspace", str(project / "data"),
                           "--config", str(project / "curation.yaml"))
    assert code == 0, output
    assert "0 to curate" in output and "unchanged" in output


def test_local_paths_stay_pathlib_paths_and_uris_keep_their_scheme(tmp_path):
    from curation_platform.storage import ObjectPath, as_path, is_uri
    from curation_platform.workspace import Workspace

    assert type(as_path(tmp_path / "x")) is type(tmp_path) and as_path("data") == Path("data")
    assert not is_uri(tmp_path) and not is_uri("data/s3:/x") and is_uri("s3://bucket/x")
    lake = as_path("s3://bucket/lake/")
    shard = lake / "releases" / "latest" / "shards" / "shard-00000.parquet"
    assert isinstance(shard, ObjectPath) and shard == "s3://bucket/lake/releases/latest/shards/shard-00000.parquet"
    assert shard.name == "shard-00000.parquet" and shard.parent.parent.name == "latest"
    assert shard.with_suffix(".json").name == "shard-00000.json"
    assert str(shard.relative_to(lake)) == "releases/latest/shards/shard-00000.parquet"
    local = Workspace(tmp_path)
    assert local.lake == local.root and local.stage_path("scored", "d") == tmp_path / "stages" / "scored" / "d.parquet"
    remote = Workspace(tmp_path, lake="s3://bucket/lake")
    assert remote.stage_path("scored", "d") == "s3://bucket/lake/stages/scored/d.parquet"
    assert remote.release_pointer("latest") == tmp_path / "releases" / "latest.dvc"


def test_moving_a_folder_in_s3_copies_every_object_then_deletes_the_source(s3):
    from curation_platform.storage import as_path, move_tree, remove_tree

    for rel in ("shards/shard-00000.parquet", "data_card.json"):
        s3.pipe_file(f"{BUCKET}/move/staging/{rel}", rel.encode())
    move_tree(as_path(f"s3://{BUCKET}/move/staging"), as_path(f"s3://{BUCKET}/move/latest"))
    assert sorted(s3.find(f"{BUCKET}/move")) == [f"{BUCKET}/move/latest/data_card.json",
                                                 f"{BUCKET}/move/latest/shards/shard-00000.parquet"]
    assert s3.cat_file(f"{BUCKET}/move/latest/shards/shard-00000.parquet") == b"shards/shard-00000.parquet"
    remove_tree(as_path(f"s3://{BUCKET}/move"))
    remove_tree(as_path(f"s3://{BUCKET}/move"))  # absent: nothing to do
    assert not s3.find(f"{BUCKET}/move")


def _publish_candidate(ws, name: str, texts: list[str]) -> None:
    """A staged release candidate of two shards (what `stage_release` writes and the gate audited)."""
    from curation_platform.ledger import LEDGER_SCHEMA
    from curation_platform.storage import write_parquet

    staging = ws.staging_dir(name)
    ids = [f"doc-{i}" for i in range(len(texts))]
    half = len(texts) // 2
    for shard, rows in (("shard-00000", slice(0, half)), ("shard-00001", slice(half, None))):
        write_parquet(pl.DataFrame({"doc_id": ids[rows], "text": texts[rows]}), staging / "shards" / f"{shard}.parquet")
    write_parquet(pl.DataFrame({"doc_id": ids, "release_shard": ["shard-00000"] * half + ["shard-00001"] * (len(ids) - half)}),
                  staging / "shard_index.parquet")
    verdicts = pl.DataFrame({"doc_id": ids, "verdict": ["keep"] * len(ids), "rule": ["release.selected"] * len(ids)})
    write_parquet(verdicts.with_columns(*[pl.lit(None, dtype=t).alias(c) for c, t in LEDGER_SCHEMA.items()
                                          if c not in verdicts.columns]).select(list(LEDGER_SCHEMA)),
                  staging / "release_verdicts.parquet")
    (staging / "data_card.json").write_text(json.dumps({"name": name, "documents": len(ids), "tokens": 0,
                                                        "config_hash": "-"}))


def _what_readers_see(ws, name: str) -> tuple[dict, list[str], list[str]]:
    from curation_platform.explain import all_release_shards

    folder = ws.release_dir(name)
    card = json.loads((folder / "data_card.json").read_text())
    texts = pl.concat([pl.read_parquet(p) for p in sorted((folder / "shards").glob("*.parquet"))])["text"].to_list()
    return card, texts, sorted(all_release_shards(ws)["doc_id"])


def test_a_publish_that_fails_half_way_leaves_the_previous_release_whole_for_readers(s3, tmp_path, monkeypatch):
    from s3fs import S3FileSystem

    from curation_platform.release import publish_release
    from curation_platform.workspace import Workspace

    ws = Workspace(tmp_path, lake=f"s3://{BUCKET}/publish-lake")
    _publish_candidate(ws, "latest", ["first a", "first b", "first c", "first d"])
    publish_release(ws, "latest", "run-1", "hash-1")
    before = _what_readers_see(ws, "latest")
    assert before[0]["documents"] == 4 and before[1] == ["first a", "first b", "first c", "first d"]

    # The second publish dies uploading its second shard (the store refuses the copy).
    _publish_candidate(ws, "latest", ["second a", "second b", "second c"])
    real_copy = S3FileSystem._cp_file

    async def failing_copy(self, path1, path2, **kwargs):
        if "/.staging/" in path1 and path1.endswith("shards/shard-00001.parquet"):  # the new release's shard
            raise OSError("simulated: upload of shard-00001 failed")
        return await real_copy(self, path1, path2, **kwargs)

    monkeypatch.setattr(S3FileSystem, "_cp_file", failing_copy)
    with pytest.raises(OSError, match="shard-00001"):
        publish_release(ws, "latest", "run-2", "hash-2")
    monkeypatch.undo()
    # Readers (the release folder, explain's shard index) still see the first release, every shard of it.
    assert _what_readers_see(ws, "latest") == before
    assert ws.release_names() == ["latest"]

    # Published again, the second release replaces it whole; the failed attempt's objects are gone.
    publish_release(ws, "latest", "run-2", "hash-2")
    card, texts, ids = _what_readers_see(ws, "latest")
    assert card["documents"] == 3 and texts == ["second a", "second b", "second c"] and len(ids) == 3
    versions = s3.ls(f"{BUCKET}/publish-lake/releases/.versions")
    assert len(versions) == 2  # the current release and the one before it (a reader may still be on it)
    # The catalog's release views read the current version only.
    import duckdb

    from curation_platform.catalog import query, refresh_catalog

    with duckdb.connect() as scratch:
        refresh_catalog(scratch, ws, rebuild="always")
    shipped = query(ws, "SELECT release, count(*) AS n FROM release_shards GROUP BY release")
    assert shipped.rows() == [("latest", 3)]


def test_the_catalog_matches_its_globs_against_one_listing_of_an_s3_lake_as_s3fs_globs_them(s3):
    """The catalog lists an object-store lake once and matches its view globs against the keys; each glob finds
    files exactly when s3fs's own glob over the bucket finds some (nested keys, other suffixes, lookalike
    prefixes and files outside the lake do not count)."""
    from curation_platform.catalog import _files_matcher

    lake = f"s3://{BUCKET}/glob-lake"
    for key in ("stages/raw_documents/2026-01-a.parquet", "stages/language/sub/2026-01-a.parquet",
                "stages/scored/2026-01-a.json", "ledger/language/.2026-01-a.parquet", "index/exact/x.parquetx",
                "releases/.versions/v1/shards/train-00000.parquet", "releases/.versions/v1/data_card.json"):
        s3.pipe_file(f"{BUCKET}/glob-lake/{key}", b"x")
    s3.pipe_file(f"{BUCKET}/glob-lake-other/quarantine/2026-01-a.parquet", b"x")  # a lookalike prefix
    globs = [f"{lake}/{g}" for g in (
        "stages/raw_documents/*.parquet", "stages/language/*.parquet", "stages/scored/*.parquet",
        "ledger/language/*.parquet", "index/exact/*.parquet", "quarantine/*.parquet", "takedowns.parquet",
        "releases/.versions/v1/shards/*.parquet", "releases/.versions/v1/data_card.json",
        "releases/.versions/v2/data_card.json")]
    has_files = _files_matcher(lake)
    found = {g.removeprefix(f"{lake}/"): has_files(g) for g in globs}
    assert found == {g.removeprefix(f"{lake}/"): bool(s3.glob(g.removeprefix("s3://"))) for g in globs}
    assert sum(found.values()) == 4  # not vacuous: some globs find files, others do not
