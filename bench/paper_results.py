"""RESULTS.md's tables, from the reports of the sweeps/paper CPU proxies (``mixtrain report`` output only).

Each entry names a sweeps/paper file, the sweep that ran its proxy command (its header) and, optionally,
other paper files whose claims are checked on the same results (as ``mixtrain report NAME --claims FILE``
does; for files whose variants a run already covers). Reads ``<root>/<sweep>/report/{summary,claims}.csv``
(run ``mixtrain report NAME`` first); prints Markdown.

    python bench/paper_results.py --root /tmp/claims-run/results \
        table2=paper-table2-cpu:regions thresholds=paper-thresholds-cpu:region1_vs_region3 ...
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PAPER = REPO / "sweeps" / "paper"
SUMMARY_COLS = [("variant", "Variant"), ("budget", "Budget"), ("top1", "Top-1 (%)"), ("delta_top1", "Δ top-1"),
                ("speedup", "Speedup"), ("inputs_speedup", "Inputs speedup"), ("iso_time_gain", "Iso-time gain"),
                ("early_term_speedup", "Early-term. speedup"),
                ("early_term_inputs_speedup", "Early-term. inputs speedup"), ("frac_mixed_mean", "Mixed (%)")]


def header_command(path: Path) -> str:
    """The proxy command of a paper file's header, as one line."""
    lines = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if line.startswith("mixtrain sweep run"))
    parts = []
    for line in lines[start:]:
        parts.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return " ".join(parts)


def _fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _claims_table(claims: pd.DataFrame, source: str) -> list[str]:
    lines = ["| Claim | Verdict | Measured | Paper |", "| --- | --- | --- | --- |"]
    for _, c in claims.iterrows():
        measured = str(c["measured"]) if not pd.isna(c["measured"]) else ""
        if isinstance(c.get("reason"), str) and c["reason"]:
            measured += f" ({c['reason']})"
        verdict = c["verdict"] if c["verdict"] == "holds" else f"**{c['verdict']}**"
        lines.append(f"| `{c['id']}` ({source}) | {verdict} | {measured.replace('|', '/')} | {c['text']} |")
    return lines


def section(root: Path, stem: str, sweep: str, extra: list[str]) -> list[str]:
    path = Path(stem) if stem.endswith(".yaml") else PAPER / f"{stem}.yaml"  # a paper file's stem, or a path
    stem = path.stem
    shown = path.relative_to(REPO) if path.resolve().is_relative_to(REPO) else path.name
    folder = root / sweep / "report"
    lines = [f"### `{shown}` (sweep `{sweep}`)", "",
             f"Command: `{header_command(path)}`, then `mixtrain report {sweep}`"
             + "".join(f" and `mixtrain report {sweep} --claims sweeps/paper/{e}.yaml`" for e in extra) + ".", ""]
    if not (folder / "summary.csv").exists():
        return lines + ["Not run (no report).", ""]
    summary = pd.read_csv(folder / "summary.csv")
    lines += ["| " + " | ".join(h for _, h in SUMMARY_COLS) + " |", "| --- | " + " | ".join(["---:"] * (len(SUMMARY_COLS) - 1)) + " |"]
    for _, r in summary.iterrows():
        cells = [str(r["variant"]), "full" if r["budget"] >= 1 else f"{r['budget']:g}"]
        cells += [_fmt(r[c]) for c, _ in SUMMARY_COLS[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    tables = _claims_table(pd.read_csv(folder / "claims.csv"), stem) if (folder / "claims.csv").exists() else []
    for e in extra:
        from mixtrain_trainer.config import load_yaml
        from orchestrate.report.claims import evaluate_claims, verdict_table
        from orchestrate.spec import parse_sweep

        claims = [c.model_dump() for c in parse_sweep(load_yaml(PAPER / f"{e}.yaml"), e).claims]
        table = _claims_table(verdict_table(evaluate_claims(claims, summary)), e)
        tables += table[2:] if tables else table
    return lines + tables + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("runs", nargs="+", help="STEM=SWEEP[:EXTRA_STEM,...]")
    args = p.parse_args()
    out = []
    for run in args.runs:
        stem, _, rest = run.partition("=")
        sweep, _, extra = rest.partition(":")
        out += section(args.root, stem, sweep, [e for e in extra.split(",") if e])
    print("\n".join(out))


if __name__ == "__main__":
    main()
