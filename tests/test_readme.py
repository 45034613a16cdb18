"""Every ```bash block of the README runs as shown, in a fresh copy of this project.

Skipped, because they do not end: `make ui` (a web server) and `make test` (this suite itself). `make run` runs
once (the sample drops, curated and released); the blocks after it reuse that run.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SKIPPED = {"make ui", "make test"}  # a web server that does not end; the whole suite, which includes this test


def _bash_blocks(readme: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", readme, flags=re.S)


def _runnable(block: str) -> str:
    lines = [l for l in block.splitlines() if l.split("#", 1)[0].strip() not in SKIPPED]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The project's files (tracked and new, not ignored) in a new git repository, with `.venv/bin` pointing at
    the interpreter running the tests, so `make run` does not install anything."""
    root = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    env = _env(root)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "fresh clone"], cwd=root, check=True, env=env)
    (root / ".venv").mkdir()
    (root / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    (root / ".venv" / ".installed").touch()  # newer than pyproject.toml: make skips the install
    return root


def _env(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(root), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def test_readme_has_bash_blocks_with_curate_examples():
    blocks = _bash_blocks((REPO / "README.md").read_text())
    assert any("make run" in b for b in blocks)
    assert sum(l.strip().startswith("curate ") for b in blocks for l in b.splitlines()) >= 4


def test_every_readme_bash_block_runs_as_shown(fresh_clone):
    blocks = _bash_blocks((fresh_clone / "README.md").read_text())
    for block in blocks:
        script = _runnable(block)
        if not script.strip():
            continue
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=fresh_clone, env=_env(fresh_clone),
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"README block failed:\n{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
    # The README says which files a run leaves for git: after committing them, nothing under data/ is left.
    status = subprocess.run(["git", "status", "--short", "--untracked-files=all", "data/"], cwd=fresh_clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == ""
