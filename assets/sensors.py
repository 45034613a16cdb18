"""The landing sensor: each new ready drop becomes a partition and a run."""

import json

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
    # A string: the landing area may be a directory or an object-store prefix (s3://bucket/landing).
    scan = scan_landing(curation.landing, cfg.ingest.settle_seconds, cfg.licenses)
    # Folders that will not be read (bad manifest, no manifest.yaml, empty) are logged once, not every tick:
    # the cursor remembers what was reported, so a changed message is reported again.
    reported = set(json.loads(context.cursor)) if context.cursor else set()
    problems = {f"{name}\t{message}" for name, message in scan.messages()}
    for key in sorted(problems - reported):
        context.log.warning(key.split("\t", 1)[1])
    cursor = json.dumps(sorted(problems))
    known = set(context.instance.get_dynamic_partitions(drops.name))
    ws = curation.ws()
    # A drop whose files changed after it was curated is curated again (same partition, new run key).
    changed_names = set(ws.changed_drops(scan.ready))
    changed = [item for item in scan.ready if item[0] in changed_names]
    new = [(name, path, fp) for name, path, fp in scan.ready if name not in known]
    if not new and not changed:
        not_read = [f"{len(scan.waiting)} settling", f"{len(scan.rejected)} rejected"]
        if scan.no_manifest:
            not_read.append(f"{len(scan.no_manifest)} without manifest.yaml ({', '.join(scan.no_manifest)})")
        if scan.empty:
            not_read.append(f"{len(scan.empty)} empty ({', '.join(scan.empty)})")
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new ready drops ({', '.join(not_read)})"),
                               cursor=cursor)
    ws.register_drops(new)
    names = [name for name, _, _ in sorted(new)]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"{name}:{fp}")
                      for name, _, fp in sorted([*new, *changed])],
        dynamic_partitions_requests=[drops.build_add_request(names)] if names else [],
        cursor=cursor,
    )
