"""A WARC drop through the engine's first stages with ``run_stage`` (no Dagster): provenance columns survive,
blocklisted URLs leave with their list and entry in the ledger, and line counts persist across drops."""

from __future__ import annotations

import io

import polars as pl
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from curation_platform.config import CurationConfig
from curation_platform.ops.url_filter import BlockList, UrlFilterConfig
from curation_platform.pipeline import STAGES, run_stage
from curation_platform.workspace import Workspace
from tests.test_readers import make_drop

BANNER = "Subscribe to our newsletter for the latest stories from the harbour, delivered every Friday morning."


def article(i: int) -> str:
    words = "river valley farm wheat rain village school stone market bread cheese honey wool".split()
    body = " ".join(words[(i + k) % len(words)] + ("." if k % 9 == 8 else "") for k in range(120))
    return (f"<html><body><nav>Home | News</nav><article><h1>Story {i}</h1><p>Story {i} opens. {body}</p>"
            f"<p>{BANNER}</p></article></body></html>")


def warc_drop(tmp_path, name: str, urls: list[str]):
    drop = make_drop(tmp_path, {}, name=name)
    with (drop / "crawl.warc.gz").open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for i, url in enumerate(urls):
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                url, "response", payload=io.BytesIO(article(i + 100 * len(name)).encode()), http_headers=http))
    return drop


def test_warc_drop_through_url_and_line_dedup_stages(tmp_path):
    (tmp_path / "blocked.txt").write_text("spam.example\n", encoding="utf-8")
    cfg = CurationConfig(url_filter=UrlFilterConfig(lists=[
        BlockList(name="local_spam", kind="domain", path=str(tmp_path / "blocked.txt"))]))
    ws = Workspace(tmp_path / "ws")
    first = warc_drop(tmp_path / "landing", "drop-a", [f"https://news.example.org/{i}" for i in range(3)]
                      + ["https://www.spam.example/offer"])
    second = warc_drop(tmp_path / "landing", "drop-b", [f"https://news.example.org/b{i}" for i in range(3)])
    ws.register_drop("drop-a", first)
    ws.register_drop("drop-b", second)
    stages = ["raw_documents", "url_filtered", "normalized", "language", "line_deduped"]
    # drop-a is curated (every stage), so its line index counts for drop-b.
    for drop, drop_stages in (("drop-a", STAGES), ("drop-b", stages)):
        for stage in drop_stages:
            summary = run_stage(ws, cfg, stage, drop)
            assert summary.input == summary.kept + summary.dropped + summary.quarantined
    ledger = pl.read_parquet(ws.ledger_path("url_filtered", "drop-a")).filter(pl.col("verdict") == "drop")
    assert ledger.select("rule", "detail").rows() == [("url.domain", "list local_spam: matched 'spam.example'")]
    kept = ws.read_stage("line_deduped", "drop-a")
    assert kept["url"].to_list() == [f"https://news.example.org/{i}" for i in range(3)]
    assert kept["warc_record_id"].str.starts_with("<urn:uuid:").all() and kept["fetch_date"].is_not_null().all()
    # The banner is in 3 documents of drop-a (under the bar of 5) and 3 of drop-b: 6 in the corpus, so drop-b
    # loses it everywhere through the persisted index of drop-a, while drop-a keeps it.
    assert ws.index_path("lines", "drop-a").exists()
    assert int(kept["text"].str.contains(BANNER, literal=True).sum()) == 3
    later = ws.read_stage("line_deduped", "drop-b")
    assert later.height == 3 and int(later["text"].str.contains(BANNER, literal=True).sum()) == 0
    # Once drop-a is stale (re-ingested, its later stages not re-run), its lines no longer count.
    run_stage(ws, cfg, "raw_documents", "drop-a")
    for stage in stages:
        run_stage(ws, cfg, stage, "drop-b")
    again = ws.read_stage("line_deduped", "drop-b")
    assert int(again["text"].str.contains(BANNER, literal=True).sum()) == 3
