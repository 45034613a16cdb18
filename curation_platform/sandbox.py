"""Run untrusted Python candidates against their tests in a sandboxed subprocess.

Each candidate runs in its own ``python -I -B -`` process (program on stdin, so the working directory stays an
empty temporary folder), started in a new session with a scrubbed environment. The layers, and what each one
guarantees:

* **Resource limits** (``setrlimit`` in the child before any candidate code runs, soft = hard so the candidate
  cannot raise them): ``RLIMIT_CPU`` ends a busy loop with SIGXCPU; ``RLIMIT_AS`` turns a memory hog into a
  ``MemoryError``; ``RLIMIT_FSIZE`` makes a write past the size fail with EFBIG; ``RLIMIT_NPROC`` bounds the
  processes of the sandbox user, so a fork bomb gets EAGAIN; ``RLIMIT_CORE`` = 0. These hold for any code,
  including C extensions and ``ctypes``.
* **An unprivileged user**: run as root, the child drops to ``nobody`` (65534) after the limits are set, because
  the kernel does not apply ``RLIMIT_NPROC`` to root and root could write anywhere; it needs an interpreter whose
  standard library ``nobody`` can read (see ``SandboxConfig.python``). Without one the child stays root, and then
  only the audit hook and the timeout stop a fork bomb. Run as another user, the child keeps that user and its
  process limit counts that user's existing processes plus ``max_processes``.
* **No network namespace**: with ``unshare`` available (``unshare -n`` as root, ``unshare -rn`` through an
  unprivileged user namespace otherwise), the child has its own network namespace with only a loopback interface
  that is down: no connection to anything, including 127.0.0.1 of the host, even from C code. Where ``unshare``
  is missing or not permitted the run still goes on, protected by the next layer only.
* **An audit hook** (PEP 578), installed before the candidate runs, refuses ``socket.connect``, ``socket.bind``
  and ``socket.sendto`` and every process spawn (``subprocess.Popen``, ``os.system``, ``os.exec*``,
  ``os.posix_spawn``, ``os.spawn*``, ``os.fork``, ``pty.spawn``); a refused call makes the run ``resource`` even
  when the candidate catches the error. It stops the Python-level calls that buggy
  generated code makes; it is not a security boundary against code written to escape (``ctypes`` can call libc
  directly), which is what the kernel layers above are for.
* **A wall-clock timeout**: the parent kills the child's whole process group (SIGKILL) after ``timeout_seconds``,
  so a sleeping or blocked candidate (which uses no CPU) ends too, and so do any processes it managed to start.

Outcomes: ``passed`` (the tests ran to the end), ``failed`` (an assertion or any other exception, the candidate
exited early, or a crash), ``timeout`` (wall clock or CPU limit), ``resource`` (memory, file size, process limit,
or a refused network or process call). Candidates run in parallel in a bounded pool of subprocesses (threads only
wait for their child).
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

PASSED, FAILED, TIMEOUT, RESOURCE = "passed", "failed", "timeout", "resource"
NOBODY = 65534
# Exit codes of the harness below.
_EXIT_FAILED, _EXIT_RESOURCE = 1, 3


class SandboxConfig(BaseModel):
    """Limits for one candidate run (platform defaults: generous for a test file, small for a runaway)."""

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: float = Field(default=10.0, gt=0)  # wall clock, start to kill
    cpu_seconds: int = Field(default=5, ge=1)  # RLIMIT_CPU
    memory_mb: int = Field(default=512, ge=64)  # RLIMIT_AS: address space, the interpreter included (~30 MB)
    file_size_mb: int = Field(default=8, ge=1)  # RLIMIT_FSIZE: largest file the candidate may write
    max_processes: int = Field(default=8, ge=1)  # RLIMIT_NPROC on top of the sandbox user's existing processes
    workers: int | None = Field(default=None, ge=1)  # parallel candidates; None = the number of CPU cores
    output_chars: int = Field(default=2000, ge=100)  # tail of stdout + stderr kept for the ledger
    network_namespace: bool = True  # use `unshare` for an empty network namespace when it works
    # The interpreter candidates run with; None: this one, or (run as root, when the sandbox user cannot read this
    # one's standard library) the first python3 in /usr/local/bin, /usr/bin or /bin that it can read.
    python: str | None = None
    audit_hook: bool = True  # refuse network and process calls from Python (tests switch it off to probe the OS layers)


@dataclass(frozen=True)
class RunResult:
    """What one candidate run gave: outcome, the child's exit code (negative: killed by that signal), and the tail
    of its output with the reason the sandbox adds."""

    outcome: str
    returncode: int | None
    output: str


# The program the child runs. The parent puts the limits, the candidate and its tests before it as literals.
_HARNESS = r'''
import errno, os, resource, sys, traceback

def _limit(which, value, hard=None):
    resource.setrlimit(which, (value, value if hard is None else hard))

_limit(resource.RLIMIT_CORE, 0)
# SIGXCPU at the soft limit; the hard limit one second later is SIGKILL.
_limit(resource.RLIMIT_CPU, _LIMITS["cpu_seconds"], _LIMITS["cpu_seconds"] + 1)
_limit(resource.RLIMIT_FSIZE, _LIMITS["file_size_bytes"])
_limit(resource.RLIMIT_AS, _LIMITS["memory_bytes"])
if os.getuid() == 0 and _LIMITS["drop_to"] is not None:
    os.setgroups([])
    os.setgid(_LIMITS["drop_to"])
    os.setuid(_LIMITS["drop_to"])
_limit(resource.RLIMIT_NPROC, _LIMITS["nproc"])

_refused = []
_REFUSED_EVENTS = {"socket.connect", "socket.bind", "socket.sendto", "subprocess.Popen", "os.system", "os.exec",
                   "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn"}

def _hook(event, args):
    if event in _REFUSED_EVENTS:
        _refused.append(event)
        raise PermissionError(f"sandbox: {event} is not allowed")

if _LIMITS["audit_hook"]:
    sys.addaudithook(_hook)

def _exit(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

def _resource_error(exc):
    return isinstance(exc, MemoryError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EFBIG, errno.EAGAIN, errno.ENOMEM))

# Candidate and tests share one fresh __main__ module (so unittest.main() finds the tests' TestCases).
import types
_module = types.ModuleType("__main__")
_run, _candidate, _tests = exec, compile(_CANDIDATE, "<candidate>", "exec"), compile(_TESTS, "<tests>", "exec")
_phase = "candidate"
sys.modules["__main__"] = _module
try:
    _run(_candidate, _module.__dict__)
    _phase = "tests"
    _run(_tests, _module.__dict__)
except SystemExit as exc:
    # unittest.main() ends the tests with SystemExit: success is code 0 (False, None); anything else failed.
    if not (_phase == "tests" and exc.code in (0, None, False)):
        print(f"sandbox: the {_phase} exited (code {exc.code}) before the tests finished", file=sys.stderr)
        _exit(3 if _refused else 1)
except BaseException as exc:
    traceback.print_exc()
    _exit(3 if _refused or _resource_error(exc) else 1)
sys.stdout.flush()
print(_NONCE, flush=True)
os._exit(3 if _refused else 0)
'''


@functools.lru_cache(maxsize=1)
def unshare_prefix() -> tuple[str, ...]:
    """The ``unshare`` command that gives a child an empty network namespace here, or ``()`` when none works."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    for prefix in ((exe, "-n"), (exe, "-rn")) if os.geteuid() == 0 else ((exe, "-rn"),):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _readable_by_others(path: str) -> bool:
    """Whether a user without privileges can read ``path`` (every parent searchable, the file readable)."""
    current = os.path.realpath(path)
    try:
        if not os.stat(current).st_mode & stat.S_IROTH:
            return False
        while current != os.path.dirname(current):
            current = os.path.dirname(current)
            if not os.stat(current).st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def interpreter(configured: str | None) -> tuple[str, bool]:
    """(python executable, whether the child drops to ``nobody``). Run as root, the child drops privileges when
    the sandbox user can read the interpreter's standard library; otherwise it keeps the current user."""
    if os.geteuid() != 0:
        return configured or sys.executable, False
    choices = [configured] if configured else [
        sys.executable, *(shutil.which("python3", path=d) for d in ("/usr/local/bin", "/usr/bin", "/bin"))]
    for exe in filter(None, choices):
        try:
            probe = subprocess.run([exe, "-I", "-c", "import os; print(os.__file__)"], capture_output=True,
                                   text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and _readable_by_others(os.path.dirname(probe.stdout.strip())) \
                and _readable_by_others(exe):
            return exe, True
    return configured or sys.executable, False


def _user_process_count() -> int:
    """Processes of the sandbox user now (RLIMIT_NPROC counts them all, not only the candidate's)."""
    uid = NOBODY if os.geteuid() == 0 else os.getuid()
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                continue
    return count


def _classify(returncode: int | None, timed_out: bool, nonce_seen: bool) -> tuple[str, str]:
    if timed_out:
        return TIMEOUT, "sandbox: killed after the wall-clock timeout"
    if returncode == -signal.SIGXCPU:
        return TIMEOUT, "sandbox: CPU time limit reached (SIGXCPU)"
    if returncode == -signal.SIGXFSZ:
        return RESOURCE, "sandbox: file size limit reached (SIGXFSZ)"
    if returncode == 0 and nonce_seen:
        return PASSED, ""
    if returncode == _EXIT_RESOURCE:
        return RESOURCE, "sandbox: a resource limit or a refused call stopped the candidate"
    if returncode == 0:
        return FAILED, "sandbox: the process ended before its tests finished"
    if returncode == -signal.SIGKILL:
        return RESOURCE, "sandbox: killed by SIGKILL (CPU hard limit or out of memory)"
    if returncode is not None and returncode < 0:
        return FAILED, f"sandbox: killed by signal {signal.Signals(-returncode).name}"
    return FAILED, ""


def _tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else "..." + text[-chars:]


def run_candidate(code: str, tests: str, cfg: SandboxConfig, nproc: int | None = None) -> RunResult:
    """Run ``code`` and then ``tests`` (Python source, in one namespace) in a sandboxed subprocess."""
    python, drop = interpreter(cfg.python)
    nonce = f"sandbox-passed-{secrets.token_hex(16)}"
    limits = {
        "cpu_seconds": cfg.cpu_seconds,
        "memory_bytes": cfg.memory_mb * 1024 * 1024,
        "file_size_bytes": cfg.file_size_mb * 1024 * 1024,
        "nproc": nproc if nproc is not None else _user_process_count() + cfg.max_processes,
        "drop_to": NOBODY if drop else None,
        "audit_hook": cfg.audit_hook,
    }
    program = f"_LIMITS = {limits!r}\n_CANDIDATE = {code!r}\n_TESTS = {tests!r}\n_NONCE = {nonce!r}\n" + _HARNESS
    prefix = unshare_prefix() if cfg.network_namespace else ()
    # Program and output go through files outside the working directory: the parent waits for the process, not
    # for the end of a pipe that a leftover child could hold open.
    with tempfile.TemporaryDirectory(prefix="sandbox-") as workdir, \
            tempfile.TemporaryDirectory(prefix="sandbox-io-") as io_dir:
        if drop:
            os.chown(workdir, NOBODY, NOBODY)  # the child writes here after dropping to nobody
        program_path, output_path = os.path.join(io_dir, "program.py"), os.path.join(io_dir, "output")
        with open(program_path, "w", encoding="utf-8") as handle:
            handle.write(program)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        with open(program_path, "rb") as stdin, open(output_path, "wb") as stdout:
            proc = subprocess.Popen([*prefix, python, "-I", "-B", "-"], cwd=workdir, env=env, stdin=stdin,
                                    stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=cfg.timeout_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)  # the candidate and any process it started die here, whatever happened
            proc.wait()
        with open(output_path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4 * cfg.output_chars - 4096))
            out = handle.read()
    text = out.decode("utf-8", errors="replace")
    nonce_seen = nonce in text
    text = text.replace(nonce + "\n", "").replace(nonce, "")
    outcome, note = _classify(proc.returncode, timed_out, nonce_seen)
    output = _tail(text.rstrip(), cfg.output_chars)
    if note:
        output = f"{output}\n{note}" if output else note
    return RunResult(outcome=outcome, returncode=proc.returncode, output=output)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_candidates(pairs: list[tuple[str, str]], cfg: SandboxConfig) -> list[RunResult]:
    """Run every ``(code, tests)`` pair, ``cfg.workers`` at a time; results in input order."""
    if not pairs:
        return []
    workers = cfg.workers or os.cpu_count() or 1
    # Room for every concurrent candidate's own process plus its allowance, on top of what the user runs now.
    nproc = _user_process_count() + workers * (1 + cfg.max_processes)
    with ThreadPoolExecutor(max_workers=min(workers, len(pairs))) as pool:
        return list(pool.map(lambda pair: run_candidate(pair[0], pair[1], cfg, nproc), pairs))
