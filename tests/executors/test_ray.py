"""The Ray executor gives the local executor's bytes: stage outputs, ledger, dedup indexes and released shards.

A local Ray with 2 CPUs is started inside the test; two small drops with planted exact and near duplicates (within
and across drops), PII and low-quality pages go through every stage with ``local`` and with ``ray`` in two
workspaces, and every file is compared byte for byte.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from curation_platform.config import CurationConfig
from curation_platform.pipeline import FINAL_STAGE, STAGES, drop_state, run_stage
from curation_platform.release import publish_release, stage_release
from curation_platform.samples import synthetic_corpus, write_corpus_drop
from curation_platform.workspace import Workspace
from tests.conftest import REPO, run_cli

ray = pytest.importorskip("ray")


def _near_copy(text: str, seed: int) -> str:
    words = text.split(" ")
    rnd = random.Random(seed)
    for pos in rnd.sample(range(10, len(words) - 10), 2):
        words[pos] = "zebra" if words[pos] != "zebra" else "giraffe"
    return " ".join(words)


def _landing(root: Path) -> Path:
    """Two drops: planted phenomena inside each, plus exact and near copies of the first drop in the second."""
    landing = root / "landing"
    first = synthetic_corpus(40, seed=1, dup_rate=0.1, near_dup_rate=0.1, pii_rate=0.15, low_quality_rate=0.15)
    second = synthetic_corpus(40, seed=2, dup_rate=0.1, near_dup_rate=0.1, pii_rate=0.15, low_quality_rate=0.15)
    first = first.select(pl.format("a-{}", "id").alias("id"), "text")
    copies = pl.DataFrame({"id": ["copy-exact", "copy-near"],
                           "text": [first["text"][0], _near_copy(first["text"][1], 7)]})
    second = pl.concat([second.select(pl.format("b-{}", "id").alias("id"), "text"), copies])
    write_corpus_drop(landing, "2026-01-news", first, source="news", license="CC-BY-4.0")
    write_corpus_drop(landing, "2026-02-forum", second, source="forum", license="MIT")
    return landing


def _curate(ws: Workspace, landing: Path, drop: str, executor: str) -> dict[str, dict]:
    local = CurationConfig.model_validate({"versioning": {"enabled": False}})
    # Small batches, so every per-document stage runs as several Ray Data batches.
    cfg = local.model_copy(update={"engine": local.engine.model_copy(update={"executor": executor, "batch_rows": 16})})
    ws.register_drop(drop, landing / drop)
    return {stage: run_stage(ws, cfg, stage, drop, run_id="same-run").metrics for stage in STAGES}


def _release(ws: Workspace) -> None:
    cfg = CurationConfig.model_validate({"versioning": {"enabled": False}})
    current = [d.name for d in ws.drops() if drop_state(ws, cfg, d.name) == "current"]
    assert current == ["2026-01-news", "2026-02-forum"]
    stage_release(ws, cfg, FINAL_STAGE, current, [], [], {})
    publish_release(ws, cfg.release.name, "same-run", cfg.hash)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _files(ws: Workspace) -> dict[str, bytes]:
    folders = ["stages", "ledger", "index", "quarantine", "releases/latest/shards"]
    files = {str(p.relative_to(ws.root)): p.read_bytes()
             for folder in folders for p in sorted((ws.root / folder).rglob("*.parquet"))}
    files["releases/latest/shard_index.parquet"] = (ws.release_dir("latest") / "shard_index.parquet").read_bytes()
    return files


def test_ray_and_local_give_byte_identical_stages_ledger_and_release(tmp_path, local_ray):
    landing = _landing(tmp_path)
    local, remote = Workspace(tmp_path / "local"), Workspace(tmp_path / "ray")
    # The earlier drop, curated once locally, is the index the second drop is compared with in both workspaces.
    _curate(local, landing, "2026-01-news", "local")
    shutil.copytree(local.root, remote.root)
    _curate(local, landing, "2026-02-forum", "local")
    metrics = _curate(remote, landing, "2026-02-forum", "ray")
    _release(local)
    _release(remote)

    # The per-document stages really ran as Ray Data batches (42 documents at most, 16 per batch).
    assert metrics["url_filtered"]["ray_batches"] == 3
    assert metrics["pii_redacted"]["ray_batches"] >= 2
    # Near dedup's exact verification ran as Ray tasks, several batches of candidate pairs (8 pairs each).
    near_metrics = metrics["near_deduped"]
    assert near_metrics["verify_batches"] > 1, near_metrics
    assert near_metrics["verify_batches_in_workers"] == near_metrics["verify_batches"]
    assert near_metrics["signature_batches_in_workers"] == near_metrics["signature_batches"] > 1
    local_files, ray_files = _files(local), _files(remote)
    assert sorted(ray_files) == sorted(local_files)
    assert len([f for f in local_files if f.startswith("stages/")]) == 2 * len(STAGES)
    different = [name for name in local_files if local_files[name] != ray_files[name]]
    assert different == []
    # The comparison is not vacuous: the drops hold dropped documents, PII redactions and cross-drop pairs.
    ledger = pl.read_parquet(str(remote.root / "ledger" / "*" / "*.parquet"))
    assert {"drop", "redact", "flag"} <= set(ledger["verdict"])
    near = ledger.filter(pl.col("rule") == "near_dedup.duplicate", pl.col("drop") == "2026-02-forum")
    news_ids = pl.read_parquet(remote.stage_path("raw_documents", "2026-01-news"))["doc_id"]
    assert near["duplicate_of"].is_in(news_ids.implode()).any()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_unreachable_ray_address_is_one_clear_line(tmp_path):
    address = f"127.0.0.1:{_closed_port()}"
    code, output = run_cli("run", "--executor", "ray", "--ray-address", address, "--landing", str(tmp_path),
                           "--workspace", str(tmp_path / "data"))
    assert code == 1
    assert f"error: cannot reach the Ray cluster at {address}" in output
    assert "Traceback" not in output and not (tmp_path / "data" / "registry").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "spark"], "engine.executor: Input should be 'local' or 'ray'"),
    (["--ray-address", "ray://head:10001"], "--ray-address needs --executor ray"),
])
def test_bad_executor_options_are_one_clear_line(tmp_path, args, message):
    code, output = run_cli("run", *args, "--landing", str(tmp_path), "--workspace", str(tmp_path / "data"))
    assert code == 1
    assert message in output and "Traceback" not in output


def test_ray_requested_but_not_installed_is_one_clear_line(tmp_path):
    # A `ray` package that cannot be imported, first on the path, as on a machine without Ray.
    (tmp_path / "shadow" / "ray").mkdir(parents=True)
    (tmp_path / "shadow" / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), str(REPO),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", "from curation_platform.cli import main; main()", "run", "--executor", "ray",
         "--landing", str(tmp_path), "--workspace", str(tmp_path / "data")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: executor 'ray' needs Ray Data, which cannot be imported (No module named 'ray'); install it with "
        "pip install 'ray[data]>=2.60,<3', or run with --executor local"]


def test_the_dagster_asset_runs_its_stage_on_the_ray_of_the_ray_resource(tmp_path, local_ray):
    """The `language` asset, materialized by Dagster with `--executor ray` options, runs on Ray Data (the `ray`
    resource finds the Ray this process runs and uses it) and writes what the local executor writes."""
    import dagster as dg

    from assets.definitions import build_definitions
    from assets.partitions import drops
    from assets.resources import CurationResource

    landing = tmp_path / "landing"
    write_corpus_drop(landing, "2026-03-blog", synthetic_corpus(30, seed=5).select("id", "text"), source="blog")
    config = tmp_path / "curation.yaml"
    config.write_text("versioning: {enabled: false}\nengine: {batch_rows: 8}\n")
    ws = Workspace(tmp_path / "data")
    ws.register_drop("2026-03-blog", landing / "2026-03-blog")
    cfg = CurationConfig.model_validate({"versioning": {"enabled": False}})
    for stage in STAGES[: STAGES.index("language") + 1]:
        run_stage(ws, cfg, stage, "2026-03-blog", run_id="dagster-run")
    local_output = ws.stage_path("language", "2026-03-blog").read_bytes()

    resource = CurationResource(workspace=str(ws.root), config_path=str(config), landing=str(landing),
                                executor="ray")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(drops.name, ["2026-03-blog"])
    result = build_definitions(resource).resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key="2026-03-blog", instance=instance, asset_selection=[dg.AssetKey("language")])
    assert result.success
    metadata = result.asset_materializations_for_node("language")[0].metadata
    assert metadata["stage_metrics"].value["ray_batches"] == 4  # 30 documents in batches of 8
    assert ws.stage_path("language", "2026-03-blog").read_bytes() == local_output


def test_the_band_key_shuffle_gives_the_pairs_of_the_in_process_band_join(local_ray):
    """Candidate pairs from the Ray shuffle by (band, key) equal the in-process DuckDB band join's, batch for batch
    in (src, dst) order, with crowded buckets (the per-bucket link limit bites), index entries out of play and pairs
    that share several buckets."""
    import duckdb
    import numpy as np
    import pyarrow as pa

    from curation_platform.executors.ray import band_shuffle_candidates
    from curation_platform.ops.dedup_minhash import NearDedupConfig, _candidate_batches

    rng = np.random.default_rng(3)
    bands, n_docs, n_index = 4, 300, 200
    cfg = NearDedupConfig(bucket_link_limit=3, verify_batch_rows=500)
    # Few distinct keys per band, so buckets hold many documents and pairs repeat across bands.
    doc_keys = rng.integers(0, 40, size=(n_docs, bands)).astype(np.uint64) + np.uint64(2**63)
    current = pa.table({
        "band": pa.array(np.tile(np.arange(bands), n_docs), pa.int64()),
        "key": pa.array(doc_keys.ravel(), pa.uint64()),
        "node": pa.array(np.repeat(np.arange(n_docs), bands), pa.int64()),
    })
    index_keys = rng.integers(0, 40, size=(n_index, bands)).astype(np.uint64) + np.uint64(2**63)
    in_play = np.flatnonzero(rng.random(n_index) < 0.8)
    # The tables the in-process near dedup builds: the in-play index entries' (band, key) rows and their nodes.
    index_hits = pa.table({
        "band": pa.array(np.tile(np.arange(bands), len(in_play)), pa.int64()),
        "key": pa.array(index_keys[in_play].ravel(), pa.uint64()),
        "_part": pa.array(np.zeros(len(in_play) * bands), pa.int64()),
        "_row": pa.array(np.repeat(in_play, bands), pa.int64()),
    })
    index_nodes = pa.table({"_part": pa.array(np.zeros(len(in_play)), pa.int64()),
                            "_row": pa.array(in_play, pa.int64()),
                            "node": pa.array(in_play - n_index, pa.int64())})

    def collect(batches):
        pairs = [np.column_stack(batch) for batch in batches]
        return np.vstack(pairs) if pairs else np.empty((0, 2), np.int64)

    def connection():
        con = duckdb.connect()
        for name, table in (("current_rows", current), ("index_hits", index_hits), ("index_nodes", index_nodes)):
            con.register(name, table)
        return con

    expected = collect(_candidate_batches(connection(), cfg, 500))
    shuffled = collect(band_shuffle_candidates(CurationConfig().engine)(connection(), cfg, 500))
    assert len(expected) > 1000 and (expected[:, 0] < 0).any() and (expected[:, 0] >= 0).any()
    np.testing.assert_array_equal(shuffled, expected)


def test_the_ray_driver_takes_a_stage_batch_by_batch_in_input_order(tmp_path, local_ray, monkeypatch):
    """The driver gets a stage's results from the workers one batch at a time, in the drop's row order (it never
    collects the drop), and a batch that comes back out of order stops the stage instead of writing a wrong file."""
    import pyarrow as pa

    from curation_platform.errors import CurationError
    from curation_platform.executors import ray as ray_executor

    landing = tmp_path / "landing"
    write_corpus_drop(landing, "2026-04-wiki", synthetic_corpus(30, seed=6).select("id", "text"), source="wiki")
    ws = Workspace(tmp_path / "data")
    ws.register_drop("2026-04-wiki", landing / "2026-04-wiki")
    local = CurationConfig.model_validate({"versioning": {"enabled": False}})
    on_ray = local.model_copy(update={"engine": local.engine.model_copy(update={"executor": "ray", "batch_rows": 8})})
    for stage in ("raw_documents", "url_filtered"):
        run_stage(ws, local, stage, "2026-04-wiki")
    expected = ws.read_stage("url_filtered", "2026-04-wiki", ["doc_id"])["doc_id"].to_list()

    batches = ray_executor.stream_stage_output(ws, on_ray, "normalized", "2026-04-wiki", {})
    first_ids, first = next(batches)  # one batch, before the driver has asked for the others
    assert first_ids.to_list() == expected[:8] and first.kept["doc_id"].to_list() == expected[:8]
    rest = list(batches)
    assert [len(ids) for ids, _ in rest] == [8, 8, len(expected) - 24]
    assert pl.concat([first_ids, *[ids for ids, _ in rest]]).to_list() == expected
    assert not list((ws.spill_dir / "ray").glob("*.parquet"))  # the composed input of the decide-only upstream

    real = ray_executor._in_order

    def second_batch_first(ray, dataset):
        envelopes = pa.concat_tables(list(real(ray, dataset)))
        yield envelopes.take([1, 0, *range(2, envelopes.num_rows)])

    monkeypatch.setattr(ray_executor, "_in_order", second_batch_first)
    with pytest.raises(CurationError, match="came back out of input order after 0 documents"):
        list(ray_executor.stream_stage_output(ws, on_ray, "normalized", "2026-04-wiki", {}))
