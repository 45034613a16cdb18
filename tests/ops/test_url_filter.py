"""Tests for ops/url_filter.py: blocklisted domains and URLs, banned words, allow-lists, no-URL documents."""

from __future__ import annotations

import polars as pl

from curation_platform.ops.url_filter import BlockList, UrlFilterConfig, filter_urls, url_matches


def docs(urls, sources=None):
    n = len(urls)
    return pl.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "source": sources or ["crawl"] * n,
                         "kind": ["web"] * n, "text": ["Some text."] * n, "url": urls},
                        schema_overrides={"url": pl.String})


def small_lists(tmp_path) -> UrlFilterConfig:
    (tmp_path / "domains.txt").write_text("# adult\nbad-site.com\nWWW.Malware.example\n", encoding="utf-8")
    (tmp_path / "urls.txt").write_text("good.org/one/bad/page\n", encoding="utf-8")
    (tmp_path / "words.txt").write_text("casino\n", encoding="utf-8")
    (tmp_path / "soft.txt").write_text("hot\nsingles\n", encoding="utf-8")
    (tmp_path / "sub.txt").write_text("xxxvideo\n", encoding="utf-8")
    return UrlFilterConfig(lists=[
        BlockList(name="my_domains", kind="domain", path=str(tmp_path / "domains.txt")),
        BlockList(name="my_urls", kind="url", path=str(tmp_path / "urls.txt")),
        BlockList(name="my_words", kind="word", path=str(tmp_path / "words.txt")),
        BlockList(name="my_soft", kind="soft_word", path=str(tmp_path / "soft.txt")),
        BlockList(name="my_sub", kind="subword", path=str(tmp_path / "sub.txt")),
    ])


def test_each_check_drops_and_names_its_list_and_entry(tmp_path):
    cfg = small_lists(tmp_path)
    frame = docs([
        "https://bad-site.com/page",  # domain
        "http://cdn.images.bad-site.com:8080/x.jpg",  # subdomain of a listed domain
        "https://malware.example/",  # listed with www. and upper case
        "https://www.good.org/one/bad/page/",  # listed URL (scheme, www. and trailing slash ignored)
        "https://news.org/online-casino-guide",  # banned word
        "https://news.org/hot-singles-near-you",  # two soft words
        "https://news.org/hot-weather",  # one soft word: kept
        "https://news.org/freeXXXVideo",  # banned sub-word inside a word
        "https://not-bad-site.com/",  # a different domain that merely ends with the name: kept
        "https://good.org/one/bad/page/two",  # a longer URL than the listed one: kept
        None,  # no URL: kept
        "",
        "Bad-Site.com/without/scheme",  # crawl metadata without a scheme
    ])
    result = filter_urls(frame, cfg)
    got = {r["doc_id"]: (r["rule"], r["detail"]) for r in result.verdicts.to_dicts()}
    assert got == {
        "d0": ("url.domain", "list my_domains: matched 'bad-site.com'"),
        "d1": ("url.domain", "list my_domains: matched 'bad-site.com'"),
        "d2": ("url.domain", "list my_domains: matched 'malware.example'"),
        "d3": ("url.url", "list my_urls: matched 'good.org/one/bad/page'"),
        "d4": ("url.banned_word", "list my_words: matched 'casino'"),
        "d5": ("url.soft_banned_words", "list my_soft: matched 'hot, singles'"),
        "d7": ("url.banned_subword", "list my_sub: matched 'xxxvideo'"),
        "d12": ("url.domain", "list my_domains: matched 'bad-site.com'"),
    }
    assert result.kept["doc_id"].to_list() == ["d6", "d8", "d9", "d10", "d11"]
    assert result.metrics["dropped_per_list"] == {"my_domains": 4, "my_soft": 1, "my_sub": 1, "my_urls": 1,
                                                  "my_words": 1}


def test_allow_list_keeps_a_domain_for_its_source_only(tmp_path):
    cfg = small_lists(tmp_path).model_copy(update={"allow": {"research": ["bad-site.com"]}})
    frame = docs(["https://bad-site.com/study", "https://bad-site.com/study"], sources=["research", "crawl"])
    result = filter_urls(frame, cfg)
    assert result.kept["doc_id"].to_list() == ["d0"]
    assert result.verdicts["doc_id"].to_list() == ["d1"]


def test_documents_without_a_url_column_pass(tmp_path):
    frame = docs(["https://bad-site.com/"]).drop("url")
    result = filter_urls(frame, small_lists(tmp_path))
    assert result.kept.height == 1 and result.verdicts.is_empty()


def test_default_lists_are_the_ut1_and_fineweb_lists_bundled_with_datatrove():
    # The UT1 adult list carries this domain; FineWeb's banned words include "porn".
    matches = url_matches(docs(["https://www.0-1sex.com/", "https://example.org/free-porn", "https://python.org/"]),
                          UrlFilterConfig())
    assert matches.select("doc_id", "rule", "list").rows() == [
        ("d0", "url.domain", "ut1_domains"), ("d1", "url.banned_word", "fineweb_banned_words")]
