"""The sandbox runs real subprocesses: each test plants one kind of runaway and checks the layer that stops it."""

from __future__ import annotations

import os
import socket

import pytest

from curation_platform.sandbox import (FAILED, PASSED, RESOURCE, TIMEOUT, SandboxConfig, interpreter, run_candidate,
                                       run_candidates, unshare_prefix)

FAST = SandboxConfig(timeout_seconds=5, cpu_seconds=1, memory_mb=256, file_size_mb=1, max_processes=4, workers=2)
NO_HOOK = FAST.model_copy(update={"audit_hook": False})


def test_correct_solution_passes_and_wrong_one_fails_with_its_assertion():
    code = "def add(a, b):\n    return a + b\n"
    wrong = "def add(a, b):\n    return a - b\n"
    tests = "assert add(2, 3) == 5, 'add(2, 3) should be 5'\n"
    good, bad = run_candidates([(code, tests), (wrong, tests)], FAST)
    assert good.outcome == PASSED, good.output
    assert bad.outcome == FAILED
    assert "AssertionError: add(2, 3) should be 5" in bad.output


def test_unittest_main_ends_the_tests_with_its_verdict():
    code = "import unittest\ndef square(x):\n    return x * x\n"
    tests = ("class T(unittest.TestCase):\n    def test_square(self):\n        self.assertEqual(square(3), {})\n"
             "if __name__ == '__main__':\n    unittest.main()\n")
    good, bad = run_candidates([(code, tests.format(9)), (code, tests.format(10))], FAST)
    assert good.outcome == PASSED and "Ran 1 test" in good.output, good.output  # the TestCase was found and run
    assert bad.outcome == FAILED and "AssertionError: 9 != 10" in bad.output


def test_what_a_failing_candidate_printed_is_kept():
    result = run_candidate("print('intermediate value: 41')\n", "assert 41 == 42, 'off by one'\n", FAST)
    assert result.outcome == FAILED
    assert "intermediate value: 41" in result.output and "AssertionError: off by one" in result.output


def test_candidate_that_exits_before_its_tests_does_not_pass():
    result = run_candidate("import sys\nsys.exit(0)\n", "assert False\n", FAST)
    assert result.outcome == FAILED
    assert "exited (code 0) before the tests finished" in result.output


def test_busy_loop_is_stopped_by_the_cpu_limit():
    result = run_candidate("while True:\n    pass\n", "", FAST)
    assert result.outcome == TIMEOUT
    assert "CPU time limit" in result.output


def test_sleeping_candidate_is_killed_at_the_wall_clock_timeout():
    result = run_candidate("import time\ntime.sleep(600)\n", "", FAST.model_copy(update={"timeout_seconds": 1}))
    assert result.outcome == TIMEOUT
    assert "wall-clock timeout" in result.output


def test_memory_hog_gets_memory_error():
    result = run_candidate("hog = bytearray(2 * 1024 ** 3)\n", "", FAST)
    assert result.outcome == RESOURCE
    assert "MemoryError" in result.output


def test_file_size_bomb_stops_at_the_file_size_limit():
    code = "with open('bomb.bin', 'wb') as f:\n    for _ in range(64):\n        f.write(b'x' * 1024 * 1024)\n"
    result = run_candidate(code, "", FAST)
    assert result.outcome == RESOURCE
    assert "File too large" in result.output


def test_working_directory_is_empty_and_environment_scrubbed():
    os.environ["SANDBOX_TEST_SECRET"] = "do-not-leak"
    try:
        tests = ("import os\nassert os.listdir('.') == [], os.listdir('.')\n"
                 "assert 'SANDBOX_TEST_SECRET' not in os.environ\n")
        assert run_candidate("", tests, FAST).outcome == PASSED
    finally:
        del os.environ["SANDBOX_TEST_SECRET"]


def test_fork_bomb_is_refused_by_the_audit_hook():
    result = run_candidate("import os\nwhile True:\n    os.fork()\n", "", FAST)
    assert result.outcome == RESOURCE
    assert "os.fork is not allowed" in result.output


FORK_UNTIL_REFUSED = """
import os, time
started = 0
try:
    while started < 200:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
except OSError as exc:
    print(f"started {started} then {exc.strerror}", flush=True)
    raise
"""


@pytest.mark.skipif(os.geteuid() == 0 and not interpreter(None)[1],
                    reason="running as root without an interpreter the unprivileged sandbox user can read")
def test_fork_bomb_without_the_hook_is_bounded_by_the_process_limit():
    result = run_candidate(FORK_UNTIL_REFUSED, "", NO_HOOK)
    assert result.outcome == RESOURCE, result.output
    started = int(result.output.split("started ", 1)[1].split(" ", 1)[0])
    assert started <= NO_HOOK.max_processes


CONNECT = "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"


def _assert_no_connection(server: socket.socket) -> None:
    server.settimeout(0.5)
    with pytest.raises(socket.timeout):
        server.accept()


def test_network_call_is_refused_and_the_listener_receives_nothing():
    with socket.create_server(("127.0.0.1", 0)) as server:
        result = run_candidate(CONNECT.format(port=server.getsockname()[1]), "", FAST)
        assert result.outcome == RESOURCE
        assert "socket.connect is not allowed" in result.output
        _assert_no_connection(server)


@pytest.mark.skipif(not unshare_prefix(), reason="unshare cannot create a network namespace here")
def test_network_namespace_alone_keeps_the_listener_unreached():
    with socket.create_server(("127.0.0.1", 0)) as server:
        result = run_candidate(CONNECT.format(port=server.getsockname()[1]), "", NO_HOOK)
        assert result.outcome == FAILED
        assert "Error" in result.output  # connection refused or network unreachable inside the namespace
        _assert_no_connection(server)
