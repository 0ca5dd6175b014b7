"""A sweep's report (CONTRACT.md "Report"): summary numbers, the paper's claims checked against them,
plots, and the files and MLflow artifacts that show them.

- ``summary``: the numbers (one row per group of trials, one per trial), from the histories alone;
  ``samples``: the per-sample statistics columns;
- ``claims``: the sweep file's ``claims:`` checks, evaluated on the summary (a safe expression evaluator);
- ``plots``: the PNG figures; ``render``: summary.md / summary.csv / claims.csv / PNGs, MLflow tags.

Names are imported lazily, so that ``orchestrate.spec`` can validate claims without loading matplotlib.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PLOTS": "render", "Report": "render", "build_report": "render", "claim_tags": "render",
    "log_report": "render", "write_report": "render",
    "SUMMARY_COLUMNS": "summary", "TRIAL_COLUMNS": "summary", "summarize": "summary", "trial_table": "summary",
    "CLAIM_COLUMNS": "claims", "evaluate_claims": "claims", "parse_check": "claims",
    "STAT_COLUMNS": "samples",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"orchestrate.report.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'orchestrate.report' has no attribute {name!r}")
