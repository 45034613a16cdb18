"""``curation.yaml``: one typed configuration for every stage, hashed into every ledger row and release."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curation_platform.errors import ConfigError, CurationError
from curation_platform.formatting import FormattingConfig
from curation_platform.licenses import LicensePolicy
from curation_platform.manifest import load_yaml
from curation_platform.outofcore import DuckDBSize
from curation_platform.ops.decontaminate import DecontaminationConfig
from curation_platform.ops.dedup_exact import ExactDedupConfig
from curation_platform.ops.dedup_minhash import NearDedupConfig
from curation_platform.ops.filters import FiltersConfig
from curation_platform.ops.language import LanguageConfig
from curation_platform.ops.line_dedup import LineDedupConfig
from curation_platform.ops.normalize import NormalizeConfig
from curation_platform.ops.pii import PiiConfig
from curation_platform.ops.quality_signals import SignalsConfig
from curation_platform.ops.score import ScoreConfig
from curation_platform.ops.url_filter import UrlFilterConfig
from curation_platform.ops.verify_code import VerificationConfig
from curation_platform.readers import IngestConfig
from curation_platform.selection import Curriculum, DomainRule, Quota, SyntheticCap
from curation_platform.workspace import check_name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatesConfig(_Strict):
    """Bounds the blocking asset checks enforce."""

    # Largest share of a drop's input a single stage may remove before the gate stops the graph.
    max_removal_rate: dict[str, float] = Field(
        default_factory=lambda: {
            "raw_documents": 0.5,
            "url_filtered": 0.5,
            "normalized": 0.2,
            "language": 0.6,
            "line_deduped": 0.2,
            "filtered": 0.8,
            "pii_redacted": 0.2,
            "exact_deduped": 0.9,
            "near_deduped": 0.9,
            "decontaminated": 0.2,
        }
    )
    # Largest share of a drop's documents the pii stage may drop as ``pii.residual`` (PII its independent scan
    # still finds after redaction): one odd document passes, a systematic redactor failure stops the graph.
    max_residual_pii_rate: float = Field(default=0.005, ge=0, le=1)


class ReleaseConfig(_Strict):
    """What goes into a release and how it is cut into shards."""

    name: str = "latest"  # a folder name under releases/: letters, digits, '.', '_', '-'
    profile: str = "commercial"
    # Upper bound on tokens in the release (None = everything that passes). Selection is by quality score.
    token_budget: int | None = Field(default=None, ge=0)
    # Domain per document (first matching rule); unmatched documents get default_domain, or their kind when None.
    domains: dict[str, DomainRule] = Field(default_factory=dict)
    default_domain: str | None = None
    # Mixture weights by domain; each domain's token target is its weight's share of the budget (or of the tokens
    # available in the weighted domains); short domains repeat documents up to their source's maximum epochs.
    mixture: dict[str, Annotated[float, Field(ge=0)]] | None = None
    # Most epochs a document may be repeated to (1 = never repeated); Muennighoff et al. 2023 find up to 4 epochs
    # of repeated data nearly as useful as fresh data. Per source overrides.
    max_epochs: int = Field(default=1, ge=1)
    source_max_epochs: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    # Token quotas per dimension value: {source: {forum: {max_share: 0.1}}, license: {...}, language, domain}.
    quotas: dict[Literal["domain", "language", "source", "license"], dict[str, Quota]] = Field(default_factory=dict)
    synthetic_cap: SyntheticCap = Field(default_factory=SyntheticCap)
    curriculum: Curriculum | None = None
    # Share of duplicate clusters held out for validation (1%: at 1B tokens a 10M-token validation set, whose
    # loss estimate is stable, at 1% of the training data).
    validation_fraction: float = Field(default=0.01, ge=0, lt=1)
    seed: int = 0  # seeds the split, the tie order among equal scores and the shard shuffle
    shard_max_docs: int = Field(default=50_000, ge=1)
    tokenizer: str = "pkg://curation_platform/resources/gpt2_tokenizer.json"

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        try:
            return check_name("release", name)
        except CurationError as exc:
            raise ValueError(str(exc)) from None


class VersioningConfig(_Strict):
    """DVC versioning of releases."""

    enabled: bool = True
    # A local folder (relative paths are relative to the workspace) or any DVC remote URL such as s3://bucket/path.
    remote_url: str = "dvc-remote"
    remote_name: str = "curation"
    push: bool = True


class EngineConfig(_Strict):
    """How a drop is computed, never what: ``engine`` is in no configuration hash, and outputs are the same for any
    value."""

    batch_rows: int = Field(default=20_000, ge=1)  # documents per batch in every streaming stage
    memory_limit: DuckDBSize = "512MB"  # DuckDB memory_limit of out-of-core queries
    spill_dir: str | None = None  # DuckDB temp_directory; default <workspace>/tmp/spill
    threads: int | None = Field(default=None, ge=1)  # DuckDB/Polars threads; None = every core
    workers: int | None = Field(default=None, ge=1)  # local executor processes; None = every core, 1 = in-process
    # What `curate run` does after a successful release: `keep` every stage output, or `gc` the intermediate
    # outputs of the drops it released (as `curate gc` does).
    retention: Literal["keep", "gc"] = "keep"
    executor: Literal["local", "ray"] = "local"  # `curate run --executor ray`
    ray_address: str | None = None  # `curate run --ray-address ADDR`; None = start a local Ray


class CurationConfig(_Strict):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    url_filter: UrlFilterConfig = Field(default_factory=UrlFilterConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    line_dedup: LineDedupConfig = Field(default_factory=LineDedupConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    verification: VerificationConfig = Field(default_factory=VerificationConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    exact_dedup: ExactDedupConfig = Field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = Field(default_factory=NearDedupConfig)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    scoring: ScoreConfig = Field(default_factory=ScoreConfig)
    licenses: LicensePolicy = Field(default_factory=LicensePolicy)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    formatting: FormattingConfig = Field(default_factory=FormattingConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    versioning: VersioningConfig = Field(default_factory=VersioningConfig)

    @property
    def hash(self) -> str:
        """Stable hash of the effective configuration (defaults included, ``engine`` left out: it changes how, not
        what, is computed), recorded in ledger rows and releases."""
        return _digest(self.model_dump(mode="json", exclude={"engine"}))

    @property
    def drop_stages_hash(self) -> str:
        """Hash of the sections the per-drop stages read: when it changes, curated drops are stale. Release,
        license-profile, formatting, gate and versioning settings only affect the release, and engine settings change
        how, not what, a drop is computed, so they are left out."""
        data = self.model_dump(mode="json",
                               exclude={"release", "licenses", "formatting", "gates", "versioning", "engine"})
        if self.scoring.model:  # a model retrained at the same path must re-score the drops too
            from curation_platform.quality_model import model_fingerprint

            data["scoring"]["model_sha256"] = model_fingerprint(self.scoring.model)
        return _digest(data)


def _digest(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_config(path: str | Path | None) -> CurationConfig:
    """Read and validate ``curation.yaml``; a missing path gives the defaults. Errors name the file and field."""
    if path is None:
        return CurationConfig()
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"configuration file {path} does not exist; pass --config or create it")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return CurationConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid configuration: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


