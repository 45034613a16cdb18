"""The Definitions object `workspace.yaml` loads (always start the UI with `-w workspace.yaml`)."""


import dagster as dg

from assets.jobs import build_release_job, curate_drop_job
from assets.release import release, release_candidate, release_candidate_gate
from assets.resources import CurationRay, CurationResource, duckdb_resource, resource_from_env
from assets.schedules import daily_release
from assets.sensors import landing_sensor
from assets.stages import stage_assets


def build_definitions(curation: CurationResource) -> dg.Definitions:
    return dg.Definitions(
        assets=[*stage_assets, release_candidate, release],
        asset_checks=[release_candidate_gate],
        jobs=[curate_drop_job, build_release_job],
        sensors=[landing_sensor],
        schedules=[daily_release],
        resources={"curation": curation, "duckdb": duckdb_resource(), "ray": CurationRay(curation=curation)},
    )


defs = build_definitions(resource_from_env())
