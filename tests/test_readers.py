"""Tests for curation_platform/readers.py: every format, every quarantine reason, identity and reconciliation."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import polars as pl
import pytest
import xxhash
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from curation_platform.errors import ManifestError, UnsafePathError
from curation_platform.readers import QUARANTINE_SCHEMA, IngestConfig, read_drop
from curation_platform.records import INGEST_SCHEMA, MESSAGES_DTYPE, RECORD_SCHEMA

MANIFEST = {
    "source": "example",
    "kind": "web",
    "license": "cc-by-4.0",
    "language": "en",
    "provenance": {"url": "https://example.org/dump", "collected_at": "2024-05-01"},
}


def make_drop(root: Path, files: dict[str, str | bytes], name: str = "drop-1", **manifest) -> Path:
    """A drop folder with manifest.yaml (MANIFEST updated by ``manifest``) and the given files."""
    drop = root / name
    drop.mkdir(parents=True)
    (drop / "manifest.yaml").write_text(yaml.safe_dump({**MANIFEST, **manifest}), encoding="utf-8")
    for rel, content in files.items():
        path = drop / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return drop


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def doc_id(*parts: str) -> str:
    return xxhash.xxh3_128_hexdigest("\x1f".join(parts).encode("utf-8"))


def quarantined(result, file: str) -> list[tuple]:
    return result.quarantine.filter(pl.col("file") == file).select("line", "reason").rows()


def check_contract(result) -> None:
    assert result.records.schema == pl.Schema(INGEST_SCHEMA)
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert result.read_count == len(result.records) + len(result.quarantine)
    ids = pl.concat([result.records["doc_id"], result.quarantine["doc_id"]])
    assert ids.null_count() == 0 and ids.n_unique() == len(ids)


CFG = IngestConfig()


# --- clean formats ---------------------------------------------------------------------------------------------


def test_clean_jsonl_gives_canonical_records(tmp_path):
    drop = make_drop(tmp_path, {"part-0.jsonl": jsonl({"id": "a-1", "text": "Hello world."}, {"text": "Second."})})
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.read_count == 2 and result.quarantine.is_empty()
    rows = result.records.to_dicts()
    assert rows[0] == {
        "doc_id": doc_id("example", "drop-1", "a-1", "Hello world."),
        "source": "example",
        "drop": "drop-1",
        "source_id": "a-1",
        "license": "CC-BY-4.0",
        "kind": "web",
        "text": "Hello world.",
        "messages": None,
        "provenance": '{"collected_at": "2024-05-01", "url": "https://example.org/dump"}',
        "file": "part-0.jsonl",
        "line": 1,
        "format": "jsonl",
        "code_language": None,
        "declared_language": "en",
        "url": None,
        "fetch_date": None,
        "content_type": None,
        "warc_record_id": None,
        "tests": None,
    }
    # Without an id the line is the record's id inside the drop.
    assert rows[1]["source_id"] == "part-0.jsonl:2"
    assert rows[1]["doc_id"] == doc_id("example", "drop-1", "part-0.jsonl:2", "Second.")


def test_custom_text_and_id_fields_and_numeric_ids(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"uid": 17, "body": "Text in body."}, {"uid": "", "body": "No id."})},
                     text_field="body", id_field="uid")
    records = read_drop(drop, CFG).records
    assert records["source_id"].to_list() == ["17", "a.jsonl:2"]  # an empty id falls back to file:line
    assert records["text"].to_list() == ["Text in body.", "No id."]


def test_blank_lines_crlf_and_bom_are_not_records(tmp_path):
    content = b'\xef\xbb\xbf{"text": "first"}\r\n\r\n   \n{"text": "second"}'  # no final newline either
    result = read_drop(make_drop(tmp_path, {"a.jsonl": content}), CFG)
    check_contract(result)
    assert result.read_count == 2
    assert result.records.select("line", "text").rows() == [(1, "first"), (4, "second")]


def test_gzip_jsonl(tmp_path):
    data = gzip.compress(jsonl({"text": "one"}, {"text": "two"}).encode())
    result = read_drop(make_drop(tmp_path, {"a.jsonl.gz": data}), CFG)
    check_contract(result)
    assert result.records.select("file", "line", "text", "format").rows() == [
        ("a.jsonl.gz", 1, "one", "jsonl"), ("a.jsonl.gz", 2, "two", "jsonl")]


def test_parquet(tmp_path):
    drop = make_drop(tmp_path, {})
    pl.DataFrame({"id": [7, 8], "text": ["Row one.", "Row two."], "extra": [b"\x00\xff", b"x"]}).write_parquet(
        drop / "t.parquet")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records.select("source_id", "text", "file", "line", "format").rows() == [
        ("7", "Row one.", "t.parquet", 1, "parquet"), ("8", "Row two.", "t.parquet", 2, "parquet")]


def test_parquet_with_non_string_text_column(tmp_path):
    drop = make_drop(tmp_path, {})
    pl.DataFrame({"text": [1, 2]}).write_parquet(drop / "t.parquet")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert quarantined(result, "t.parquet") == [
        (1, "text field 'text' is a number, not a string"), (2, "text field 'text' is a number, not a string")]


def test_csv_and_tsv(tmp_path):
    drop = make_drop(tmp_path, {
        "a.csv": 'id,text\n1,"Quoted, with comma"\n2,\n',
        "b.tsv": "id\ttext\nx\tTab separated\n",
    })
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records.select("file", "line", "source_id", "text", "format").rows() == [
        ("a.csv", 1, "1", "Quoted, with comma", "csv"), ("b.tsv", 1, "x", "Tab separated", "csv")]
    # An empty cell is an empty text, not a missing one.
    assert quarantined(result, "a.csv") == [
        (2, "empty text (0 characters after stripping whitespace, min_text_chars 1)")]


def test_one_document_per_file_formats(tmp_path):
    html = "<html><body><p>Raw HTML stays raw.</p></body></html>"
    drop = make_drop(tmp_path, {
        "docs/readme.md": "# Title\n\nSome *markdown*.\n",
        "docs/notes.txt": "Plain notes.\n",
        "pages/index.html": html,
        "src/main.py": "print('hi')\n",
        "src/lib.rs": "fn main() {}\n",
        "src/app.ts": "let x: number = 1;\n",
        "src/run.sh": "echo hi\n",
        "src/Makefile": "all:\n\techo hi\n",
    }, kind="code")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records.select("file", "source_id", "line", "format", "code_language").rows() == [
        ("docs/notes.txt", "docs/notes.txt", None, "text", None),
        ("docs/readme.md", "docs/readme.md", None, "markdown", None),
        ("pages/index.html", "pages/index.html", None, "html", None),
        ("src/Makefile", "src/Makefile", None, "code", "makefile"),
        ("src/app.ts", "src/app.ts", None, "code", "typescript"),
        ("src/lib.rs", "src/lib.rs", None, "code", "rust"),
        ("src/main.py", "src/main.py", None, "code", "python"),
        ("src/run.sh", "src/run.sh", None, "code", "shell"),
    ]
    texts = dict(result.records.select("file", "text").rows())
    assert texts["pages/index.html"] == html
    assert texts["docs/readme.md"] == "# Title\n\nSome *markdown*.\n"
    assert set(result.records["kind"]) == {"code"}


def test_manifest_format_forces_the_reader(tmp_path):
    drop = make_drop(tmp_path, {"a.log": "Log lines as one document.\n", "b.data": "More text.\n"}, format="text")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records.select("file", "format").rows() == [("a.log", "text"), ("b.data", "text")]


def test_non_data_files_are_skipped_and_order_is_sorted(tmp_path):
    drop = make_drop(tmp_path, {
        "z.jsonl": jsonl({"text": "z"}),
        "a/b.jsonl": jsonl({"text": "ab"}),
        "a.jsonl": jsonl({"text": "a"}),
        "_READY": "",
        ".hidden.jsonl": jsonl({"text": "hidden"}),
        ".git/config": "[core]\n",
        "sub/manifest.yaml": "source: nested\n",
    })
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records["file"].to_list() == ["a.jsonl", "a/b.jsonl", "z.jsonl"]
    assert result.read_count == 3


def test_empty_drop_has_empty_frames_with_the_right_schema(tmp_path):
    result = read_drop(make_drop(tmp_path, {"empty.jsonl": ""}), CFG)
    check_contract(result)
    assert result.read_count == 0 and result.records.is_empty() and result.quarantine.is_empty()


def test_drop_argument_names_the_drop(tmp_path):
    result = read_drop(make_drop(tmp_path, {"a.jsonl": jsonl({"text": "x"})}), CFG, drop="2024-05-01-web")
    assert result.records["drop"].to_list() == ["2024-05-01-web"]


def test_generator_goes_into_provenance(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "Synthetic."})}, kind="synthetic",
                     generator={"model": "example-7b", "terms": "https://example.org/terms"})
    provenance = json.loads(read_drop(drop, CFG).records["provenance"][0])
    assert provenance == {"collected_at": "2024-05-01", "url": "https://example.org/dump",
                          "generator": {"model": "example-7b", "terms": "https://example.org/terms"}}


# --- identity --------------------------------------------------------------------------------------------------


def test_repeated_id_and_text_get_distinct_doc_ids(tmp_path):
    same = {"id": "r", "text": "Same text."}
    drop = make_drop(tmp_path, {"a.jsonl": jsonl(same, same, {"id": "r", "text": "Other."}, same)})
    records = read_drop(drop, CFG).records
    base = "example\x1fdrop-1\x1fr\x1fSame text."
    assert records["doc_id"].to_list() == [
        doc_id(base), doc_id(base + "\x1f2"), doc_id("example", "drop-1", "r", "Other."), doc_id(base + "\x1f3")]


def test_reading_twice_gives_identical_frames(tmp_path):
    drop = make_drop(tmp_path, {
        "a.jsonl": jsonl({"text": "one"}, "broken", {"text": "two"}),
        "b.md": "# b\n",
        "c.bin": b"\x00\x01",
    })
    first, second = read_drop(drop, CFG), read_drop(drop, CFG)
    assert_frame_equal(first.records, second.records)
    assert_frame_equal(first.quarantine, second.quarantine)
    assert first.read_count == second.read_count == 5
    assert first.metrics == second.metrics


# --- quarantine: every bad-input case -------------------------------------------------------------------------


def test_malformed_json_line(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "ok"}, '{"text": "unterminated', {"text": "fine"})})
    result = read_drop(drop, CFG)
    check_contract(result)
    assert quarantined(result, "a.jsonl") == [(2, "malformed JSON: the line is not valid JSON")]
    row = result.quarantine.row(0, named=True)
    assert row["excerpt"] == '{"text": "unterminated'
    assert row["source_id"] == "a.jsonl:2" and row["license"] == "cc-by-4.0"
    assert row["doc_id"] == doc_id("example", "drop-1", "a.jsonl", "2")
    assert result.records["line"].to_list() == [1, 3]


def test_invalid_utf8_line(tmp_path):
    content = b'{"text": "good"}\n{"text": "bad \xff\xfe bytes"}\n{"text": "good again"}\n'
    result = read_drop(make_drop(tmp_path, {"a.jsonl": content}), CFG)
    check_contract(result)
    assert quarantined(result, "a.jsonl") == [(2, "invalid UTF-8 in line")]
    assert result.quarantine["excerpt"][0].startswith('{"text": "bad ')
    assert result.records["text"].to_list() == ["good", "good again"]


@pytest.mark.parametrize(("line", "reason"), [
    ({"title": "no text"}, "text field 'text' is missing; set `text_field` in the manifest if it has another name"),
    ({"text": 42}, "text field 'text' is a number, not a string"),
    ({"text": None}, "text field 'text' is null, not a string"),
    ({"text": ["a", "b"]}, "text field 'text' is an array, not a string"),
    ({"text": " \n\t "}, "empty text (0 characters after stripping whitespace, min_text_chars 1)"),
    ([1, 2, 3], "record is an array in JSON, not an object"),
    ("\"just a string\"", "record is a string in JSON, not an object"),
])
def test_records_without_usable_text(tmp_path, line, reason):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "keeper"}, line)})
    result = read_drop(drop, CFG)
    check_contract(result)
    assert quarantined(result, "a.jsonl") == [(2, reason)]


def test_record_size_boundary(tmp_path):
    line = json.dumps({"text": "x" * 50})
    drop = make_drop(tmp_path, {"a.jsonl": jsonl(line)})
    size = len(line.encode())
    assert len(read_drop(drop, IngestConfig(max_record_bytes=size)).records) == 1
    result = read_drop(drop, IngestConfig(max_record_bytes=size - 1))
    check_contract(result)
    assert quarantined(result, "a.jsonl") == [(1, f"record is {size} bytes, over max_record_bytes {size - 1}")]
    assert result.quarantine["excerpt"][0] == line[:200]


def test_file_size_boundary_for_one_document_files(tmp_path):
    drop = make_drop(tmp_path, {"doc.txt": "y" * 100})
    assert len(read_drop(drop, IngestConfig(max_record_bytes=100)).records) == 1
    result = read_drop(drop, IngestConfig(max_record_bytes=99))
    assert quarantined(result, "doc.txt") == [(None, "record is 100 bytes, over max_record_bytes 99")]


def test_parquet_row_size_counts_the_row(tmp_path):
    drop = make_drop(tmp_path, {})
    pl.DataFrame({"text": ["a" * 20]}).write_parquet(drop / "t.parquet")
    size = len(json.dumps({"text": "a" * 20}, separators=(",", ":")))
    assert len(read_drop(drop, IngestConfig(max_record_bytes=size)).records) == 1
    result = read_drop(drop, IngestConfig(max_record_bytes=size - 1))
    assert quarantined(result, "t.parquet") == [(1, f"record is {size} bytes, over max_record_bytes {size - 1}")]


def test_min_text_chars_boundary(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "  abcd "}, {"text": "abcde"})})
    result = read_drop(drop, IngestConfig(min_text_chars=5))
    assert result.records["text"].to_list() == ["abcde"]
    assert quarantined(result, "a.jsonl") == [
        (1, "empty text (4 characters after stripping whitespace, min_text_chars 5)")]


def test_truncated_gzip_keeps_records_before_the_damage(tmp_path):
    rng = random.Random(7)
    lines = [{"id": i, "text": " ".join(f"{rng.random():.12f}" for _ in range(40))} for i in range(400)]
    data = gzip.compress(jsonl(*lines).encode())
    result = read_drop(make_drop(tmp_path, {"a.jsonl.gz": data[: len(data) // 2]}), CFG)
    check_contract(result)
    kept = result.records
    assert 0 < len(kept) < 400
    # Exactly the first k records survive, unchanged and in order.
    assert kept["text"].to_list() == [line["text"] for line in lines[: len(kept)]]
    assert quarantined(result, "a.jsonl.gz") == [(
        len(kept) + 1,
        f"corrupt gzip (file is truncated: the compressed stream ends early) at line {len(kept) + 1}; the rest of "
        f"the file could not be read ({len(kept)} lines before it were read); re-export or re-compress the file",
    )]
    assert json.dumps(lines[len(kept)]).startswith(result.quarantine["excerpt"][0][:20])


def test_file_that_is_not_gzip_at_all(tmp_path):
    result = read_drop(make_drop(tmp_path, {"a.jsonl.gz": b'{"text": "plain, not gzip"}\n'}), CFG)
    check_contract(result)
    [(line, reason)] = quarantined(result, "a.jsonl.gz")
    assert line == 1 and reason.startswith("corrupt gzip (Error -3 while decompressing data: incorrect header check)")
    assert result.records.is_empty()


def test_corrupt_parquet_is_one_row_for_the_file(tmp_path):
    result = read_drop(make_drop(tmp_path, {"bad.parquet": b"PAR1 this is not parquet"}), CFG)
    check_contract(result)
    [(line, reason)] = quarantined(result, "bad.parquet")
    assert line is None and reason.startswith("corrupt Parquet file (") and reason.endswith("re-export the file")
    assert result.quarantine["source_id"][0] == "bad.parquet"
    assert result.quarantine["doc_id"][0] == doc_id("example", "drop-1", "bad.parquet", "")


@pytest.mark.parametrize("content", [
    'id,text\n1,"unterminated\n2,ok\n',
    "id,text\n1,a,b,c\n",
    b"id,text\n1,\xff\xfe\n",
])
def test_corrupt_csv_is_one_row_for_the_file(tmp_path, content):
    result = read_drop(make_drop(tmp_path, {"bad.csv": content, "ok.jsonl": jsonl({"text": "kept"})}), CFG)
    check_contract(result)
    [(line, reason)] = quarantined(result, "bad.csv")
    assert line is None and reason.startswith("corrupt CSV file (")
    assert result.records["text"].to_list() == ["kept"]


def test_unknown_formats_are_one_row_per_file(tmp_path):
    drop = make_drop(tmp_path, {"a.xlsx": b"PK\x03\x04binary", "b.pdf": b"%PDF-1.7", "noext": "what am I"})
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.quarantine.select("file", "line").rows() == [("a.xlsx", None), ("b.pdf", None), ("noext", None)]
    assert result.quarantine["reason"][0].startswith("unknown file format (extension '.xlsx')")
    assert result.quarantine["reason"][2].startswith("unknown file format (extension 'none')")
    assert result.quarantine["excerpt"][1] == "%PDF-1.7"


def test_invalid_utf8_text_file(tmp_path):
    result = read_drop(make_drop(tmp_path, {"doc.txt": b"caf\xe9 latin-1"}), CFG)
    assert quarantined(result, "doc.txt") == [(None, "invalid UTF-8 at byte 3")]


# --- licenses --------------------------------------------------------------------------------------------------


def test_per_record_license_split(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl(
        {"id": 1, "text": "MIT text.", "lic": "mit"},
        {"id": 2, "text": "Apache text.", "lic": "Apache 2.0"},
        {"id": 3, "text": "Odd license.", "lic": "WTFPL-ish"},
        {"id": 4, "text": "No license."},
        {"id": 5, "text": "Blank license.", "lic": "  "},
    )}, license="per-record", license_field="lic")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records.select("source_id", "license").rows() == [("1", "MIT"), ("2", "Apache-2.0")]
    assert result.quarantine.select("line", "reason", "license").rows() == [
        (3, "unknown license 'WTFPL-ish' (field 'lic'); closest known id: WTFPL; use an SPDX id or expression",
         "WTFPL-ish"),
        (4, "license missing (field 'lic' is empty or absent)", None),
        (5, "license missing (field 'lic' is empty or absent)", "  "),
    ]


def test_unknown_manifest_license_quarantines_every_record(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "one"}, {"text": "two"})}, license="Some Custom EULA")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records.is_empty()
    assert result.quarantine["reason"].to_list() == [
        "unknown license 'Some Custom EULA' (manifest `license`); closest known id: "
        "LicenseRef-scancode-safecopy-eula; use an SPDX id or expression"] * 2


# --- chat ------------------------------------------------------------------------------------------------------


def test_chat_drop_with_messages(tmp_path):
    conversation = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    drop = make_drop(tmp_path, {"c.jsonl": jsonl({"id": "c1", "messages": conversation})}, kind="chat")
    result = read_drop(drop, CFG)
    check_contract(result)
    row = result.records.row(0, named=True)
    assert row["text"] == "user: Hi there\n\nassistant: Hello! How can I help?"
    assert row["messages"] == conversation
    assert row["format"] == "chat" and row["kind"] == "chat"
    assert result.records.schema["messages"] == MESSAGES_DTYPE


def test_chat_drop_with_prompt_and_response(tmp_path):
    drop = make_drop(tmp_path, {"c.jsonl": jsonl({"prompt": "2+2?", "response": "4"})}, kind="chat")
    row = read_drop(drop, CFG).records.row(0, named=True)
    assert row["text"] == "user: 2+2?\n\nassistant: 4"
    assert row["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("record", [
    {"messages": []},
    {"messages": [{"role": "user"}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": ["user: hi"]},
    {"messages": [{"role": "user", "content": "   "}]},
    {"prompt": "only a prompt"},
    {"prompt": "q", "response": ""},
    {"text": "a plain text record"},
])
def test_chat_records_without_usable_turns(tmp_path, record):
    drop = make_drop(tmp_path, {"c.jsonl": jsonl({"prompt": "ok?", "response": "ok"}, record)}, kind="chat")
    result = read_drop(drop, CFG)
    check_contract(result)
    [(line, reason)] = quarantined(result, "c.jsonl")
    assert line == 2 and reason.startswith("chat record without usable messages")


def test_chat_parquet_and_csv(tmp_path):
    drop = make_drop(tmp_path, {
        "c.csv": 'id,messages\n1,"[{""role"": ""user"", ""content"": ""csv q""}, '
                 '{""role"": ""assistant"", ""content"": ""csv a""}]"\n',
    }, kind="chat")
    pl.DataFrame(
        {"messages": [[{"role": "user", "content": "pq q"}, {"role": "assistant", "content": "pq a"}]]},
        schema={"messages": MESSAGES_DTYPE},
    ).write_parquet(drop / "p.parquet")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert result.records.select("file", "text").rows() == [
        ("c.csv", "user: csv q\n\nassistant: csv a"), ("p.parquet", "user: pq q\n\nassistant: pq a")]


# --- unsafe paths and manifests --------------------------------------------------------------------------------


def test_symlink_to_outside_the_drop_is_refused(tmp_path):
    outside = tmp_path / "secret.jsonl"
    outside.write_text(jsonl({"text": "not yours"}))
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "ok"})})
    (drop / "link.jsonl").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="link.jsonl points outside the drop"):
        read_drop(drop, CFG)


def test_every_escaping_link_is_reported_at_once(tmp_path):
    outside = tmp_path / "secret.jsonl"
    outside.write_text(jsonl({"text": "not yours"}))
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "ok"})})
    (drop / "link1.jsonl").symlink_to(outside)
    (drop / "sub").mkdir()
    (drop / "sub" / "link2.jsonl").symlink_to(outside)
    with pytest.raises(UnsafePathError) as error:
        read_drop(drop, CFG)
    assert "link1.jsonl points outside" in str(error.value) and "sub/link2.jsonl points outside" in str(error.value)


def test_symlinked_folder_to_outside_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "ok"})})
    (drop / "more").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="'drop-1': more points outside"):
        read_drop(drop, CFG)


def test_symlink_with_dotdot_escaping_is_refused(tmp_path):
    (tmp_path / "x.jsonl").write_text(jsonl({"text": "x"}))
    drop = make_drop(tmp_path, {})
    (drop / "up.jsonl").symlink_to(Path("..") / "x.jsonl")
    with pytest.raises(UnsafePathError, match="up.jsonl"):
        read_drop(drop, CFG)


def test_symlink_inside_the_drop_is_fine(tmp_path):
    drop = make_drop(tmp_path, {"data/a.jsonl": jsonl({"text": "ok"})})
    (drop / "alias.jsonl").symlink_to(Path("data") / "a.jsonl")
    result = read_drop(drop, CFG)
    assert result.records["file"].to_list() == ["alias.jsonl", "data/a.jsonl"]


def test_dangling_symlink_inside_is_quarantined(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "ok"})})
    (drop / "gone.jsonl").symlink_to(drop / "never-written.jsonl")
    result = read_drop(drop, CFG)
    check_contract(result)
    assert quarantined(result, "gone.jsonl") == [
        (None, "not a regular file (dangling symlink, pipe or device); replace it with the data file")]


def test_bad_manifest_raises_manifest_error(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": jsonl({"text": "ok"})}, kind="podcast")
    with pytest.raises(ManifestError, match="field 'kind'"):
        read_drop(drop, CFG)


def test_config_defaults_and_forbids_unknown_fields():
    assert (CFG.max_record_bytes, CFG.settle_seconds, CFG.min_text_chars) == (1_000_000, 10, 1)
    with pytest.raises(ValueError):
        IngestConfig(max_bytes=5)


# --- reconciliation --------------------------------------------------------------------------------------------

_good = st.fixed_dictionaries({"text": st.text(min_size=0, max_size=30)}).map(json.dumps)
_other = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(st.integers(), st.none(), st.booleans())}).map(json.dumps),
    st.fixed_dictionaries({"id": st.sampled_from(["a", "b"]), "text": st.sampled_from(["dup", "dup", " "])})
    .map(json.dumps),
    st.fixed_dictionaries({"text": st.text(max_size=5), "lic": st.sampled_from(["MIT", "nope", ""])}).map(json.dumps),
    st.text(alphabet="{}[]\":,ab 1", max_size=12),  # mostly malformed JSON
)
_line = st.one_of(_good.map(str.encode), _other.map(str.encode), st.binary(max_size=12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_line, max_size=25), limit=st.integers(min_value=5, max_value=60))
def test_every_input_record_is_kept_or_quarantined(tmp_path_factory, lines, limit):
    root = tmp_path_factory.mktemp("prop")
    body = b"\n".join(line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines)
    drop = make_drop(root, {"a.jsonl": body, "b.txt": body[:40]})
    result = read_drop(drop, IngestConfig(max_record_bytes=limit))
    check_contract(result)
    lines_read = body.removeprefix(b"\xef\xbb\xbf").split(b"\n")  # a leading byte order mark is dropped
    non_blank = sum(1 for line in lines_read if line.strip(b" \t\r"))
    assert result.read_count == non_blank + 1  # plus the one text file


def test_the_same_record_in_two_drops_gets_two_doc_ids(tmp_path):
    record = {"id": "1", "text": "The same article republished in both drops."}
    first = read_drop(make_drop(tmp_path, {"a.jsonl": jsonl(record)}, name="2024-01"), CFG).records
    second = read_drop(make_drop(tmp_path, {"a.jsonl": jsonl(record)}, name="2024-02"), CFG).records
    assert first["doc_id"][0] != second["doc_id"][0]
    assert first["doc_id"][0] == doc_id("example", "2024-01", "1", record["text"])


def test_batches_read_files_incrementally_and_concatenate_to_the_whole_read(tmp_path):
    from curation_platform.readers import read_drop_batches

    rng = random.Random(3)
    lines = [{"id": i, "text": " ".join(f"{rng.random():.12f}" for _ in range(40))} for i in range(60)]
    data = gzip.compress(jsonl(*lines).encode())
    plain = (b'\xef\xbb\xbf{"text": "first"}\r\n\r\n{"text": "first"}\n{"text": broken\n'
             + jsonl(*[{"text": "same"}] * 3).encode())  # repeated records keep distinct ids across batches
    drop = make_drop(tmp_path, {"a.jsonl": plain, "b.jsonl.gz": data[: len(data) // 2], "c.txt": "A page.",
                                "d.md": "# Notes", "e.parquet": b""})
    pl.DataFrame({"text": ["row one", "row two", "row three"]}).write_parquet(drop / "e.parquet")
    whole = read_drop(drop, CFG)
    check_contract(whole)
    assert whole.quarantine["reason"].str.starts_with("corrupt gzip").sum() == 1
    for batch_rows in (1, 2, 5):
        batches = list(read_drop_batches(drop, CFG, batch_rows=batch_rows))
        # Each batch holds at most batch_rows input records: no file is read whole into one batch.
        assert max(b.read_count for b in batches) <= batch_rows and len(batches) >= whole.read_count / batch_rows
        assert pl.concat([b.records for b in batches]).equals(whole.records)
        assert pl.concat([b.quarantine for b in batches]).equals(whole.quarantine)
        # Input order: the ledger lists records and quarantined inputs as they appear in the files.
        order = pl.concat([b.input_ids for b in batches])
        expected = pl.concat([whole.records.select("doc_id", "file", "line"),
                              whole.quarantine.select("doc_id", "file", "line")]).sort("file", "line")["doc_id"]
        assert order.to_list() == expected.to_list()
