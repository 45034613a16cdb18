"""Streamed reading of every input format: any ``batch_rows`` gives the same records and quarantine rows (file,
line, reason) as one whole read, batches never exceed ``batch_rows``, and a WARC file is never held whole."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import tracemalloc
import uuid
from pathlib import Path

import polars as pl
import pytest
from warcio.warcwriter import WARCWriter

from curation_platform import readers
from curation_platform.readers import IngestConfig, read_drop, read_drop_batches
from tests.test_readers import check_contract, make_drop
from tests.test_readers_warc import page, response

CFG = IngestConfig(max_record_bytes=400)
BIG = "x" * 500  # over max_record_bytes once encoded as a record

CSV = ('id,text\n'
       '1,First row.\n'
       '2,"A quoted text\nover two lines, with a comma."\n'
       '3,\n'  # empty text, in the middle
       '4,Fourth row.\n'
       f'5,{BIG}\n'  # too large
       '6,"Sixth, ""quoted"" row."\n'
       '7,Last row.\n')


def _parquet(path) -> None:
    """Seven rows in row groups of two: a null text, an empty text and an oversized row in the middle."""
    pl.DataFrame({
        "id": [1, 2, 3, 4, 5, 6, 7],
        "text": ["Row one.", "Row two.", None, "Row four.", "", BIG, "Row seven."],
        "blob": [b"\x00\xff", b"a", b"b", b"c", b"d", b"e", b"f"],
    }).write_parquet(path, row_group_size=2)


def _warc(path, pages: int, body: str = "A short page about harbours and ships.") -> None:
    """``pages`` HTML responses; the 4th is an image (quarantined) and the 6th is truncated."""
    with path.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for number in range(1, pages + 1):
            if number == 4:
                response(writer, f"https://example.org/{number}.png", b"\x89PNG\r\n\x1a\n" + bytes(16), "image/png",
                         "2024-03-01T10:00:00Z")
            else:
                extra = {"WARC-Truncated": "length"} if number == 6 else None
                response(writer, f"https://example.org/{number}", page(f"Page {number}", body).encode(),
                         "text/html; charset=utf-8", "2024-03-01T10:00:00Z", extra)


@pytest.fixture
def mixed_drop(tmp_path):
    lines = [json.dumps({"id": n, "text": f"Line {n}."}) for n in range(1, 6)]
    lines[2] = '{"text": broken'
    drop = make_drop(tmp_path, {
        "a.csv": CSV,
        "b.tsv": "id\ttext\n1\tTab one.\n2\t\n3\tTab three.\n",
        "d.jsonl": "\n".join(lines) + "\n",
        "e.txt": "A page of text.",
    })
    _parquet(drop / "c.parquet")
    _warc(drop / "f.warc.gz", pages=8, body="A short page.")
    return drop


def _read_in_batches(drop, batch_rows: int, cfg: IngestConfig = CFG):
    batches = list(read_drop_batches(drop, cfg, batch_rows=batch_rows))
    assert max(batch.read_count for batch in batches) <= batch_rows
    return pl.concat([b.records for b in batches]), pl.concat([b.quarantine for b in batches]), batches


def test_every_format_reads_the_same_for_any_batch_size(mixed_drop):
    whole = read_drop(mixed_drop, CFG)
    check_contract(whole)
    for batch_rows in (1, 3, 1_000_000):
        records, quarantine, batches = _read_in_batches(mixed_drop, batch_rows)
        assert records.equals(whole.records), batch_rows
        assert quarantine.equals(whole.quarantine), batch_rows
        assert sum(b.read_count for b in batches) == whole.read_count
    # Lines are row numbers (a quoted multi-line CSV record is one row), counted across batches.
    assert whole.quarantine.select("file", "line", "reason").rows() == [
        ("a.csv", 3, "empty text (0 characters after stripping whitespace, min_text_chars 1)"),
        ("a.csv", 5, "record is 520 bytes, over max_record_bytes 400"),
        ("b.tsv", 2, "empty text (0 characters after stripping whitespace, min_text_chars 1)"),
        ("c.parquet", 3, "text field 'text' is null, not a string"),
        ("c.parquet", 5, "empty text (0 characters after stripping whitespace, min_text_chars 1)"),
        ("c.parquet", 6, "record is 532 bytes, over max_record_bytes 400"),
        ("d.jsonl", 3, "malformed JSON: the line is not valid JSON"),
        ("f.warc.gz", 4, "WARC record " + whole.quarantine["source_id"][7] + " is image/png, not HTML"),
        ("f.warc.gz", 6, "truncated WARC record " + whole.quarantine["source_id"][8] + " (WARC-Truncated: length)"),
    ]
    assert whole.records.filter(pl.col("file") == "a.csv").select("line", "text").rows() == [
        (1, "First row."), (2, "A quoted text\nover two lines, with a comma."), (4, "Fourth row."),
        (6, 'Sixth, "quoted" row.'), (7, "Last row.")]
    assert whole.records.filter(pl.col("file") == "c.parquet")["line"].to_list() == [1, 2, 4, 7]
    assert whole.records.filter(pl.col("file") == "f.warc.gz")["line"].to_list() == [1, 2, 3, 5, 7, 8]


def test_a_csv_broken_late_is_one_quarantine_row_for_any_batch_size(tmp_path):
    # Twenty good rows, then a row with too many fields: the file is rejected whole, as when it was read whole,
    # even though batches of its good rows could have been handed on before the bad row was reached.
    body = "id,text\n" + "".join(f"{n},Good row {n}.\n" for n in range(1, 21)) + "21,a,b,c\n22,After.\n"
    drop = make_drop(tmp_path, {"late.csv": body, "ok.jsonl": '{"text": "kept"}\n'})
    for batch_rows in (1, 3, 1_000_000):
        records, quarantine, _ = _read_in_batches(drop, batch_rows)
        assert records["text"].to_list() == ["kept"]
        [(line, reason)] = quarantine.select("line", "reason").rows()
        assert line is None and reason.startswith("corrupt CSV file (found more fields than defined")


def test_gzip_csv_with_format_csv_is_streamed_too(tmp_path):
    drop = make_drop(tmp_path, {"rows.csv.gz": gzip.compress(CSV.encode())}, format="csv")
    plain = make_drop(tmp_path, {"rows.csv": CSV}, name="plain", format="csv")
    expected = read_drop(plain, CFG).records.select("line", "text")
    for batch_rows in (1, 3, 1_000_000):
        records, quarantine, _ = _read_in_batches(drop, batch_rows)
        assert records.select("line", "text").equals(expected)
        assert quarantine["line"].to_list() == [3, 5]


def test_a_warc_file_is_never_held_whole(tmp_path):
    """Python holds each WARC page's payload and decoded text; with batches of 5 pages, the traced peak stays far
    below the pages' total size (reading the whole file first held every page)."""
    body = "Ships and harbours, a long article. " * 400  # about 14 KB per page
    drop = make_drop(tmp_path, {})
    _warc(drop / "crawl.warc.gz", pages=120, body=body)
    total = 120 * len(page("Page 100", body))
    read = 0
    tracemalloc.start()
    try:
        for batch in read_drop_batches(drop, IngestConfig(), batch_rows=5):
            assert batch.read_count <= 5
            read += batch.read_count
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read == 120
    assert peak < total / 4, (peak, total)


