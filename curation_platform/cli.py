"""`curate`: the command-line contract users script against. Keep subcommands and options stable.

Every subcommand takes ``--workspace DIR`` (default ``data/``) and ``--config FILE`` (default ``curation.yaml``).
Errors print one clear message and exit non-zero; never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import polars as pl
import typer

from curation_platform.errors import CurationError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate data drops into versioned, gated "
                  "LLM training releases.")
ledger_app = typer.Typer(no_args_is_help=True, help="Query the ledger of every verdict.")
app.add_typer(ledger_app, name="ledger")
quality_app = typer.Typer(no_args_is_help=True, help="Train the learned quality classifier.")
app.add_typer(quality_app, name="quality")

WorkspaceOpt = typer.Option(Path("data"), "--workspace", help="Workspace directory (stage data, ledger, releases).")
ConfigOpt = typer.Option(Path("curation.yaml"), "--config", help="Configuration file.")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _config(config: Path):
    from curation_platform.config import load_config

    return load_config(config if config.exists() or config != Path("curation.yaml") else None)


def dagster_instance(workspace: Path):
    """The Dagster instance under ``<workspace>/.dagster``, sharing run history with `make ui`."""
    from dagster import DagsterInstance

    home = (workspace / ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    repo_yaml = Path(__file__).resolve().parent.parent / "dagster.yaml"
    if repo_yaml.exists() and not (home / "dagster.yaml").exists():
        shutil.copy(repo_yaml, home / "dagster.yaml")
    elif not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    return DagsterInstance.from_config(str(home))


def _print_progress(stage: str, partition: str, summary: object) -> None:
    from curation_platform.pipeline import StageSummary

    if isinstance(summary, StageSummary):
        rules = ", ".join(f"{r} {n}" for r, n in sorted(summary.per_rule.items(), key=lambda x: -x[1])[:3])
        typer.echo(f"  {partition:<28} {stage:<16} {summary.input:>7} in  {summary.kept:>7} kept  "
                   f"{summary.dropped:>6} dropped  {summary.quarantined:>5} quarantined" + (f"  ({rules})" if rules else ""))
    elif stage == "release_candidate":
        typer.echo(f"  release {partition}: staged {summary.card['documents']} documents, "
                   f"{summary.card['tokens']} tokens in {len(summary.shards)} shard(s)")
    elif stage == "release":
        typer.echo(f"  release {partition}: published to {summary['path']}"
                   + (f", DVC {summary.get('md5')} pushed to {summary.get('remote')}" if summary.get("md5") else ""))


def _scan_settled(landing: str, settle_seconds: float, now: float | None, policy=None):
    """Scan the landing area; without ``now``, wait (at most ``settle_seconds``) for drops written moments ago to
    settle, so a half-copied drop is never read. Drops still changing after that are reported and left for later."""
    import time

    from curation_platform.landing import scan_landing

    scan = scan_landing(landing, settle_seconds, policy, now=now)
    if scan.waiting and now is None and scan.settles_in is not None:
        wait = min(settle_seconds, scan.settles_in + 0.5)
        typer.echo(f"waiting {wait:.0f} s for {', '.join(scan.waiting)} to settle (ingest.settle_seconds "
                   f"{settle_seconds:g}; a _READY file in the drop skips the wait)")
        time.sleep(wait)
        scan = scan_landing(landing, settle_seconds, policy)
    for name in scan.waiting:
        typer.secho(f"not read: drop '{name}' is still being written (changed less than {settle_seconds:g} s ago); "
                    "run again once the copy finished, or add a _READY file", fg=typer.colors.YELLOW, err=True)
    return scan


def _failures(result) -> list[str]:
    """Failed gates and failed steps of a finished in-process run, as readable lines."""
    lines = []
    gates = set()
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            where = evaluation.asset_key.to_user_string()
            gates.add(f"{where}_{evaluation.check_name}")
            part = f" [{evaluation.partition}]" if getattr(evaluation, "partition", None) else ""
            lines.append(f"gate {where}{part} failed: {evaluation.description}")
    for event in result.all_events:
        # A blocking check's own step failure only repeats the gate failure reported above.
        if event.event_type_value == "STEP_FAILURE" and event.step_key not in gates:
            error = event.step_failure_data.error
            if error.cls_name == "DagsterAssetCheckFailedError":  # a gate in the asset's step: reported above
                continue
            cause = error
            while cause.cause is not None:
                cause = cause.cause
            message = cause.message.strip()
            if cause.cls_name and f"{cause.cls_name}: " in message.split("\n", 1)[0]:
                message = message.split(f"{cause.cls_name}: ", 1)[1]
            lines.append(f"step {event.step_key} failed: {message}")
    return lines


def _stale_drops(ws, cfg, names: list[str]) -> list[str]:
    """Drops that are not current: never curated, interrupted, or curated with another configuration."""
    from curation_platform.pipeline import drop_state

    return [name for name in names if drop_state(ws, cfg, name) != "current"]


@app.command()
def run(
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
    # A string, not a Path: Path would turn s3://bucket/landing into s3:/bucket/landing.
    landing: str = typer.Option("landing", "--landing", help="Landing area with one folder per drop: a directory, "
                                "or an object-store prefix such as s3://bucket/landing."),
    release: Optional[str] = typer.Option(None, "--release", help="Release name (default from config)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="License profile (default from config)."),
    benchmark: list[str] = typer.Option([], "--benchmark", help="Extra benchmark NAME=PATH:FIELD[,FIELD]."),
    no_release: bool = typer.Option(False, "--no-release", help="Curate drops only; build no release."),
    now: Optional[float] = typer.Option(None, "--now", help="Judge which drops have settled as of this Unix time "
                                        "and do not wait for settling ones (for tests and scripts)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Where the per-document stages run: local or "
                                           "ray (default engine.executor)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to connect to (HOST:6379 or "
                                              "ray://HOST:10001); without it --executor ray starts a local Ray."),
) -> None:
    """Register every ready drop, curate new ones through the Dagster graph, build and version the release."""
    from curation_platform.run_options import effective_config
    from curation_platform.storage import as_path
    from curation_platform.workspace import Workspace

    # Everything up to "what is there to do?" runs without Dagster or Great Expectations: a run with nothing to do
    # (or only a current release to confirm) never imports them.
    if not config.exists() and config != Path("curation.yaml"):
        _config(config)  # a --config that does not exist: one clear error (the default file may be absent)
    ws = Workspace(workspace)
    cfg = effective_config(str(config.resolve()), release, profile, list(benchmark), executor, ray_address)
    if cfg.engine.executor == "ray":
        from curation_platform.executors.ray import check_reachable, import_ray

        import_ray()
        check_reachable(cfg.engine.ray_address)  # fail in one line now, not after minutes of retries in a step
    elif ray_address:
        _fail("--ray-address needs --executor ray (or engine.executor: ray in the configuration)")
    if cfg.release.profile not in cfg.licenses.profiles:
        _fail(f"unknown license profile '{cfg.release.profile}'; profiles: {', '.join(cfg.licenses.profiles)}")
    scan = _scan_settled(landing, cfg.ingest.settle_seconds, now, cfg.licenses)
    for name, message in scan.rejected:
        typer.secho(f"rejected drop {name}: {message}", fg=typer.colors.YELLOW, err=True)
    rejected = dict(scan.rejected)
    for name, message in scan.messages():
        if name not in rejected:
            typer.secho(f"not read: {message}", fg=typer.colors.YELLOW, err=True)
    changed = ws.changed_drops(scan.ready)
    ws.register_drops(scan.ready)
    registered = [d.name for d in ws.drops()]
    gone = [d.name for d in ws.drops() if not as_path(d.path).is_dir()]
    for name in gone:
        typer.secho(f"drop {name}: its folder is gone from the landing area; not curating it again "
                    f"(`curate takedown {name}` removes its documents from releases)", fg=typer.colors.YELLOW, err=True)
    todo = sorted((set(_stale_drops(ws, cfg, registered)) | set(changed)) - set(gone), key=registered.index)
    typer.echo(f"workspace {ws.root}: {len(registered)} drop(s) registered, {len(todo)} to curate")
    release_todo = not no_release and (todo or not _release_state(ws, cfg)[1])
    problems: list[str] = []
    if todo or release_todo:
        problems = _run_in_dagster(ws, cfg, config, landing, todo, registered, release_todo, release, profile,
                                   benchmark, executor, ray_address)
    elif not no_release:
        typer.echo(f"  release {cfg.release.name}: unchanged (same drops, ledger and configuration); not rebuilt")
    if not problems and not no_release and cfg.engine.retention == "gc":
        from curation_platform.gc import collect_garbage

        freed = collect_garbage(ws, cfg)
        if freed.drops:
            typer.echo(f"  gc: freed {freed.freed_bytes / 1e6:.1f} MB of intermediate text of "
                       f"{len(freed.drops)} drop(s) (engine.retention: gc)")
    _print_summary(ws, cfg)
    if scan.rejected or problems:
        for line in problems:
            typer.secho(line, fg=typer.colors.RED, err=True)
        _fail(f"{len(problems)} failure(s), {len(scan.rejected)} rejected drop(s); the stages after a failure did "
              "not run")


def _release_state(ws, cfg) -> tuple[str, bool]:
    """The release's input fingerprint, and whether the published release was built from exactly those inputs."""
    from curation_platform.pipeline import FINAL_STAGE
    from curation_platform.release import code_version
    from curation_platform.versioning import release_inputs, release_is_current

    inputs = release_inputs(ws, cfg, FINAL_STAGE, code_version())
    return inputs, release_is_current(ws, cfg.release.name, inputs, cfg.versioning.enabled)


