"""Curation operators: one stage per module, each ``stage(docs, cfg) -> StageResult``."""