def test_parquet_rows_encode_as_polars_read_them(tmp_path):
    """Rows come from pyarrow's row-group reader; their JSON must be what ``pl.read_parquet`` gives (the reader
    used when files were read whole), for every common column type."""
    from datetime import date, datetime
    from decimal import Decimal

    from curation_platform.readers import _table_candidates

    frame = pl.DataFrame({
        "text": ["a", None, "c"], "n": [1, None, -3], "u": pl.Series([1, 2, 3], dtype=pl.UInt8),
        "f": [0.5, float("nan"), None], "b": [True, False, None], "blob": [b"\x00", b"\xff\xfe", None],
        "day": [date(2024, 1, 2), None, date(1999, 12, 31)],
        "at": [datetime(2024, 1, 2, 3, 4, 5), None, datetime(2000, 1, 1)],
        "money": pl.Series([Decimal("1.50"), None, Decimal("-2.25")], dtype=pl.Decimal(10, 2)),
        "tags": [["x", "y"], [], None], "meta": [{"k": 1}, None, {"k": 3}],
        "cat": pl.Series(["p", "q", "p"], dtype=pl.Categorical),
    })
    frame.write_parquet(tmp_path / "t.parquet", row_group_size=2)
    expected = (pl.read_parquet(tmp_path / "t.parquet").with_columns(pl.col(pl.Binary).bin.encode("base64"))
                .select(pl.struct(pl.all()).struct.json_encode())).to_series().to_list()
    for batch_rows in (1, 2, 100):
        parts = list(_table_candidates("t.parquet", tmp_path / "t.parquet", "parquet", batch_rows))
        assert pl.concat(parts)["raw"].to_list() == expected
        assert pl.concat(parts)["line"].to_list() == [1, 2, 3]


