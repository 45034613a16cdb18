"""Version releases with DVC: ``dvc add`` the release folder, write provenance and license metadata into the
``.dvc`` file's ``meta``, and ``dvc push`` to the configured remote (a local folder by default, or S3 and the
like). DVC's own lock gives up after seconds, so every DVC operation here runs under our file lock.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
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


def _is_git_repo(path: Path) -> bool:
    return any((p / ".git").exists() for p in [path, *path.parents])


def ensure_dvc_repo(workspace_root: Path) -> Path:
    """The DVC repository that holds the workspace; a workspace outside any is made one (git-backed when it is in
    a git work tree, standalone otherwise)."""
    root = find_dvc_root(workspace_root)
    if root is not None:
        return root
    from dvc.repo import Repo

    with contextlib.redirect_stdout(io.StringIO()):
        Repo.init(str(workspace_root), no_scm=not _is_git_repo(workspace_root), subdir=_is_git_repo(workspace_root))
    return workspace_root


def _remote_url(cfg: VersioningConfig, workspace_root: Path) -> str:
    if "://" in cfg.remote_url or cfg.remote_url.startswith("/"):
        return cfg.remote_url
    return str((workspace_root / cfg.remote_url).resolve())


def version_release(release_dir: Path, meta: dict[str, Any], cfg: VersioningConfig, workspace_root: Path) -> dict[str, Any]:
    """``dvc add`` + meta + ``dvc push``. Returns the .dvc file path, the folder's md5 and the remote."""
    from dvc.repo import Repo

    release_dir = release_dir.resolve()
    with file_lock(workspace_root / ".dvc-op.lock"):
        root = ensure_dvc_repo(workspace_root.resolve())
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        try:
            # DVC prints git hints to stdout; the caller reports what happened.
            with contextlib.redirect_stdout(io.StringIO()), Repo(str(root)) as repo:
                remote_url = _remote_url(cfg, workspace_root.resolve())
                with repo.config.edit("local") as conf:
                    conf["remote"][cfg.remote_name] = {"url": remote_url}
                    conf["core"]["remote"] = cfg.remote_name
                repo.add(str(release_dir))
                dvc_file = release_dir.with_name(release_dir.name + ".dvc")
                document = yaml.safe_load(dvc_file.read_text())
                document["meta"] = meta
                dvc_file.write_text(yaml.safe_dump(document, sort_keys=False))
                pushed = 0
                if cfg.push:
                    pushed = repo.push(remote=cfg.remote_name)
        except CurationError:
            raise
        except Exception as exc:  # DVC raises many types; the user needs the message, not a traceback
            raise CurationError(f"versioning release {release_dir.name} with DVC failed: {exc}") from exc
    out = document["outs"][0]
    return {"dvc_file": str(dvc_file), "md5": out.get("md5"), "remote": remote_url, "pushed_files": pushed}


def dvc_status(workspace_root: Path) -> str:
    """`dvc status` text for the CLI (empty when there is no DVC repository)."""
    root = find_dvc_root(workspace_root)
    if root is None:
        return ""
    proc = subprocess.run(["dvc", "status", "-q"], cwd=root, capture_output=True, text=True)
    return proc.stdout
