import os
import stat

import polars as pl
import pytest

from curation_platform.workspace import Workspace, write_parquet_atomic


def test_registration_order_is_fixed_at_first_registration(tmp_path):
    ws = Workspace(tmp_path / "ws")
    ws.register_drops([("b-drop", tmp_path, ""), ("a-drop", tmp_path, "")])
    ws.register_drop("c-drop", tmp_path)
    ws.register_drop("a-drop", tmp_path)  # again: no change
    assert [(d.name, d.order) for d in ws.drops()] == [("a-drop", 0), ("b-drop", 1), ("c-drop", 2)]


def test_index_reads_every_other_drop_in_drop_order(tmp_path):
    ws = Workspace(tmp_path)
    for name in ["d0", "d1", "d2"]:
        ws.register_drop(name, tmp_path)
        write_parquet_atomic(pl.DataFrame({"doc_id": [name]}), ws.index_path("exact", name))
    # A later drop's entries count too: a re-curated earlier drop must find its copies in later drops.
    files = ws.index_files("exact", exclude="d1")
    assert [entry.name for _, entry in files] == ["d0", "d2"]
    assert [pl.read_parquet(path)["doc_id"].item() for path, _ in files] == ["d0", "d2"]
    assert [entry.name for _, entry in ws.index_files("exact")] == ["d0", "d1", "d2"]
    assert Workspace(tmp_path / "empty").index_files("exact") == []


def test_atomic_parquet_write_is_byte_identical_and_leaves_no_temp_files(tmp_path):
    frame = pl.DataFrame({"doc_id": ["a", "b"], "text": ["x", "y"]})
    first = write_parquet_atomic(frame, tmp_path / "a.parquet").read_bytes()
    second = write_parquet_atomic(frame, tmp_path / "a.parquet").read_bytes()
    assert first == second
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    # mkstemp alone creates 0600: other users of the machine could not read a release.
    from curation_platform.workspace import write_parquet_atomic, write_text_atomic

    old = os.umask(umask)
    try:
        parquet = write_parquet_atomic(pl.DataFrame({"a": [1]}), tmp_path / "shards" / "shard-00000.parquet")
        text = write_text_atomic("# card\n", tmp_path / "data_card.md")
    finally:
        os.umask(old)
    assert stat.S_IMODE(parquet.stat().st_mode) == mode
    assert stat.S_IMODE(text.stat().st_mode) == mode