def test_a_parquet_file_damaged_between_the_two_passes_keeps_what_was_read(tmp_path):
    """The first pass found the file sound; if it is then damaged while its rows are handed on, the rows already
    read stay and one quarantine row names the row where reading stopped: never a traceback, nothing lost. The
    damage is seen at all only because row groups are read as they are needed (pyarrow's default pre-buffering
    read every row group of the file before the first batch)."""
    from curation_platform.readers import _table_candidates

    path = tmp_path / "t.parquet"
    pl.DataFrame({"text": [f"Row {n} " + "y" * 200 for n in range(1, 13)]}).write_parquet(
        path, row_group_size=2, compression="uncompressed")
    size = path.stat().st_size
    parts = _table_candidates("t.parquet", path, "parquet", batch_rows=2)
    first = next(parts)  # the whole file was read once; now row groups 2 to 6 are damaged
    with path.open("r+b") as handle:
        handle.seek(size // 4)
        handle.write(b"\xff" * (size // 2))
    rest = list(parts)
    lines = [line for part in [first, *rest] for line in part["line"].to_list()]
    last = rest[-1]
    assert last["reason_code"].to_list() == ["corrupt_parquet"]
    stopped = last["line"][0]
    assert lines == [*range(1, stopped), stopped] and 2 <= stopped < 12
    assert last["reason"][0].startswith("corrupt Parquet file (") and last["reason"][0].endswith(f"(at row {stopped})")


_DECIDED_BATCH = readers._decided_batch


def _decided_batch_recording_pid(candidates, manifest, cfg, drop):
    """``_decided_batch`` that leaves its process id in a folder named after the drop (the workers' only way to say
    where they ran: a spawned worker shares nothing else with the test)."""
    folder = Path(tempfile.gettempdir()) / f"ingest-pids-{drop}"
    folder.mkdir(exist_ok=True)
    (folder / str(os.getpid())).touch()
    return _DECIDED_BATCH(candidates, manifest, cfg, drop)


def test_ingest_decides_batches_in_worker_processes_with_the_same_result(mixed_drop, monkeypatch):
    # Repeated records across batches (their doc ids are numbered in input order) and a malformed line.
    repeated = [json.dumps({"id": "same", "text": "The same record."})] * 4 + ['{"text": broken']
    (mixed_drop / "g.jsonl").write_text("\n".join(repeated) + "\n")
    drop = f"pool-{uuid.uuid4().hex}"
    expected = list(read_drop_batches(mixed_drop, CFG, drop=drop, batch_rows=3))
    monkeypatch.setattr(readers, "_decided_batch", _decided_batch_recording_pid)
    pids = Path(tempfile.gettempdir()) / f"ingest-pids-{drop}"
    try:
        pooled = list(read_drop_batches(mixed_drop, CFG, drop=drop, batch_rows=3, workers=2))
        ran_in = {int(p.name) for p in pids.iterdir()}
    finally:
        shutil.rmtree(pids, ignore_errors=True)
    assert len(pooled) == len(expected) > 2
    for mine, theirs in zip(pooled, expected):
        assert mine.records.equals(theirs.records) and mine.quarantine.equals(theirs.quarantine)
        assert mine.input_ids.equals(theirs.input_ids) and mine.metrics == theirs.metrics
    assert len(ran_in) == 2 and os.getpid() not in ran_in
    # Errors still name the file and line; repeats keep distinct ids.
    quarantine = pl.concat([b.quarantine for b in pooled])
    assert ("g.jsonl", 5, "malformed JSON: the line is not valid JSON") in quarantine.select(
        "file", "line", "reason").rows()
    records = pl.concat([b.records for b in pooled]).filter(pl.col("file") == "g.jsonl")
    assert records.height == 4 and records["doc_id"].n_unique() == 4