def _run_in_dagster(ws, cfg, config: Path, landing: str, todo: list[str], registered: list[str], build: bool,
                    release, profile, benchmark, executor, ray_address) -> list[str]:
    """Curate ``todo`` (one ``curate_drop`` run per drop), then, when ``build`` and nothing failed, rebuild the
    release if its inputs changed; in-process on the workspace's Dagster instance. Returns the failures."""
    from assets import progress
    from assets.definitions import build_definitions
    from assets.partitions import drops
    from assets.resources import CurationResource
    from curation_platform.versioning import record_release_inputs

    resource = CurationResource(workspace=str(ws.root), config_path=str(config.resolve()), landing=str(landing),
                                release_name=release, profile=profile, benchmarks=list(benchmark),
                                executor=executor, ray_address=ray_address)
    instance = dagster_instance(ws.root)
    known = set(instance.get_dynamic_partitions(drops.name))
    instance.add_dynamic_partitions(drops.name, [n for n in registered if n not in known])
    defs = build_definitions(resource)
    # Our own progress lines and failure summary replace Dagster's console log (and its stack traces).
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    progress.clear()
    progress.listen(_print_progress)
    problems: list[str] = []
    try:
        for name in todo:
            result = defs.resolve_job_def("curate_drop").execute_in_process(
                partition_key=name, instance=instance, raise_on_error=False, run_config=quiet)
            problems += _failures(result)
        if build and not problems:
            inputs, current = _release_state(ws, cfg)
            if current:
                typer.echo(f"  release {cfg.release.name}: unchanged (same drops, ledger and configuration); "
                           "not rebuilt")
            else:
                result = defs.resolve_job_def("build_release").execute_in_process(
                    instance=instance, raise_on_error=False, run_config=quiet)
                failures = _failures(result)
                problems += failures
                if result.success and not failures:
                    record_release_inputs(ws, cfg.release.name, inputs, cfg.versioning.enabled)
    finally:
        progress.clear()
    return problems


# Release removals in the user's words.
_RELEASE_REASONS = {
    "license.not_in_profile": "license not allowed by profile '{profile}'",
    "license.generator_terms": "synthetic: the generator's terms forbid training (forbids_training in licenses.generator_terms)",
    "selection.budget": "over the token budget (release.token_budget)",
    "selection.mixture": "over its domain's mixture target (release.mixture)",
    "selection.synthetic_cap": "synthetic: over the synthetic share cap (release.synthetic_cap)",
}


def _released_per_drop(ws, cfg) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(drop, released, tokens) from the release's shards, and (drop, rule, documents) of its removals."""
    shards = ws.release_dir(cfg.release.name) / "shards"
    files = sorted(shards.glob("*.parquet")) if shards.is_dir() else []
    released = (
        pl.concat([pl.read_parquet(f, columns=["doc_id", "drop", "token_count"]) for f in files])
        .group_by("drop").agg(pl.col("doc_id").n_unique().cast(pl.Int64).alias("released"),  # once, whatever its epochs
                              pl.col("token_count").sum().cast(pl.Int64).alias("tokens"))
        if files else pl.DataFrame(schema={"drop": pl.String, "released": pl.Int64, "tokens": pl.Int64})
    )
    ledger = ws.release_ledger_path(cfg.release.name)
    removals = (
        pl.read_parquet(ledger, columns=["drop", "rule"]).group_by("drop", "rule").len().sort("drop", "rule")
        if ledger.exists() else pl.DataFrame(schema={"drop": pl.String, "rule": pl.String, "len": pl.UInt32})
    )
    return released, removals


