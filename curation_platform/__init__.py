"""curation_platform: the engine. Pure operators over Polars/DuckDB; no Dagster imports here."""

__version__ = "0.1.0"
