"""Suite-wide: when CI requires every service and tool (``MIXTRAIN_REQUIRE_SERVICES=1``, set by
``.ci/run``), an integration test (``tests/integration/``: a multi-node Ray cluster, MLflow on PostgreSQL,
headless Chromium) or an infra test (``test_infra.py``: shellcheck, the sweep files) that would be skipped
fails instead: there a missing service or tool is a broken build, not a reason to pass."""

from __future__ import annotations

import os

import pytest

STRICT_FILES = {"test_infra.py"}
STRICT_FOLDERS = {"integration"}


def services_required() -> bool:
    return os.environ.get("MIXTRAIN_REQUIRE_SERVICES", "").strip() not in ("", "0", "false", "no")


def _strict(item) -> bool:
    return item.path.name in STRICT_FILES or item.path.parent.name in STRICT_FOLDERS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and services_required() and _strict(item) and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"MIXTRAIN_REQUIRE_SERVICES=1, but this test would be skipped: {reason}"
