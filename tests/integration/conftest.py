"""Integration tests: real services (a multi-node Ray cluster, MLflow on PostgreSQL, headless Chromium)
started by the tests themselves with the scripts in ``infra/`` and always torn down.

A test that would be skipped for want of a service (no ``ray``/``mlflow``/PostgreSQL/Chromium binary)
fails instead when ``MIXTRAIN_REQUIRE_SERVICES=1`` (CI sets it): there, a missing service is a broken
environment, not a reason to pass.
"""

from __future__ import annotations

import os

import pytest

try:  # repository root on sys.path (python -m pytest, or a rootdir conftest.py)
    from tests.integration.infra_fixtures import mlflow_server, ray_cluster  # noqa: F401
except ImportError:  # bare `pytest`: rootdir-less prepend import puts tests/integration/ on sys.path
    from infra_fixtures import mlflow_server, ray_cluster  # noqa: F401


def services_required() -> bool:
    return os.environ.get("MIXTRAIN_REQUIRE_SERVICES", "").strip() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and services_required() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"MIXTRAIN_REQUIRE_SERVICES=1, but this test would be skipped: {reason}"
