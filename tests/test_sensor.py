import os
import time

import dagster as dg

from assets.partitions import drops
from assets.resources import CurationResource
from assets.sensors import landing_sensor

MANIFEST = """source: news
kind: web
license: CC-BY-4.0
provenance:
  url: https://example.org/news
  collected_at: "2026-01-01"
"""


def _drop(landing, name, ready=True, manifest=MANIFEST):
    folder = landing / name
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(manifest)
    (folder / "docs.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    if ready:
        (folder / "_READY").write_text("")
    return folder


def _evaluate(tmp_path, instance):
    resource = CurationResource(workspace=str(tmp_path / "ws"), config_path=str(tmp_path / "none.yaml"),
                                landing=str(tmp_path / "landing"))
    context = dg.build_sensor_context(instance=instance, resources={"curation": resource})
    return landing_sensor(context)


def test_sensor_adds_a_partition_and_requests_a_run_per_new_ready_drop(tmp_path):
    landing = tmp_path / "landing"
    _drop(landing, "2026-01-a")
    _drop(landing, "2026-01-b")
    settling = _drop(landing, "2026-01-c", ready=False)  # files just written, no marker: still settling
    now = time.time()
    os.utime(settling / "docs.jsonl", (now, now))
    with dg.instance_for_test() as instance:
        result = _evaluate(tmp_path, instance)
        assert [r.partition_key for r in result.run_requests] == ["2026-01-a", "2026-01-b"]
        assert result.dynamic_partitions_requests[0].partition_keys == ["2026-01-a", "2026-01-b"]
        instance.add_dynamic_partitions(drops.name, ["2026-01-a", "2026-01-b"])
        # Nothing new the second time round.
        again = _evaluate(tmp_path, instance)
        assert not again.run_requests and "no new ready drops" in str(again.skip_reason)


def test_sensor_skips_a_drop_with_a_broken_manifest(tmp_path):
    _drop(tmp_path / "landing", "bad", manifest="source: x\nkind: web\n")
    with dg.instance_for_test() as instance:
        result = _evaluate(tmp_path, instance)
        assert not result.run_requests and "1 rejected" in str(result.skip_reason)


def test_sensor_curates_a_drop_again_when_its_files_change(tmp_path):
    landing = tmp_path / "landing"
    folder = _drop(landing, "2026-01-a")
    with dg.instance_for_test() as instance:
        first = _evaluate(tmp_path, instance)
        instance.add_dynamic_partitions(drops.name, ["2026-01-a"])
        (folder / "docs.jsonl").write_text('{"id": "1", "text": "hello again"}\n')
        again = _evaluate(tmp_path, instance)
        assert [r.partition_key for r in again.run_requests] == ["2026-01-a"]
        assert again.run_requests[0].run_key != first.run_requests[0].run_key
        assert not again.dynamic_partitions_requests  # same partition, no new one


def _aged(folder, seconds=3600):
    """Make every file in ``folder`` look written ``seconds`` ago (settled, without a _READY marker)."""
    then = time.time() - seconds
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (then, then))


def test_a_settled_folder_without_manifest_is_reported_once_not_left_settling(tmp_path):
    folder = tmp_path / "landing" / "2026-03-notes"
    folder.mkdir(parents=True)
    (folder / "docs.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    _aged(folder)
    with dg.instance_for_test() as instance:
        resource = CurationResource(workspace=str(tmp_path / "ws"), config_path=str(tmp_path / "none.yaml"),
                                    landing=str(tmp_path / "landing"))
        context = dg.build_sensor_context(instance=instance, resources={"curation": resource})
        first = landing_sensor(context)
        assert not first.run_requests
        assert "0 settling" in str(first.skip_reason)
        assert "1 without manifest.yaml (2026-03-notes)" in str(first.skip_reason)
        # The cursor remembers the report, so the next tick does not log it again.
        assert "2026-03-notes" in first.cursor
        again = dg.build_sensor_context(instance=instance, resources={"curation": resource}, cursor=first.cursor)
        assert landing_sensor(again).cursor == first.cursor


def test_an_empty_drop_is_reported_as_empty(tmp_path):
    folder = tmp_path / "landing" / "2026-03-empty"
    folder.mkdir(parents=True)
    (folder / "manifest.yaml").write_text(MANIFEST)
    (folder / "_READY").write_text("")
    with dg.instance_for_test() as instance:
        result = _evaluate(tmp_path, instance)
        assert not result.run_requests and "1 empty (2026-03-empty)" in str(result.skip_reason)
    (folder / "docs.jsonl").write_text("")  # a zero-byte data file holds no record either
    with dg.instance_for_test() as instance:
        assert "1 empty (2026-03-empty)" in str(_evaluate(tmp_path, instance).skip_reason)
