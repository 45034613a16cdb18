"""Release selection helpers shared by scoring and mixing.

Minimal version from the quality branch: the mixing branch owns this module (domains from ``kind``, ``source``,
``language`` and ``release.domains``); the lead keeps mixing's ``domain_expr`` on merge.
"""

from __future__ import annotations

import polars as pl


def domain_expr(cfg) -> pl.Expr:
    """The ``domain`` of each document as an expression over the record columns (here: its ``kind``)."""
    return pl.col("kind").cast(pl.String).alias("domain")
