"""Drop manifests: what a drop is, whether it is ready to read, and whether it changed.

A drop is a folder ``<landing>/<drop-name>/`` holding ``manifest.yaml`` and data files. A minimal manifest:

```yaml
source: example-web
kind: web
license: CC-BY-4.0
provenance: {url: https://example.org/crawl, collected_at: 2024-05-01}
```
"""

from __future__ import annotations

import os
import stat as stat_module
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import xxhash
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from curation_platform.errors import ManifestError
from curation_platform.storage import as_path, is_uri, list_objects

if TYPE_CHECKING:
    from curation_platform.licenses import LicensePolicy

MANIFEST_NAME = "manifest.yaml"
READY_MARKER = "_READY"
PER_RECORD = "per-record"

Kind = Literal["web", "code", "chat", "text", "synthetic"]
# Formats a manifest may force; without one, each file's format is inferred from its extension.
Format = Literal["jsonl", "parquet", "csv", "text", "markdown", "html", "code", "chat", "warc"]


class Generator(BaseModel):
    """The model that produced a synthetic drop and the terms its outputs are under."""

    # Extra keys (version, url...) are kept; ``model`` is the contract's name, so no protected namespaces.
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    terms: str


class Manifest(BaseModel):
    """The validated content of a drop's ``manifest.yaml``."""

    # Unknown keys are rejected so a typo such as ``text_feild`` fails loudly instead of silently defaulting.
    model_config = ConfigDict(extra="forbid")

    source: str
    kind: Kind
    license: str  # an SPDX id or expression, or "per-record" with ``license_field``
    provenance: dict[str, Any]
    license_field: str | None = None
    text_field: str = "text"
    id_field: str = "id"
    language: str | None = None
    format: Format | None = None
    generator: Generator | None = None
    filter_profile: str | None = None  # a rule set from curation.yaml `filters.profiles`, e.g. short-form

    @field_validator("source", "license", "text_field", "id_field")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("provenance")
    @classmethod
    def _provenance_names_origin(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not any(isinstance(value.get(key), str) and value[key].strip() for key in ("url", "description")):
            raise ValueError("must contain a non-empty 'url' or 'description' saying where the data came from")
        return value

    @model_validator(mode="after")
    def _per_record_license_names_field(self) -> Manifest:
        if self.license == PER_RECORD and not self.license_field:
            raise ValueError("license is 'per-record' but 'license_field' is missing; name the column that holds it")
        if self.license_field and self.license != PER_RECORD:
            raise ValueError("'license_field' is set but license is not 'per-record'; set license: per-record")
        return self

    @property
    def per_record_license(self) -> bool:
        return self.license == PER_RECORD


# What to tell the user for each field when it is missing or wrong.
_FIELD_HELP = {
    "source": "add `source: <short-name>` (the dataset's short name)",
    "kind": "set `kind:` to one of web, code, chat, text, synthetic",
    "license": "add `license: <SPDX id>` (e.g. MIT, CC-BY-4.0) or `license: per-record` with `license_field`",
    "provenance": "add `provenance:` as a mapping with `url` or `description`, and `collected_at`",
    "format": "set `format:` to one of jsonl, parquet, csv, text, markdown, html, code, chat, warc, or remove it",
    "generator": "set `generator:` to a mapping with `model` and `terms` (terms from `licenses.generator_terms` in "
                 "curation.yaml)",
    "filter_profile": "set `filter_profile:` to a profile name from curation.yaml `filters.profiles`",
}


def _manifest_error(drop_dir: Path, path: Path, field: str, problem: str) -> ManifestError:
    hint = _FIELD_HELP.get(field.split(".")[0], "fix or remove it")
    return ManifestError(f"drop '{drop_dir.name}': {path}: field '{field}' {problem}; {hint}.")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' on line {key_node.start_mark.line + 1} repeats line {seen[key]}; the "
                    "second would silently replace the first: merge them", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load``, refusing duplicate keys (``yaml.YAMLError`` naming the line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_manifest(drop_dir: Path, policy: LicensePolicy | None = None) -> Manifest:
    """Read and validate ``<drop_dir>/manifest.yaml``.

    Raises ManifestError with one message naming the drop, the file, the field and the fix when the manifest is
    missing, is not valid YAML, or lacks or misstates a required field. With ``policy``, a generator's terms must
    be in its terms vocabulary (``licenses.generator_terms``); the message names the known terms.
    """
    drop_dir = as_path(drop_dir)
    path = drop_dir / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"drop '{drop_dir.name}': {path} is missing; every drop needs a manifest.yaml with source, kind, "
            "license and provenance."
        )
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ManifestError(
            f"drop '{drop_dir.name}': {path} is not valid YAML ({first_line}); fix the syntax and drop it again."
        ) from None
    if not isinstance(raw, dict):
        raise ManifestError(
            f"drop '{drop_dir.name}': {path} must be a YAML mapping with source, kind, license and provenance."
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(manifest)"
        if first["type"] == "missing":
            problem = "is missing"
        elif first["type"] == "extra_forbidden":
            problem = "is not a manifest field"
        else:
            problem = f"is invalid ({first['msg']}, got {first.get('input')!r})"
        raise _manifest_error(drop_dir, path, field, problem) from None
    if policy is not None and manifest.generator is not None:
        unknown = policy.unknown_generator_terms(manifest.generator.terms)
        if unknown is not None:
            raise ManifestError(f"drop '{drop_dir.name}': {path}: field 'generator.terms': {unknown}.")
    return manifest


def _all_entries(drop_dir: Path) -> list[tuple[str, os.stat_result]]:
    """(relative posix path, lstat) of every file and folder under drop_dir, symlinks not followed; for an
    object-store prefix, of every object (LastModified as the modification time)."""
    if is_uri(drop_dir):
        return list_objects(drop_dir)
    entries = []
    for root, dirs, files in os.walk(drop_dir, followlinks=False):
        dirs.sort()
        for name in sorted(dirs + files):
            full = Path(root) / name
            try:
                entries.append((full.relative_to(drop_dir).as_posix(), full.lstat()))
            except FileNotFoundError:  # removed while we walked: the drop is still changing
                continue
    return entries


def drop_is_ready(drop_dir: Path, settle_seconds: float, now: float | None = None) -> bool:
    """True when the drop's manifest exists and either a ``_READY`` marker is present or nothing in the drop
    (hidden temporary files included, since copy tools write those) changed during the last ``settle_seconds``.

    ``now`` is a Unix timestamp; it defaults to the current time.
    """
    drop_dir = as_path(drop_dir)
    if not (drop_dir / MANIFEST_NAME).is_file():
        return False
    if (drop_dir / READY_MARKER).exists():
        return True
    now = time.time() if now is None else now
    return now - last_change(drop_dir) >= settle_seconds


def last_change(drop_dir: Path) -> float:
    """Unix time of the latest change to anything in the drop folder (hidden temporary files included)."""
    drop_dir = as_path(drop_dir)
    mtimes = [stat.st_mtime for _, stat in _all_entries(drop_dir)]
    if not is_uri(drop_dir):
        mtimes.append(drop_dir.stat().st_mtime)  # a file just created or deleted changes the folder's mtime
    return max(mtimes, default=0.0)


def manifest_fingerprint(drop_dir: Path) -> str:
    """xxh128 hex of the drop's file list with sizes and modification times (manifest included; hidden files
    and the ``_READY`` marker excluded), so a sensor can tell a changed drop from one it already read."""
    lines = [
        # Objects add their ETag: S3 times have whole seconds, so a same-size rewrite within one would hide.
        f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}" + (f"\t{stat.etag}" if getattr(stat, "etag", "") else "")
        for rel, stat in _all_entries(as_path(drop_dir))
        if not any(part.startswith(".") for part in rel.split("/"))
        and rel != READY_MARKER
        and not stat_module.S_ISDIR(stat.st_mode)
    ]
    return xxhash.xxh3_128_hexdigest("\n".join(lines).encode("utf-8"))
