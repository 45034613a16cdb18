"""The landing sensor: each new ready drop becomes a partition and a run."""


from pathlib import Path

import dagster as dg

from assets.jobs import curate_drop_job
from assets.partitions import drops
from assets.resources import CurationResource
from curation_platform.landing import scan_landing


@dg.sensor(
    job=curate_drop_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing area; a drop is ready when its manifest exists and its files have settled "
    "(or a _READY marker is present).",
)
def landing_sensor(context: dg.SensorEvaluationContext, curation: CurationResource) -> dg.SensorResult:
    cfg = curation.cfg()
    scan = scan_landing(Path(curation.landing), cfg.ingest.settle_seconds, cfg.licenses)
    for name, message in scan.rejected:
        context.log.warning(message)
    known = set(context.instance.get_dynamic_partitions(drops.name))
    ws = curation.ws()
    # A drop whose files changed after it was curated is curated again (same partition, new run key).
    changed_names = set(ws.changed_drops(scan.ready))
    changed = [item for item in scan.ready if item[0] in changed_names]
    new = [(name, path, fp) for name, path, fp in scan.ready if name not in known]
    if not new and not changed:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"no new ready drops ({len(scan.waiting)} settling, {len(scan.rejected)} rejected)"))
    ws.register_drops(new)
    names = [name for name, _, _ in sorted(new)]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"{name}:{fp}")
                      for name, _, fp in sorted([*new, *changed])],
        dynamic_partitions_requests=[drops.build_add_request(names)] if names else [],
    )
