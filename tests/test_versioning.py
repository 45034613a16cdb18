import subprocess

import yaml

from curation_platform.config import VersioningConfig
from curation_platform.versioning import version_release


def test_release_is_dvc_added_with_meta_and_pushed_to_a_local_remote(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    release = tmp_path / "ws" / "releases" / "r1"
    (release / "shards").mkdir(parents=True)
    (release / "shards" / "shard-00000.parquet").write_bytes(b"PAR1 not really")
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
