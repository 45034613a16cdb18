"""Dagster definitions for curation_platform: assets, checks, sensors, schedules and resources only.

Logic lives in ``curation_platform``; each asset loads its inputs, calls one engine function, writes its output
and returns metadata. ``workspace.yaml`` loads ``assets.definitions:defs``.
"""
