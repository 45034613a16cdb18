import dagster as dg

from assets.partitions import drops

# Every per-drop stage of one drop, with its gates.
curate_drop_job = dg.define_asset_job(
    "curate_drop",
    selection=dg.AssetSelection.groups("ingest", "curate", "safety", "dedup"),
    partitions_def=drops,
    # Stages of one drop run in sequence; one process avoids re-importing the stack for every step.
    executor_def=dg.in_process_executor,
    description="Curate one drop from raw records to decontaminated documents, gate by gate.",
)

# Stage, audit, publish and version the release from every curated drop.
build_release_job = dg.define_asset_job(
    "build_release",
    selection=dg.AssetSelection.groups("release"),
    executor_def=dg.in_process_executor,
    description="Build the release: write to staging, audit with the release gate, publish and version with DVC.",
)
