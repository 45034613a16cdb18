import subprocess
import sys

import dagster as dg

from assets.definitions import defs
from tests.conftest import REPO

PER_DROP = ["raw_documents", "url_filtered", "normalized", "language", "line_deduped", "quality_signals", "filtered", "scored", "pii_redacted",
            "exact_deduped", "near_deduped", "decontaminated"]


def test_definitions_snapshot():
    graph = defs.resolve_asset_graph()
    keys = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    assert keys == sorted([*PER_DROP, "release_candidate", "release"])
    checks = sorted(k.to_user_string() for k in graph.asset_check_keys)
    assert checks == sorted(f"{a}:gate" for a in [*PER_DROP, "release_candidate"])
    # Lineage from drop to release: each stage depends on the one before it.
    for upstream, stage in zip(PER_DROP, PER_DROP[1:] + ["release_candidate"]):
        assert dg.AssetKey(upstream) in graph.get(dg.AssetKey(stage)).parent_keys
    assert dg.AssetKey("release_candidate") in graph.get(dg.AssetKey("release")).parent_keys
    assert {s.name for s in defs.sensors} == {"landing_sensor"}
    schedule = defs.get_schedule_def("daily_release")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "build_release"


def test_workspace_yaml_loads_the_definitions():
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr
