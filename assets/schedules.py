import dagster as dg

from assets.jobs import build_release_job

# Off by default: turn it on in the UI (Automation tab) or with `dagster schedule start daily_release`.
daily_release = dg.ScheduleDefinition(
    name="daily_release",
    job=build_release_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Build the release from every curated drop at 03:00 daily.",
)
