"""Suite-wide: the infra tests (``test_infra.py``) fail instead of skipping when CI requires every
service and tool (``MIXTRAIN_REQUIRE_SERVICES=1``, set by ``.ci/run``), as the integration tests do
(``tests/integration/conftest.py``): in CI a missing ``shellcheck`` or sweep file is a broken build."""

from __future__ import annotations

import os

import pytest

STRICT_FILES = {"test_infra.py"}


def _required() -> bool:
    return os.environ.get("MIXTRAIN_REQUIRE_SERVICES", "").strip() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and _required() and item.path.name in STRICT_FILES
            and not hasattr(report, "wasxfail")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"MIXTRAIN_REQUIRE_SERVICES=1, but this infra test would be skipped: {reason}"
