import subprocess
import sys

import yaml

from curation_platform.config import VersioningConfig
from curation_platform.versioning import version_release


def test_release_is_dvc_added_with_meta_and_pushed_to_a_local_remote(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    release = tmp_path / "ws" / "releases" / "r1"
    (release / "shards").mkdir(parents=True)
    (release / "shards" / "train-00000.parquet").write_bytes(b"PAR1 not really")
    (release / "data_card.json").write_text("{}")
    meta = {"licenses": [{"license": "MIT", "documents": 3}], "config_hash": "abc"}
    out = version_release(release, meta, VersioningConfig(), tmp_path / "ws")

    dvc_file = yaml.safe_load((tmp_path / "ws" / "releases" / "r1.dvc").read_text())
    assert dvc_file["meta"] == meta
    assert dvc_file["outs"][0]["md5"] == out["md5"] and out["md5"].endswith(".dir")
    assert dvc_file["outs"][0]["nfiles"] == 2
    remote_files = [p for p in (tmp_path / "ws" / "dvc-remote").rglob("*") if p.is_file()]
    assert len(remote_files) == 3  # two files plus the directory manifest
    # Versioning the same content again is stable.
    assert version_release(release, meta, VersioningConfig(), tmp_path / "ws")["md5"] == out["md5"]


def test_a_release_is_current_only_for_the_inputs_it_was_published_from(tmp_path):
    import os

    import polars as pl

    from curation_platform.config import CurationConfig
    from curation_platform.versioning import record_release_inputs, release_inputs, release_is_current
    from curation_platform.workspace import Workspace, write_parquet_atomic

    ws = Workspace(tmp_path / "ws")
    cfg = CurationConfig()
    write_parquet_atomic(pl.DataFrame({"doc_id": ["a"]}), ws.stage_path("final", "d1"))
    write_parquet_atomic(pl.DataFrame({"doc_id": ["a"]}), ws.ledger_path("final", "d1"))
    inputs = release_inputs(ws, cfg, "final", "1.0")
    assert not release_is_current(ws, "latest", inputs, versioned=False)  # never published
    card = ws.release_dir("latest") / "data_card.json"
    card.parent.mkdir(parents=True)
    card.write_text("{}")
    record_release_inputs(ws, "latest", inputs, versioned=False)
    assert release_is_current(ws, "latest", release_inputs(ws, cfg, "final", "1.0"), versioned=False)
    # Without its DVC pointer a versioned release is not current.
    assert not release_is_current(ws, "latest", inputs, versioned=True)
    # Another configuration, another code version, a re-curated drop or a takedown each change the inputs.
    other = CurationConfig.model_validate({"release": {"profile": "research"}})
    assert release_inputs(ws, other, "final", "1.0") != inputs
    assert release_inputs(ws, cfg, "final", "1.1") != inputs
    ledger = ws.ledger_path("final", "d1")
    os.utime(ledger, ns=(ledger.stat().st_atime_ns, ledger.stat().st_mtime_ns + 1))
    assert release_inputs(ws, cfg, "final", "1.0") != inputs
    inputs = release_inputs(ws, cfg, "final", "1.0")
    record_release_inputs(ws, "latest", inputs, versioned=False)
    write_parquet_atomic(pl.DataFrame({"doc_id": ["a"]}), ws.takedowns_path)
    assert not release_is_current(ws, "latest", release_inputs(ws, cfg, "final", "1.0"), versioned=False)
    # A release rebuilt by other means (the UI's build_release job) is not the one recorded.
    card.write_text('{"rebuilt": true}')
    os.utime(card, ns=(card.stat().st_atime_ns, card.stat().st_mtime_ns + 1))
    assert not release_is_current(ws, "latest", inputs, versioned=False)


def test_a_workspace_in_a_git_repository_nested_in_another_dvc_project_gets_its_own_dvc_repository(tmp_path):
    # A data project cloned inside another DVC project's folder (as bench/ does inside this repository): the
    # enclosing project's .dvc must not be used, since `dvc add` cannot track a file of another git repository.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    project = tmp_path / "work" / "project"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    release = project / "ws" / "releases" / "r1"
    release.mkdir(parents=True)
    (release / "data_card.json").write_text("{}")
    out = version_release(release, {"config_hash": "abc"}, VersioningConfig(), project / "ws")

    assert (project / "ws" / ".dvc").is_dir() and out["dvc_file"] == str((project / "ws" / "releases" / "r1.dvc"))
    assert not list((tmp_path / ".dvc").glob("cache/**/*.dir"))  # the enclosing project's cache is untouched
