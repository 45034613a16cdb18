"""`curate run`'s per-run overrides applied to ``curation.yaml``, without Dagster: the CLI decides whether there is
anything to do before it imports Dagster or Great Expectations, and the ``curation`` resource uses the same code."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import ValidationError

from curation_platform.config import CurationConfig, describe_validation_error, load_config
from curation_platform.errors import ConfigError
from curation_platform.ops.decontaminate import BenchmarkSpec


def effective_config(config_path: str, release_name: str | None = None, profile: str | None = None,
                     benchmarks: tuple[str, ...] | list[str] = (), executor: str | None = None,
                     ray_address: str | None = None) -> CurationConfig:
    """curation.yaml (repo defaults when ``config_path`` does not exist) with one run's overrides, validated like
    the file itself. Parsed once per process and file version: every asset asks, and YAML parsing is slow."""
    path = Path(config_path)
    stat = path.stat() if path.exists() else None
    return _effective_config(config_path if stat else None, stat and (stat.st_mtime_ns, stat.st_size),
                             release_name, profile, tuple(benchmarks), executor, ray_address)


@functools.lru_cache(maxsize=8)
def _effective_config(config_path: str | None, version: tuple | None, release_name: str | None, profile: str | None,
                      benchmarks: tuple[str, ...], executor: str | None = None,
                      ray_address: str | None = None) -> CurationConfig:
    cfg = load_config(config_path)
    data = cfg.model_dump(mode="json")
    data["release"].update({k: v for k, v in {"name": release_name, "profile": profile}.items() if v})
    data["engine"].update({k: v for k, v in {"executor": executor, "ray_address": ray_address}.items() if v})
    data["decontamination"]["benchmarks"] += [
        parse_benchmark_option(b).model_dump(mode="json") for b in benchmarks
    ]
    try:
        return CurationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid run options: {describe_validation_error(exc)}") from None


def parse_benchmark_option(option: str) -> BenchmarkSpec:
    """``NAME=PATH:FIELD[,FIELD]`` to a benchmark spec."""
    name, sep, rest = option.partition("=")
    path, sep2, fields = rest.rpartition(":")
    if not sep or not sep2 or not name or not path or not fields:
        raise ConfigError(f"--benchmark {option!r}: expected NAME=PATH:FIELD[,FIELD], e.g. mmlu=evals/mmlu.jsonl:question")
    return BenchmarkSpec(name=name, path=path, text_fields=[f for f in fields.split(",") if f])
