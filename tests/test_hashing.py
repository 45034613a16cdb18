import polars as pl
import xxhash
from hypothesis import given, strategies as st

from curation_platform.hashing import xxh128_hex


@given(st.lists(st.one_of(st.none(), st.text()), max_size=30))
def test_xxh128_hex_matches_the_reference_library(values):
    series = pl.Series("v", values, dtype=pl.String)
    expected = [xxhash.xxh3_128_hexdigest((v or "").encode("utf-8")) for v in values]
    assert xxh128_hex(series).to_list() == expected


def test_xxh128_hex_keeps_the_series_name_and_length():
    out = xxh128_hex(pl.Series("doc", ["a", "b", "a"]))
    assert out.name == "doc" and out.len() == 3
    assert out[0] == out[2] != out[1]
    assert all(len(h) == 32 for h in out)