def _summary_frame(ws, cfg, released: pl.DataFrame) -> pl.DataFrame:
    from curation_platform.ledger import stage_counts
    from curation_platform.pipeline import FINAL_STAGE, STAGES, drop_state

    released = {r["drop"]: r for r in released.iter_rows(named=True)}
    rows = []
    for drop in ws.drops():
        counts = stage_counts(ws, drop.name, STAGES)
        shipped = released.get(drop.name, {})
        if counts.is_empty():
            ran = ws.ledger_path(STAGES[0], drop.name).exists()
            rows.append({"drop": drop.name, "read": 0, "kept": 0, "released": 0, "tokens": 0, "dropped": 0,
                         "quarantined": 0, "status": "empty: its files hold no record" if ran else "not run"})
            continue
        final = counts.filter(pl.col("stage") == FINAL_STAGE)
        rows.append({
            "drop": drop.name,
            "read": int(counts["input"][0]),
            "kept": int(final["kept"][0]) if final.height else 0,
            "released": int(shipped.get("released") or 0),
            "tokens": int(shipped.get("tokens") or 0),
            "dropped": int(counts["dropped"].sum()),
            "quarantined": int(counts["quarantined"].sum()),
            "status": {"current": "curated", "new": "not run"}.get(
                drop_state(ws, cfg, drop.name),
                "curated with another configuration: `curate run` curates it again"
                if counts["stage"][-1] == FINAL_STAGE else f"incomplete (last ran: {counts['stage'][-1]})"),
        })
    return pl.DataFrame(rows)


def _print_summary(ws, cfg) -> None:
    released, removals = _released_per_drop(ws, cfg)
    frame = _summary_frame(ws, cfg, released)
    if frame.is_empty():
        typer.echo("no drops registered")
        return
    typer.echo("")
    typer.echo(f"{'drop':<28} {'read':>7} {'kept':>7} {'released':>8} {'tokens':>9} {'dropped':>8} "
               f"{'quarantined':>12}  status")
    for r in frame.iter_rows(named=True):
        typer.echo(f"{r['drop']:<28} {r['read']:>7} {r['kept']:>7} {r['released']:>8} {r['tokens']:>9} "
                   f"{r['dropped']:>8} {r['quarantined']:>12}  {r['status']}")
    card_path = ws.release_dir(cfg.release.name) / "data_card.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        typer.echo(f"\nrelease '{card['name']}' ({card['profile']}): {card['documents']} documents, "
                   f"{card['tokens']} tokens, {len(card.get('shards', []))} shard(s)")
        typer.echo(f"  {ws.release_dir(cfg.release.name)}  (data card: data_card.md)")
        if card.get("selection"):
            typer.echo(f"  {_selection_line(card['selection'])}")
        _print_left_out(removals, frame, card["profile"])
    staged = ws.staging_dir(cfg.release.name) / "release_verdicts.parquet"
    if staged.exists():  # a candidate that was not published (its gate failed): say what it left out
        typer.echo(f"\nrelease candidate '{cfg.release.name}' ({cfg.release.profile}), not published:")
        removals = pl.read_parquet(staged, columns=["drop", "rule"]).group_by("drop", "rule").len().sort("drop", "rule")
        _print_left_out(removals, frame.with_columns(pl.lit(0).alias("released")), cfg.release.profile)


