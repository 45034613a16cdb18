import polars as pl

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
    assert ws.read_index("exact", schema={"doc_id": pl.String}, exclude="d1")["doc_id"].to_list() == ["d0", "d2"]
    assert ws.read_index("exact", schema={"doc_id": pl.String})["doc_id"].to_list() == ["d0", "d1", "d2"]
    assert Workspace(tmp_path / "empty").read_index("exact", schema={"doc_id": pl.String}).is_empty()


def test_atomic_parquet_write_is_byte_identical_and_leaves_no_temp_files(tmp_path):
    frame = pl.DataFrame({"doc_id": ["a", "b"], "text": ["x", "y"]})
    first = write_parquet_atomic(frame, tmp_path / "a.parquet").read_bytes()
    second = write_parquet_atomic(frame, tmp_path / "a.parquet").read_bytes()
    assert first == second
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]
