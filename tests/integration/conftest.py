"""Integration tests: real services (a multi-node Ray cluster, MLflow on PostgreSQL, headless Chromium)
started by the tests themselves with the scripts in ``infra/`` and always torn down.

A test that would be skipped for want of a service fails instead when ``MIXTRAIN_REQUIRE_SERVICES=1``
(CI sets it): the hook is in ``tests/conftest.py``, shared with the infra tests.
"""

from __future__ import annotations

try:  # repository root on sys.path (python -m pytest, or a rootdir conftest.py)
    from tests.integration.infra_fixtures import mlflow_server, ray_cluster  # noqa: F401
except ImportError:  # bare `pytest`: rootdir-less prepend import puts tests/integration/ on sys.path
    from infra_fixtures import mlflow_server, ray_cluster  # noqa: F401

