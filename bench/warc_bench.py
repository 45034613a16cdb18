"""WARC reading vs main-content extraction, extraction quality, and flagged-word throughput.

    python bench/warc_bench.py --pages 2000 [--seed 0] [--out bench/results/warc.json]

Builds a deterministic WARC (written with warcio, gzip) of real-looking HTML pages: each page wraps one clean
document of ``synthetic_corpus`` (the planted main text) in a header, navigation, a cookie banner, a sidebar of
related links, comments-like boxes and a footer. Then measures, on the same pages:

- FastWARC reading: response records iterated, block digest verified, payload read and decoded (pages/s), and the
  whole ``read_drop`` path (records with doc ids, provenance columns);
- main-content extraction with trafilatura (today's ``normalize`` HTML path) and with resiliparse
  (``extract_plain_text(main_content=True)``): pages/s and bag-of-words precision, recall and F1 of the extracted
  text against the planted main text;
- the flagged-word signal (LDNOOBW) on the synthetic corpus documents: docs/s.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import yaml  # noqa: E402
from fastwarc.warc import ArchiveIterator, WarcRecordType  # noqa: E402
from resiliparse.extract.html2text import extract_plain_text  # noqa: E402
from resiliparse.parse.encoding import bytes_to_str, detect_encoding  # noqa: E402
from warcio.statusandheaders import StatusAndHeaders  # noqa: E402
from warcio.warcwriter import WARCWriter  # noqa: E402

from curation_platform.ops.flagged_words import FlaggedWordsConfig, flagged_word_signals  # noqa: E402
from curation_platform.ops.normalize import NormalizeConfig, _html_to_text  # noqa: E402
from curation_platform.readers import IngestConfig, read_drop  # noqa: E402
from curation_platform.samples import synthetic_corpus  # noqa: E402

NAV = ["Home", "News", "Sport", "Culture", "Travel", "Weather", "Contact us"]
BANNER = "We use cookies to improve your experience. By continuing to browse you accept our cookie policy."
FOOTER = "Copyright 2024 Example Media Group. All rights reserved. Privacy policy | Terms of use | Imprint"


def make_page(rng: np.random.Generator, title: str, main: str) -> str:
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in main.split("\n") if p.strip())
    related = "".join(f"<li><a href='/story/{rng.integers(1e6)}'>Related story {rng.integers(1e4)}</a></li>"
                      for _ in range(6))
    nav = "".join(f"<li><a href='/{n.lower()}'>{n}</a></li>" for n in NAV)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} | Example News</title></head><body>"
        f"<div class='cookie-banner'>{BANNER}</div><header><nav><ul>{nav}</ul></nav></header>"
        f"<main><article><h1>{html.escape(title)}</h1><div class='byline'>By Staff Writer</div>"
        f"{paragraphs}</article>"
        f"<aside><h3>Related</h3><ul>{related}</ul></aside>"
        "<section class='share'>Share this article: Facebook Twitter Email</section></main>"
        f"<footer>{FOOTER}</footer></body></html>"
    )


def build_warc(path: Path, docs: pl.DataFrame, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    mains: list[str] = []
    with path.open("wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for i, text in enumerate(docs["text"].to_list()):
            title = text.split(".")[0][:80]
            body = make_page(rng, title, text).encode("utf-8")
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            record = writer.create_warc_record(f"https://news.example.org/story/{i}", "response",
                                               payload=io.BytesIO(body), http_headers=http)
            writer.write_record(record)
            mains.append(text)
    return mains


def _words(text: str | None) -> Counter:
    return Counter(re.findall(r"\w+", (text or "").lower()))


def bag_f1(extracted: list[str | None], reference: list[str]) -> dict[str, float]:
    """Micro-averaged bag-of-words precision, recall and F1 (the trafilatura evaluation's measure)."""
    tp = fp = fn = 0
    for got, ref in zip(extracted, reference):
        g, r = _words(got), _words(ref)
        overlap = sum((g & r).values())
        tp += overlap
        fp += sum(g.values()) - overlap
        fn += sum(r.values()) - overlap
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / max(precision + recall, 1e-12), 4)}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def fastwarc_read(path: Path) -> list[str]:
    pages = []
    for record in ArchiveIterator(str(path), record_types=WarcRecordType.response, parse_http=False):
        record.verify_block_digest(consume=False)
        record.parse_http()
        payload = record.reader.read()
        try:
            pages.append(payload.decode(record.http_charset or "utf-8"))
        except (LookupError, UnicodeDecodeError):
            pages.append(bytes_to_str(payload, detect_encoding(payload)))
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flagged-docs", type=int, default=20000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    corpus = synthetic_corpus(args.pages * 2, seed=args.seed)
    clean = corpus.filter(pl.col("planted") == "clean").head(args.pages)
    results: dict = {"pages": clean.height}
    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(tmp) / "warc-bench"
        drop.mkdir()
        (drop / "manifest.yaml").write_text(yaml.safe_dump({
            "source": "bench", "kind": "web", "license": "CC-BY-4.0", "provenance": {"description": "bench"}}))
        warc = drop / "crawl.warc.gz"
        mains = build_warc(warc, clean, args.seed)
        results["warc_bytes"] = warc.stat().st_size

        pages, seconds = timed(lambda: fastwarc_read(warc))
        results["fastwarc_read_pages_per_s"] = round(len(pages) / seconds)
        ingested, seconds = timed(lambda: read_drop(drop, IngestConfig()))
        results["read_drop_pages_per_s"] = round(ingested.read_count / seconds)

        series = pl.Series("text", pages)
        (traf, _), seconds = timed(lambda: _html_to_text(series, NormalizeConfig()))
        results["trafilatura"] = {"pages_per_s": round(len(pages) / seconds), **bag_f1(traf.to_list(), mains)}
        resi, seconds = timed(lambda: [extract_plain_text(p, main_content=True, alt_texts=False,
                                                          links=False, list_bullets=False) for p in pages])
        results["resiliparse"] = {"pages_per_s": round(len(pages) / seconds), **bag_f1(resi, mains)}

    docs = synthetic_corpus(args.flagged_docs, seed=args.seed).select(
        pl.col("id").alias("doc_id"), "text", pl.lit("web").alias("kind"), pl.lit("bench").alias("source"),
        pl.lit("en").alias("language"))
    # In the pipeline the signal runs after quality_signals, which has counted the words already.
    docs = docs.with_columns(pl.col("text").str.split(" ").list.len().alias("word_count"))
    _, seconds = timed(lambda: flagged_word_signals(docs, FlaggedWordsConfig()))
    results["flagged_words_docs_per_s"] = round(docs.height / seconds)
    results["flagged_words_mean_doc_chars"] = round(float(docs["text"].str.len_chars().mean()))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