def _selection_line(report: dict) -> str:
    """Split counts, repeated tokens and the synthetic share of a release's selection report, in one line."""
    splits = report.get("splits", {})
    repeated = sum(d.get("repeated_tokens", 0) for d in report.get("domains", {}).values())
    return (f"train {splits.get('train', {}).get('documents', 0)} documents, validation "
            f"{splits.get('validation', {}).get('documents', 0)}; {len(report.get('domains', {}))} domain(s), "
            f"{repeated} repeated tokens; synthetic share {report.get('synthetic', {}).get('share', 0.0):.1%}")


def _print_left_out(removals: pl.DataFrame, frame: pl.DataFrame, profile: str) -> None:
    """One line per drop the release left documents of out, with the reasons in the user's words."""
    kept = dict(zip(frame["drop"], frame["kept"]))
    released = dict(zip(frame["drop"], frame["released"]))
    for drop, rules in removals.group_by("drop", maintain_order=True):
        name = drop[0]
        why = "; ".join(f"{_RELEASE_REASONS.get(rule, rule).format(profile=profile)}: {n}"
                        for rule, n in rules.select("rule", "len").iter_rows())
        head = (f"none of its {kept.get(name, 0)} kept documents released" if not released.get(name)
                else f"{int(rules['len'].sum())} kept document(s) left out")
        typer.echo(f"  {name}: {head} ({why})")


@app.command()
def status(
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
    landing: str = typer.Option("landing", "--landing", help="Landing area whose unread drops to list (a "
                                "directory or an s3:// prefix)."),
) -> None:
    """Registered drops with their counts (read, kept, released, tokens), drops in the landing area that are not
    read and why, and the releases in the workspace."""
    from curation_platform.landing import scan_landing
    from curation_platform.workspace import Workspace

    ws = Workspace(workspace)
    cfg = _config(config)
    _print_summary(ws, cfg)
    scan = scan_landing(landing, cfg.ingest.settle_seconds, cfg.licenses)
    rejected = dict(scan.rejected)
    for name, message in scan.messages():
        typer.echo(f"not read: {message}" if name not in rejected else f"rejected drop {name}: {message}")
    for name in scan.waiting:
        typer.echo(f"settling: drop '{name}' changed less than {cfg.ingest.settle_seconds:g} s ago")
    for name in ws.release_names():
        card_path = ws.release_dir(name) / "data_card.json"
        if not card_path.exists():
            continue
        card = json.loads(card_path.read_text())
        dvc_file = ws.release_pointer(name)
        typer.echo(f"release {card['name']}: {card['documents']} documents, {card['tokens']} tokens, "
                   f"config {card['config_hash']}" + (", versioned by DVC" if dvc_file.exists() else ""))


@app.command()
def explain(doc_id: str, workspace: Path = WorkspaceOpt, config: Path = ConfigOpt) -> None:
    """A document's journey: source, drop, license, each stage's verdict and reason, duplicate-of, its shard.
    DOC_ID may be a unique prefix (as `curate whatif` prints); an unknown id exits non-zero."""
    from curation_platform.explain import document_journey, resolve_doc_id
    from curation_platform.workspace import Workspace

    ws = Workspace(workspace)
    try:
        full_id = resolve_doc_id(ws, doc_id)
    except CurationError as exc:
        _fail(str(exc))
    typer.echo(document_journey(ws, full_id))


