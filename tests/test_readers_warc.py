"""WARC drops: files written with warcio here, read back with FastWARC through ``read_drop``."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from curation_platform.ops.normalize import NormalizeConfig, normalize
from curation_platform.readers import IngestConfig, read_drop
from curation_platform.records import INGEST_SCHEMA
from tests.test_readers import make_drop

ARTICLE = ("The harbour museum reopened on Saturday after two years of restoration work. Curators moved the "
           "collection of ship models into the new east wing, where visitors can now see them up close.")


def page(title: str, body: str, charset_meta: str = "") -> str:
    meta = f'<meta charset="{charset_meta}">' if charset_meta else ""
    return (f"<html><head>{meta}<title>{title}</title></head><body><nav><a href='/'>Home</a> | "
            f"<a href='/about'>About</a></nav><article><h1>{title}</h1><p>{body}</p><p>{body}</p></article>"
            "<footer>Copyright 2024 Example Ltd.</footer></body></html>")


def response(writer: WARCWriter, url: str, body: bytes, content_type: str, date: str,
             extra_warc_headers: dict | None = None) -> None:
    http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
    record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                       warc_headers_dict={"WARC-Date": date, **(extra_warc_headers or {})})
    writer.write_record(record)


def write_warc(path: Path, gzip: bool = True) -> None:
    with path.open("wb") as handle:
        writer = WARCWriter(handle, gzip=gzip)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "test"}))
        response(writer, "https://news.example.org/museum", page("Museum", ARTICLE).encode("utf-8"),
                 "text/html; charset=utf-8", "2024-03-01T10:00:00Z")
        # Latin-1 page with the charset declared only in the HTTP header.
        response(writer, "https://fr.example.org/cafe", page("Café", "Un café près de la gare.").encode("latin-1"),
                 "text/html; charset=iso-8859-1", "2024-03-02T11:00:00Z")
        # No charset anywhere: detected.
        response(writer, "https://example.net/plain", page("Plain", "Zoë's naïve café.").encode("utf-8"),
                 "text/html", "2024-03-03T12:00:00Z")
        request = writer.create_warc_record("https://example.net/plain", "request", payload=io.BytesIO(
            b"GET /plain HTTP/1.1\r\nHost: example.net\r\n\r\n"))
        writer.write_record(request)
        response(writer, "https://example.net/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png",
                 "2024-03-04T13:00:00Z")
        response(writer, "https://example.net/big", page("Big", "cut").encode("utf-8"), "text/html",
                 "2024-03-05T14:00:00Z", {"WARC-Truncated": "length"})


def test_warc_records_keep_url_date_and_record_id_and_html_is_extracted(tmp_path):
    drop = make_drop(tmp_path, {})
    write_warc(drop / "crawl-00000.warc.gz")
    result = read_drop(drop, IngestConfig())
    assert result.records.schema == pl.Schema(INGEST_SCHEMA)
    # Five response records: three HTML kept, one image and one truncated quarantined; request/warcinfo skipped.
    assert result.read_count == 5 and len(result.records) == 3 and len(result.quarantine) == 2
    records = result.records.sort("line")
    assert records["url"].to_list() == ["https://news.example.org/museum", "https://fr.example.org/cafe",
                                        "https://example.net/plain"]
    assert records["fetch_date"].to_list() == ["2024-03-01T10:00:00Z", "2024-03-02T11:00:00Z",
                                               "2024-03-03T12:00:00Z"]
    assert records["content_type"].to_list() == ["text/html"] * 3
    assert records["format"].to_list() == ["html"] * 3
    ids = records["warc_record_id"].to_list()
    assert all(i.startswith("<urn:uuid:") for i in ids) and records["source_id"].to_list() == ids
    texts = records["text"].to_list()
    assert "Café" in texts[1] and "près" in texts[1]  # declared Latin-1 decoded
    assert "Zoë's naïve café." in texts[2]  # undeclared UTF-8 detected
    normalized = normalize(records, NormalizeConfig()).kept.sort("line")
    main = normalized["text"][0]
    assert ARTICLE in main and "Copyright 2024" not in main  # main content, not the footer


def test_non_html_and_truncated_records_are_quarantined_with_their_record_id(tmp_path):
    drop = make_drop(tmp_path, {})
    write_warc(drop / "crawl.warc", gzip=False)
    result = read_drop(drop, IngestConfig())
    quarantine = result.quarantine.sort("line")
    assert quarantine["line"].to_list() == [4, 5]
    image, truncated = quarantine["reason"].to_list()
    image_id, truncated_id = quarantine["source_id"].to_list()
    assert image_id.startswith("<urn:uuid:") and image_id in image and "image/png, not HTML" in image
    assert truncated_id in truncated and "WARC-Truncated: length" in truncated


def test_a_warc_cut_short_quarantines_the_damaged_record_and_keeps_the_rest(tmp_path):
    drop = make_drop(tmp_path, {})
    full = tmp_path / "full.warc.gz"
    with full.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for i in range(3):
            response(writer, f"https://example.org/{i}", page(f"Page {i}", ARTICLE).encode(), "text/html",
                     "2024-01-01T00:00:00Z")
    data = full.read_bytes()
    (drop / "cut.warc.gz").write_bytes(data[:-60])  # the last record loses its end
    result = read_drop(drop, IngestConfig())
    assert result.read_count == len(result.records) + len(result.quarantine) == 3
    assert result.records["url"].to_list() == ["https://example.org/0", "https://example.org/1"]
    (reason,) = result.quarantine["reason"].to_list()
    assert "truncated WARC record <urn:uuid:" in reason


def test_format_warc_in_the_manifest_reads_files_without_the_extension(tmp_path):
    drop = make_drop(tmp_path, {}, format="warc")
    write_warc(drop / "segment-1.bin", gzip=True)
    result = read_drop(drop, IngestConfig())
    assert len(result.records) == 3 and set(result.records["format"]) == {"html"}


def test_json_records_with_a_url_field_carry_it(tmp_path):
    drop = make_drop(tmp_path, {"a.jsonl": '{"text": "Hello there.", "url": "https://example.com/x"}\n'
                                           '{"text": "No url here."}\n'})
    result = read_drop(drop, IngestConfig())
    assert result.records["url"].to_list() == ["https://example.com/x", None]
