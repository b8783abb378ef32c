"""pytest plugin: one JSON line per test outcome, for interlock's driver-suite
harness (tests/src/driver_suite.rs), which compares a suite run directly
against PostgreSQL with the same suite run through interlock.

Loaded with `-p interlock_outcomes` (this directory on PYTHONPATH); the file
to append to is $INTERLOCK_OUTCOMES. A line {"id": ..., "outcome": "started"}
is written before each test, so a run killed at its time limit still names
the test that was running. Only the standard library and pytest's hooks.
"""

import json
import os

_out = None
_state = {}


def _write(record):
    _out.write(json.dumps(record) + "\n")
    _out.flush()


def pytest_configure(config):
    global _out
    path = os.environ.get("INTERLOCK_OUTCOMES")
    if path:
        _out = open(path, "a", encoding="utf-8")
        # Node ids are relative to it: a re-run names tests by rootdir/id.
        _write({"rootdir": str(config.rootpath)})


def pytest_runtest_logstart(nodeid, location):
    if _out:
        _state[nodeid] = None
        _write({"id": nodeid, "outcome": "started"})


def pytest_runtest_logreport(report):
    if not _out:
        return
    xfail = hasattr(report, "wasxfail")
    if report.failed:
        outcome = "failed" if report.when == "call" else "error"
        detail = str(report.longrepr)[-1500:]
    elif report.skipped:
        outcome = "xfailed" if xfail else "skipped"
        detail = ""
    elif report.when == "call":
        outcome = "xpassed" if xfail else "passed"
        detail = ""
    else:
        return
    # The first failure wins (a failed call then a failing teardown stays
    # "failed"); a later phase only fills a phase that has not reported.
    prev = _state.get(report.nodeid)
    if prev is None or (prev[0] in ("passed", "skipped") and outcome in ("failed", "error")):
        _state[report.nodeid] = (outcome, detail)


def pytest_runtest_logfinish(nodeid, location):
    if not _out:
        return
    outcome, detail = _state.pop(nodeid, None) or ("error", "no report")
    _write({"id": nodeid, "outcome": outcome, "detail": detail})


def pytest_unconfigure(config):
    if _out:
        _out.close()
