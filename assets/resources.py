"""The resources the assets use: where the workspace, configuration and landing area are (``curation``), and the
DuckDB engine for the SQL the assets run (``duckdb``: dagster-duckdb's ``DuckDBResource``), which keeps the
workspace catalog (``<workspace>/catalog.duckdb``) current."""


import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import ValidationError

from curation_platform.catalog import refresh_catalog
from curation_platform.config import CurationConfig, describe_validation_error, load_config
from curation_platform.errors import ConfigError
from curation_platform.ops.decontaminate import BenchmarkSpec
from curation_platform.workspace import Workspace


class CurationResource(dg.ConfigurableResource):
    """Workspace directory, ``curation.yaml`` and landing folder, plus the per-run overrides the CLI offers."""

    workspace: str = "data"
    config_path: str = "curation.yaml"
    landing: str = "landing"
    release_name: str | None = None
    profile: str | None = None
    # Extra benchmarks for one run, as "NAME=PATH:FIELD[,FIELD]" strings (``curate run --benchmark``).
    benchmarks: list[str] = []

    def ws(self) -> Workspace:
        return Workspace(self.workspace)

    def cfg(self) -> CurationConfig:
        """curation.yaml with this run's overrides, validated like the file itself."""
        cfg = load_config(self.config_path if Path(self.config_path).exists() else None)
        data = cfg.model_dump(mode="json")
        data["release"].update({k: v for k, v in {"name": self.release_name, "profile": self.profile}.items() if v})
        data["decontamination"]["benchmarks"] += [
            parse_benchmark_option(b).model_dump(mode="json") for b in self.benchmarks
        ]
        try:
            return CurationConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid run options: {describe_validation_error(exc)}") from None


def parse_benchmark_option(option: str) -> BenchmarkSpec:
    """``NAME=PATH:FIELD[,FIELD]`` to a benchmark spec."""
    from curation_platform.errors import ConfigError

    name, sep, rest = option.partition("=")
    path, sep2, fields = rest.rpartition(":")
    if not sep or not sep2 or not name or not path or not fields:
        raise ConfigError(f"--benchmark {option!r}: expected NAME=PATH:FIELD[,FIELD], e.g. mmlu=evals/mmlu.jsonl:question")
    return BenchmarkSpec(name=name, path=path, text_fields=[f for f in fields.split(",") if f])


def resource_from_env() -> CurationResource:
    """The resource the UI and daemon use: paths from CURATION_* environment variables, else repo defaults."""
    return CurationResource(
        workspace=os.environ.get("CURATION_WORKSPACE", "data"),
        config_path=os.environ.get("CURATION_CONFIG", "curation.yaml"),
        landing=os.environ.get("CURATION_LANDING", "landing"),
    )


def duckdb_resource() -> DuckDBResource:
    """The DuckDB connection the assets run their SQL on. In memory: the catalog file is built through it into a
    fresh file and renamed into place (``curation_platform.catalog``), so a DuckDB UI or `curate sql` session
    holding the catalog never blocks a run."""
    return DuckDBResource(database=":memory:")


def refresh_workspace_catalog(duckdb: DuckDBResource, ws: Workspace) -> list[str]:
    """Rebuild the views of ``<workspace>/catalog.duckdb`` through the DuckDB resource."""
    from curation_platform.pipeline import STAGES

    with duckdb.get_connection() as conn:
        return refresh_catalog(conn, ws, STAGES)
