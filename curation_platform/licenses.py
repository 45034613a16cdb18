"""License strings to SPDX ids and expressions.

``normalize_license`` maps each distinct string once (licenses have few distinct values), so it is a column
operation over any number of records.
"""

from __future__ import annotations

import re

import polars as pl

# Common spellings of SPDX ids, lower-cased with runs of spaces, dashes and underscores folded to one dash.
_ALIASES: dict[str, str] = {
    "mit": "MIT",
    "apache-2.0": "Apache-2.0",
    "apache-2": "Apache-2.0",
    "apache2": "Apache-2.0",
    "asl-2.0": "Apache-2.0",
    "apache-license-2.0": "Apache-2.0",
    "bsd-3-clause": "BSD-3-Clause",
    "bsd-2-clause": "BSD-2-Clause",
    "cc0-1.0": "CC0-1.0",
    "cc-by-4.0": "CC-BY-4.0",
    "cc-by-sa-4.0": "CC-BY-SA-4.0",
    "cc-by-nc-4.0": "CC-BY-NC-4.0",
    "odc-by-1.0": "ODC-By-1.0",
    "public-domain": "CC-PDDC",
}


def _normalize_one(value: str | None) -> str | None:
    if value is None:
        return None
    key = re.sub(r"[\s_\-]+", "-", value.strip().lower())
    return _ALIASES.get(key)


def normalize_license(values: pl.Series) -> pl.Series:
    """SPDX id for each license string, or null where it is unknown (the caller quarantines those)."""
    distinct = values.unique().to_list()
    mapping = {v: _normalize_one(v) for v in distinct}
    return values.replace_strict(mapping, return_dtype=pl.String, default=None)