@app.command()
def gc(
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be removed and the bytes freed."),
) -> None:
    """Remove the intermediate text (raw, normalized and line-deduped stages) of drops that are current and
    released; releases, explain, the ledger, takedowns and later drops' dedup keep working."""
    from curation_platform.gc import collect_garbage
    from curation_platform.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.root.is_dir():
        _fail(f"workspace {ws.root} does not exist; run `curate run` first")
    result = collect_garbage(ws, _config(config), dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    typer.echo(f"gc: {verb} {result.freed_bytes / 1e6:.1f} MB in {result.files} files of {len(result.drops)} drops"
               + (f" ({', '.join(result.drops)})" if result.drops else ""))


@ledger_app.command("export")
def ledger_export(
    out: Path,
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
    verdicts: bool = typer.Option(False, "--verdicts", help="Export every verdict row instead of one row per record."),
    release: Optional[str] = typer.Option(None, "--release", help="Release whose verdicts and shards count."),
) -> None:
    """Write the ledger as Parquet: one row per input record (default) or every verdict row."""
    from curation_platform.explain import record_table
    from curation_platform.ledger import export_parquet, read_ledger
    from curation_platform.workspace import Workspace

    ws = Workspace(workspace)
    cfg = _config(config)
    name = release or cfg.release.name
    if release is not None and not ws.release_dir(release).exists():
        _fail(f"release '{release}' does not exist in {ws.lake / 'releases'}")
    frame = read_ledger(ws, release=name) if verdicts else record_table(ws, name)
    export_parquet(frame, out)
    typer.echo(f"wrote {frame.height} rows to {out}")


@app.command()
def whatif(
    set_: list[str] = typer.Option(..., "--set", help="SETTING=VALUE: a filter rule (gopher_quality.min_words=100) "
                                   "or a stage threshold (language.min_score, pii.max_hits_per_doc, "
                                   "near_dedup.verify_threshold, scoring.min_score, scoring.top_fraction, "
                                   "scoring.per_source.NAME.min_score, ...)."),
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
) -> None:
    """How many documents per drop a threshold change would add back or remove, from the stored signals and
    ledger values (each drop with its filter profile)."""
    from curation_platform.ops.filters import whatif as whatif_counts
    from curation_platform.pipeline import filter_profile
    from curation_platform.whatif import NOT_PREVIEWABLE, PREVIEWABLE, SCHEMA, SCORE_SETTING, threshold_whatif
    from curation_platform.workspace import Workspace

    ws = Workspace(workspace)
    cfg = _config(config)
    changes = {}
    for item in set_:
        rule, sep, value = item.partition("=")
        try:
            changes[rule] = float(value)
        except ValueError:
            _fail(f"--set {item!r}: expected SETTING=NUMBER")
    rule_names = {r.name for r in cfg.filters.rules()}
    filter_changes = {k: v for k, v in changes.items() if k in rule_names}
    settings = {k: v for k, v in changes.items() if k not in rule_names}
    unknown = sorted(s for s in set(settings) - set(PREVIEWABLE) - set(NOT_PREVIEWABLE) if not SCORE_SETTING.match(s))
    if unknown:
        _fail(f"unknown setting(s) {', '.join(unknown)}: give a filter rule name (see `filters` in curation.yaml, "
              f"e.g. gopher_quality.min_words) or one of {', '.join(sorted(PREVIEWABLE))}")
    tables = []
    if filter_changes:
        drops = [d.name for d in ws.drops() if ws.has_stage("quality_signals", d.name)]
        if not drops:
            _fail("no stored signals: run `curate run` first")
        try:
            for name in drops:
                tables.append(whatif_counts(ws.read_stage("quality_signals", name), cfg.filters,
                                            filter_changes, filter_profile(ws, cfg, name)))
        except KeyError as exc:
            _fail(str(exc.args[0]) if exc.args else str(exc))
    for setting, value in settings.items():
        try:
            tables.append(threshold_whatif(ws, cfg, setting, value))
        except CurationError as exc:
            _fail(str(exc))
    table = pl.concat(tables).sort("drop", "rule") if tables else pl.DataFrame(schema=SCHEMA)
    typer.echo(f"{'drop':<28} {'rule':<40} {'added':>6} {'removed':>8}  examples")
    for r in table.iter_rows(named=True):
        examples = ", ".join([f"+{d[:12]}" for d in r["example_added"] or []] + [f"-{d[:12]}" for d in r["example_removed"] or []])
        typer.echo(f"{r['drop']:<28} {r['rule']:<40} {r['added']:>6} {r['removed']:>8}  {examples}")
    if settings:
        typer.echo("(stage thresholds are counted at their own stage; later stages may still remove documents; "
                   "`curate explain ID` takes the example prefixes)")


@quality_app.command("train")
def quality_train(
    positive: list[str] = typer.Option(..., "--positive", help="High-quality examples: a JSONL/Parquet/text file, "
                                       "a directory of them, or a drop name (its curated text). Repeatable."),
    negative: list[str] = typer.Option(..., "--negative", help="Low-quality examples, as --positive. Repeatable."),
    out: Optional[Path] = typer.Option(None, "--out", help="Model directory (default <workspace>/models/quality)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split and the training."),
    holdout: float = typer.Option(0.2, "--holdout", help="Share of documents held out for evaluation."),
    keep_fraction: Optional[float] = typer.Option(None, "--keep-fraction", help="Share a selection keeps, for the "
                                                  "reported precision (default scoring.top_fraction if below 1, "
                                                  "else the held-out positive share)."),
    text_field: str = typer.Option("text", "--text-field", help="Text field of JSONL and Parquet inputs."),
    no_version: bool = typer.Option(False, "--no-version", help="Do not track the model with DVC."),
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
) -> None:
    """Train a quality classifier offline, report held-out ROC-AUC and precision at the kept fraction, write the
    model and its card, and version it with DVC beside the workspace."""
    from curation_platform.quality_model import TrainParams, train_from_specs, version_model

    cfg = _config(config)
    out = out or workspace / "models" / "quality"
    if keep_fraction is None and cfg.scoring.top_fraction < 1:
        keep_fraction = cfg.scoring.top_fraction
    try:
        params = TrainParams(seed=seed, holdout_fraction=holdout)
    except ValueError as exc:
        _fail(f"invalid option: {str(exc).splitlines()[-1].strip()}")
    try:
        card = train_from_specs(positive, negative, out, params, workspace, keep_fraction, text_field)
        dvc = None if no_version or not cfg.versioning.enabled else version_model(out, card, cfg.versioning,
                                                                                     workspace)
    except CurationError as exc:
        _fail(str(exc))
    heldout = card["heldout"]
    typer.echo(f"trained {card['backend']} on {card['documents']['positive']} positive and "
               f"{card['documents']['negative']} negative documents ({card['documents']['train']} train, "
               f"{card['documents']['heldout']} held out, seed {seed})")
    typer.echo(f"held-out ROC-AUC {heldout['roc_auc']:.4f}; precision {heldout['precision_at_keep_fraction']:.4f} "
               f"at keep fraction {heldout['keep_fraction']:.3f} ({heldout['kept']} of {heldout['documents']})")
    typer.echo(f"wrote {out / card['model_file']} ({card['size_bytes']:,} bytes) and {out / 'model_card.json'}")
    if dvc:
        typer.echo(f"DVC: {dvc['dvc_file']} md5 {dvc['md5']}" + (f", pushed to {dvc['remote']}" if dvc["pushed"] else ""))
    typer.echo(f"use it: scoring.model: {out}")


@app.command()
def takedown(
    drop: Optional[str] = typer.Argument(None, help="Take down every document of this drop."),
    doc_id: list[str] = typer.Option([], "--doc-id", help="A document to take down (repeatable)."),
    ids_file: Optional[Path] = typer.Option(None, "--ids-file", help="A file with one doc_id per line."),
    reason: str = typer.Option("takedown request", "--reason", help="Recorded in the ledger tombstone."),
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
) -> None:
    """Remove a drop or documents from the dedup indexes and every future release; tombstones go to the ledger."""
    from curation_platform.takedown import takedown as take_down
    from curation_platform.workspace import Workspace

    ids = list(doc_id)
    if ids_file is not None:
        ids += [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    if drop is None and not ids:
        _fail("name a DROP or give --doc-id / --ids-file")
    count = take_down(Workspace(workspace), drop=drop, doc_ids=ids, reason=reason)
    typer.echo(f"took down {count} document(s); run `curate run` to rebuild the release without them")


@app.command()
def sql(
    statement: str = typer.Argument(..., help='One SQL statement, e.g. "SELECT stage, count(*) FROM ledger GROUP BY ALL".'),
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
    format_: str = typer.Option("table", "--format", help="table, csv or json (one object per line)."),
    refresh: bool = typer.Option(False, "--refresh", help="Rebuild the catalog's views first."),
) -> None:
    """Query the workspace catalog (data/catalog.duckdb: views over stages, ledger, quarantine, indexes, releases)."""
    from curation_platform.catalog import CatalogError, query, refresh_catalog
    from curation_platform.workspace import Workspace

    if format_ not in ("table", "csv", "json"):
        _fail(f"--format {format_!r}: expected table, csv or json")
    ws = Workspace(workspace)
    if refresh:
        import duckdb

        with duckdb.connect() as scratch:
            refresh_catalog(scratch, ws, rebuild="always")
    try:
        frame = query(ws, statement)
    except CatalogError as exc:
        _fail(str(exc))
    if format_ == "csv":
        typer.echo(frame.write_csv(), nl=False)
    elif format_ == "json":
        typer.echo(frame.write_ndjson(), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*frame.columns, show_lines=False)
        for row in frame.iter_rows():
            table.add_row(*["" if v is None else str(v) for v in row])
        Console(width=max(120, shutil.get_terminal_size().columns)).print(table)
        typer.echo(f"{frame.height} row(s)")


@app.command()
def diff(
    release_a: str = typer.Argument(..., help="The earlier release: its name under releases/, or NAME@REV for the "
                                    "version DVC recorded at git revision REV."),
    release_b: str = typer.Argument(..., help="The later release (same forms)."),
    workspace: Path = WorkspaceOpt,
    config: Path = ConfigOpt,
    format_: str = typer.Option("table", "--format", help="table, csv or json (one object per line)."),
) -> None:
    """Documents and tokens added and removed from RELEASE_A to RELEASE_B, per source, domain and reason."""
    from curation_platform.diff import diff_text, release_diff
    from curation_platform.workspace import Workspace

    if format_ not in ("table", "csv", "json"):
        _fail(f"--format {format_!r}: expected table, csv or json")
    try:
        result = release_diff(Workspace(workspace), release_a, release_b)
    except CurationError as exc:
        _fail(str(exc))
    if format_ == "csv":
        typer.echo(result.rows.write_csv(), nl=False)
    elif format_ == "json":
        typer.echo(result.rows.write_ndjson(), nl=False)
    else:
        typer.echo(diff_text(result))


@app.command()
def samples(
    landing: Path = typer.Option(Path("landing"), "--landing", help="Where to write the bundled sample drops."),
    force: bool = typer.Option(False, "--force", help="Rewrite sample drops that already exist."),
) -> None:
    """Write the bundled sample drops (web, code, chat, mixed licenses, synthetic) into a landing area."""
    from curation_platform.samples import write_sample_landing

    if landing.is_dir() and any(landing.iterdir()) and not force:
        typer.echo(f"landing area {landing} is not empty; keeping it (use --force to rewrite the samples)")
        return
    names = write_sample_landing(landing)
    typer.echo(f"wrote {len(names)} sample drops to {landing}: {', '.join(names)}")


def main() -> None:
    import warnings

    # Dagster preview/deprecation notices are for us, not for users of the CLI.
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", category=UserWarning, message=".*dagster.*")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    try:
        app()
    except CurationError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except OSError as exc:  # a path the user gave cannot be read or written
        typer.secho(f"error: {exc.strerror or exc}: {exc.filename or ''}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
