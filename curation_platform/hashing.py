"""Stable, vectorized 128-bit xxHash (XXH3-128) as 32-character hex strings."""

from __future__ import annotations

import numpy as np
import polars as pl
import polars_hash as plh

_HEX = np.frombuffer(b"0123456789abcdef", dtype="S1")


def xxh128_hex(values: pl.Series) -> pl.Series:
    """XXH3-128 of each string as lowercase hex, identical to ``xxhash.xxh3_128_hexdigest``.

    Nulls hash as the empty string so every row gets an id.
    """
    hashed = pl.DataFrame({"v": values.cast(pl.String)}).select(
        plh.col("v").fill_null("").nchash.xxh3_128().alias("h")
    )
    halves = hashed.select(
        hi=(pl.col("h") // (2**64)).cast(pl.UInt64),
        lo=(pl.col("h") - (pl.col("h") // (2**64)) * (2**64)).cast(pl.UInt64),
    )
    return words_hex(halves["hi"], halves["lo"]).alias(values.name)


def words_hex(hi: pl.Series, lo: pl.Series) -> pl.Series:
    """The 32-character lowercase hex of 128-bit values given as high and low unsigned 64-bit words (how the
    exact-dedup index stores XXH3-128 hashes)."""
    words = np.empty((len(hi), 2), dtype=">u8")
    words[:, 0] = hi.to_numpy()
    words[:, 1] = lo.to_numpy()
    octets = words.view(np.uint8).reshape(len(hi), 16)
    chars = np.empty((len(hi), 32), dtype="S1")
    chars[:, 0::2] = _HEX[octets >> 4]
    chars[:, 1::2] = _HEX[octets & 15]
    return pl.Series("content_hash", chars.view("S32").ravel()).cast(pl.String)


def xxh128_expr(expr: pl.Expr) -> pl.Expr:
    """Expression form of :func:`xxh128_hex` for use inside ``with_columns``."""
    return expr.map_batches(xxh128_hex, return_dtype=pl.String)
