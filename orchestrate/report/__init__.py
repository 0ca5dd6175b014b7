"""A sweep's report (CONTRACT.md "Report"): summary numbers, the paper's claims checked against them,
plots, and the files and MLflow artifacts that show them.

- ``summary``: the numbers (one row per group of trials, one per trial), from the histories alone;
- ``claims``: the sweep file's ``claims:`` checks, evaluated on the summary (a safe expression evaluator);
- ``plots``: the PNG figures; ``render``: summary.md / summary.csv / claims.csv / PNGs, MLflow tags.
"""

from orchestrate.report.render import PLOTS, log_report, write_report
from orchestrate.report.summary import SUMMARY_COLUMNS, TRIAL_COLUMNS, summarize, trial_table

__all__ = ["PLOTS", "SUMMARY_COLUMNS", "TRIAL_COLUMNS", "log_report", "summarize", "trial_table", "write_report"]
