import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def git_project(tmp_path: Path) -> Path:
    """An empty git repository (the DVC repository is created inside it on first release)."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def run_cli(*args: str, cwd: Path | None = None):
    """Run the `curate` CLI in-process (the same entry point users call), returning (exit_code, output)."""
    from typer.testing import CliRunner

    from curation_platform.cli import app

    runner = CliRunner()
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = runner.invoke(app, list(args), catch_exceptions=True)
    finally:
        os.chdir(old)
    # `curate` (curation_platform.cli:main) turns CurationError and OSError into "error: ..." and exit 1;
    # anything else is a bug and fails the test with its traceback.
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        from curation_platform.errors import CurationError

        if not isinstance(result.exception, (CurationError, OSError)):
            raise result.exception
        return 1, result.output + f"error: {result.exception}\n"
    return result.exit_code, result.output
