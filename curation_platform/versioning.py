"""Version releases with DVC: ``dvc add`` the release folder, write provenance and license metadata into the
``.dvc`` file's ``meta``, and ``dvc push`` to the configured remote (a local folder by default, or S3 and the
like). ``dvc add`` and ``dvc push`` run in one DVC subprocess (its logging binds to the first process streams it
sees); the remote is configured in-process through DVC's config API. Every DVC operation runs under our file lock,
because DVC's own lock gives up after seconds.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

from curation_platform.errors import CurationError
from curation_platform.storage import is_uri, storage_options
from curation_platform.workspace import Workspace, file_lock, write_text_atomic

if TYPE_CHECKING:
    from curation_platform.config import CurationConfig, VersioningConfig


def find_dvc_root(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` with a ``.dvc`` folder, not looking past the top of the git work
    tree that holds ``path``: a DVC repository of an enclosing project (another git repository) cannot track the
    workspace's files, and ``dvc add`` there fails."""
    for candidate in [path, *path.parents]:
        if (candidate / ".dvc").is_dir():
            return candidate
        if (candidate / ".git").exists():
            return None
    return None


def _dvc(args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                          env=None)
    if proc.returncode != 0:
        raise CurationError(f"`dvc {' '.join(args)}` failed in {cwd}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


# Several DVC commands in one interpreter: each `python -m dvc` costs a second or more of start-up.
_DVC_COMMANDS = """
import json, sys
from dvc.cli import main
for args in json.loads(sys.argv[1]):
    if main(args) != 0:
        print("`dvc " + " ".join(args) + "` failed", file=sys.stderr)
        sys.exit(1)
"""


def _dvc_commands(commands: list[list[str]], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _DVC_COMMANDS, json.dumps(commands)], cwd=cwd,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise CurationError(f"DVC failed in {cwd}: {(proc.stderr or proc.stdout).strip()}")


def _set_default_remote(root: Path, name: str, url: str) -> None:
    """``dvc remote add --local --force --default NAME URL``, in-process: settings go to ``.dvc/config.local``,
    so a run never edits the committed ``.dvc/config``. An ``s3://`` remote gets the endpoint of
    ``AWS_ENDPOINT_URL`` (an S3-compatible store such as MinIO); credentials stay in the environment."""
    from dvc.config import Config

    remote = {"url": url}
    endpoint = storage_options().get("endpoint_url")
    if url.startswith("s3://") and endpoint:
        remote["endpointurl"] = endpoint
    config = Config(dvc_dir=str(root / ".dvc"), validate=False)
    with config.edit("local") as local:
        local["remote"][name] = remote
        local["core"]["remote"] = name


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
    """``dvc add`` + meta + ``dvc push``. Returns the .dvc file path, the folder's md5 and the remote.

    A release in object storage (``s3://...``) is added with ``dvc add --to-remote``: DVC streams its objects
    into the remote without a local copy, and its ``.dvc`` pointer goes to ``<workspace>/releases/<name>.dvc``
    (``dvc pull`` there restores the release locally). Such a release is always pushed: DVC has no local cache
    of it."""
    remote_release = is_uri(release_dir)
    release_dir, workspace_root = release_dir.resolve(), workspace_root.resolve()
    with file_lock(workspace_root / ".dvc-op.lock"):
        root = ensure_dvc_repo(workspace_root)
        remote_url = _remote_url(cfg, workspace_root)
        _set_default_remote(root, cfg.remote_name, remote_url)
        if remote_release:
            out = workspace_root / "releases" / release_dir.name
            out.parent.mkdir(parents=True, exist_ok=True)
            dvc_file = out.with_name(out.name + ".dvc")
            _dvc_commands([["add", "-q", "--to-remote", "-r", cfg.remote_name, "-o", str(out), "-f",
                            str(release_dir)]], root)
        else:
            dvc_file = release_dir.with_name(release_dir.name + ".dvc")
            # Push reads only the .dvc file's outs, so meta is written after it: one DVC process does both.
            _dvc_commands([["add", "-q", str(release_dir)],
                           *([["push", "-q", "-r", cfg.remote_name, str(dvc_file)]] if cfg.push else [])], root)
        document = yaml.safe_load(dvc_file.read_text())
        document["meta"] = meta
        dvc_file.write_text(yaml.safe_dump(document, sort_keys=False))
    out = document["outs"][0]
    return {"dvc_file": str(dvc_file), "md5": out.get("md5"), "remote": remote_url,
            "pushed": cfg.push or remote_release}


def release_inputs(ws: Workspace, cfg: CurationConfig, final_stage: str, code_version: str) -> str:
    """A fingerprint of everything a release is built from: the whole configuration (with run overrides), the
    code version, and the size and modification time of the final stage's files, every per-drop ledger file, the
    takedowns and the drop registry. Equal fingerprints give the same release, so it need not be rebuilt."""
    files = [*(ws.lake / "stages" / final_stage).glob("*.parquet"),
             *(p for p in (ws.lake / "ledger").glob("*/*.parquet") if p.parent.name != "release"),
             ws.takedowns_path, ws.root / "registry" / "drops.json"]
    digest = hashlib.sha256(f"{cfg.hash}\0{code_version}".encode())
    # Path order (a lake in object storage sorts by its keys); names relative to the lake, the registry to root.
    for path in sorted((f for f in files if f.exists()), key=lambda p: PurePosixPath(str(p).partition("://")[2] or str(p))):
        stat = path.stat()
        base = ws.lake if str(path).startswith(str(ws.lake) + "/") else ws.root
        digest.update(f"\0{path.relative_to(base)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _inputs_record(ws: Workspace, name: str) -> Path:
    return ws.cache_path("release", name).with_suffix(".json")


def _published_state(ws: Workspace, name: str, versioned: bool) -> str | None:
    """Modification times of the published card (and its .dvc pointer): a release rebuilt or removed by other
    means (the UI, by hand) no longer matches what was recorded."""
    card = ws.release_dir(name) / "data_card.json"
    pointer = ws.release_pointer(name)
    if not card.exists() or (versioned and not pointer.exists()):
        return None
    return f"{card.stat().st_mtime_ns}:{pointer.stat().st_mtime_ns if versioned else '-'}"


def release_is_current(ws: Workspace, name: str, inputs: str, versioned: bool) -> bool:
    """True when release ``name`` was published (and versioned) from exactly these inputs and is untouched."""
    record = _inputs_record(ws, name)
    if not record.exists():
        return False
    stored = json.loads(record.read_text())
    published = _published_state(ws, name, versioned)
    return published is not None and stored == {"inputs": inputs, "published": published}


def record_release_inputs(ws: Workspace, name: str, inputs: str, versioned: bool) -> None:
    """Remember the inputs of the release just published, for ``release_is_current``."""
    published = _published_state(ws, name, versioned)
    if published is not None:
        write_text_atomic(json.dumps({"inputs": inputs, "published": published}), _inputs_record(ws, name))
