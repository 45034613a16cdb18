"""Version releases with DVC: ``dvc add`` the release folder, write provenance and license metadata into the
``.dvc`` file's ``meta``, and ``dvc push`` to the configured remote (a local folder by default, or S3 and the
like). DVC runs as a subprocess (its logging binds to the first process streams it sees) and every DVC operation
runs under our file lock, because DVC's own lock gives up after seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from curation_platform.errors import CurationError
from curation_platform.workspace import file_lock

if TYPE_CHECKING:
    from curation_platform.config import VersioningConfig


def find_dvc_root(path: Path) -> Path | None:
    for candidate in [path, *path.parents]:
        if (candidate / ".dvc").is_dir():
            return candidate
    return None


def _dvc(args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                          env=None)
    if proc.returncode != 0:
        raise CurationError(f"`dvc {' '.join(args)}` failed in {cwd}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _in_git_work_tree(path: Path) -> bool:
    proc = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=path, capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def ensure_dvc_repo(workspace_root: Path) -> Path:
    """The DVC repository that holds the workspace; a workspace outside any is made one (git-backed inside a git
    work tree, standalone otherwise)."""
    root = find_dvc_root(workspace_root)
    if root is not None:
        return root
    workspace_root.mkdir(parents=True, exist_ok=True)
    _dvc(["init", "-q", "--subdir"] if _in_git_work_tree(workspace_root) else ["init", "-q", "--no-scm"],
         workspace_root)
    _dvc(["config", "core.analytics", "false"], workspace_root)
    return workspace_root


def _remote_url(cfg: VersioningConfig, workspace_root: Path) -> str:
    if "://" in cfg.remote_url or cfg.remote_url.startswith("/"):
        return cfg.remote_url
    return str((workspace_root / cfg.remote_url).resolve())


def version_release(release_dir: Path, meta: dict[str, Any], cfg: VersioningConfig, workspace_root: Path) -> dict[str, Any]:
    """``dvc add`` + meta + ``dvc push``. Returns the .dvc file path, the folder's md5 and the remote."""
    release_dir, workspace_root = release_dir.resolve(), workspace_root.resolve()
    with file_lock(workspace_root / ".dvc-op.lock"):
        root = ensure_dvc_repo(workspace_root)
        remote_url = _remote_url(cfg, workspace_root)
        # Remote settings go to config.local, so a run never edits the committed .dvc/config.
        _dvc(["remote", "add", "--local", "--force", "--default", cfg.remote_name, remote_url], root)
        _dvc(["add", str(release_dir)], root)
        dvc_file = release_dir.with_name(release_dir.name + ".dvc")
        document = yaml.safe_load(dvc_file.read_text())
        document["meta"] = meta
        dvc_file.write_text(yaml.safe_dump(document, sort_keys=False))
        if cfg.push:
            _dvc(["push", "-q", "-r", cfg.remote_name, str(dvc_file)], root)
    out = document["outs"][0]
    return {"dvc_file": str(dvc_file), "md5": out.get("md5"), "remote": remote_url, "pushed": cfg.push}
