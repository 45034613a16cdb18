"""The resources the assets use: where the workspace, configuration and landing area are (``curation``), and the
DuckDB engine for the SQL the assets run (``duckdb``: dagster-duckdb's ``DuckDBResource``), which keeps the
workspace catalog (``<workspace>/catalog.duckdb``) current."""


import os

import dagster as dg
from dagster_duckdb import DuckDBResource
from dagster_ray import RayResource

from curation_platform.catalog import catalog_is_current, refresh_catalog
from curation_platform.config import CurationConfig
from curation_platform.run_options import effective_config
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
    # ``curate run --executor/--ray-address``; None keeps engine.executor and engine.ray_address of curation.yaml.
    executor: str | None = None
    ray_address: str | None = None

    def ws(self) -> Workspace:
        return Workspace(self.workspace)

    def cfg(self) -> CurationConfig:
        """curation.yaml with this run's overrides, validated like the file itself (parsed once per process)."""
        return effective_config(self.config_path, self.release_name, self.profile, self.benchmarks, self.executor,
                                self.ray_address)


class CurationRay(RayResource):
    """Ray for the stages the ``ray`` executor distributes, through dagster-ray: before the step runs, a local Ray
    is started (``engine.ray_address`` None) or the cluster at that address is connected to (a KubeRay head
    service); after it, the connection is closed and a local Ray shut down. With the ``local`` executor it does
    nothing and Ray is never imported."""

    curation: CurationResource

    @property
    def host(self) -> str:
        return self.curation.cfg().engine.ray_address or "127.0.0.1"

    @property
    def name(self) -> str:
        address = self.curation.cfg().engine.ray_address
        return f"Ray at {address}" if address else "local Ray"

    @property
    def ray_address(self) -> str | None:  # type: ignore[override]
        return self.curation.cfg().engine.ray_address

    @property
    def created(self) -> bool:  # the cluster exists (KubeRay) or is started by ray.init: nothing to create
        return True

    @property
    def ready(self) -> bool:
        return True

    def connect(self, context):  # type: ignore[override]
        from curation_platform.executors.ray import check_reachable, import_ray, quiet_data_context, ray_init_options

        engine = self.curation.cfg().engine
        if engine.executor != "ray":
            return None
        ray = import_ray()
        if ray.is_initialized():  # this process already runs Ray (a test, a notebook): use it, leave it running
            return None
        check_reachable(engine.ray_address)
        self._context = ray.init(address=engine.ray_address, **ray_init_options(engine))
        quiet_data_context()
        return self._context


def resource_from_env() -> CurationResource:
    """The resource the UI and daemon use: paths from CURATION_* environment variables, else repo defaults
    (``CURATION_EXECUTOR`` and ``CURATION_RAY_ADDRESS`` override ``engine`` in curation.yaml)."""
    return CurationResource(
        workspace=os.environ.get("CURATION_WORKSPACE", "data"),
        config_path=os.environ.get("CURATION_CONFIG", "curation.yaml"),
        landing=os.environ.get("CURATION_LANDING", "landing"),
        executor=os.environ.get("CURATION_EXECUTOR") or None,
        ray_address=os.environ.get("CURATION_RAY_ADDRESS") or None,
    )


def duckdb_resource() -> DuckDBResource:
    """The DuckDB connection the assets run their SQL on. In memory: the catalog file is built through it into a
    fresh file and renamed into place (``curation_platform.catalog``), so a DuckDB UI or `curate sql` session
    holding the catalog never blocks a run."""
    return DuckDBResource(database=":memory:")


def refresh_workspace_catalog(duckdb: DuckDBResource, ws: Workspace) -> None:
    """Rebuild the views of ``<workspace>/catalog.duckdb`` through the DuckDB resource when they would change
    (a folder appeared or got its first file); most stages of most drops change nothing and open no connection."""
    from curation_platform.pipeline import STAGES

    if catalog_is_current(ws, STAGES):
        return
    with duckdb.get_connection() as conn:
        refresh_catalog(conn, ws, STAGES)
