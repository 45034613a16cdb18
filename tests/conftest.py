import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parent.parent

# `make test` runs `pytest -n auto --dist loadfile`: each test module runs whole on one worker, so its
# module-scoped fixtures are computed once. Here modules that share a session fixture are one scope too, so its value
# is computed once per test session: the run of the sample drops (`project`) serves test_end_to_end.py,
# test_sample_outcomes.py and test_catalog.py (which compares it with its own workspace). Scopes start longest
# first, so the workers finish together (the order of the tests inside a module does not change).
SHARED_SCOPES = {
    "tests/test_end_to_end.py": "sample-run",
    "tests/test_sample_outcomes.py": "sample-run",
    "tests/test_catalog.py": "sample-run",
}
LONGEST_FIRST = ["sample-run", "tests/test_cli.py", "tests/executors/test_ray.py", "tests/test_storage.py",
                 "tests/test_readme.py"]


def _scope(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return SHARED_SCOPES.get(path, path)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_scope(item.nodeid), len(rank)))  # stable: each module keeps its order


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the scopes above (pytest-xdist's ``xdist_group`` marks do not reach its scheduler
    under pytest 9), in collection order rather than by number of tests."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False
    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def repository_stays_clean():
    """No test writes into the checkout: a test that runs `curate` without ``--workspace`` (default ``data/``) or
    without ``--landing`` in the repository's directory leaves files there (an untracked ``data/`` in a checkout)."""
    def state():
        return {p for top in ("data", "landing") if (REPO / top).exists() for p in (REPO / top).rglob("*")}

    before = state()
    yield
    new = sorted(str(p.relative_to(REPO)) for p in state() - before)
    assert not new, f"tests wrote into the repository checkout (use tmp_path): {new[:5]}"


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """The bundled sample drops curated once per test session by `curate run` (the real Dagster graph, a git+DVC
    repository, a local DVC remote): (project root, exit code, output)."""
    root = tmp_path_factory.mktemp("project")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    from curation_platform.samples import write_sample_landing

    write_sample_landing(root / "landing")
    code, output = run_cli("run", "--landing", str(root / "landing"), "--workspace", str(root / "data"),
                           "--config", str(REPO / "curation.yaml"))
    return root, code, output


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
