"""The paper's claims as checks over a sweep's summary (CONTRACT.md, "Additions": ``claims:``).

A check is an expression over references ``<label>.<column>``:

    mixtrain-cutmix.speedup >= 1.5 and mixtrain-cutmix.top1 >= baseline.top1 - 0.5
    mixtrain-cutmix{model=resnet34}.delta_top1 > 0          # qualifiers pick one group of a larger grid
    baseline{budget=0.5}.top1 < baseline.top1               # the budget baselines: budget=<fraction>
    abs(mixtrain-cutmix{k=2}.top1 - mixtrain-cutmix{k=1}.top1) < 0.5

- ``<label>``: a variant label as the sweep names it (``mixtrain-cutmix``, an entry's ``label``, or its
  display ``name[key=value]``); ``{key=value, ...}`` selects by the other labels of a group: ``model``,
  ``budget`` and any grid axis but the seed (seeds are averaged).
- An axis with several values that a reference leaves unqualified makes the check a claim **for every**
  value of it: ``mixtrain-cutmix.delta_top1 >= 0`` in a sweep over two models is checked per model, all
  references bound to the same model, and holds only if it holds for both (one failing instance fails
  it; otherwise an unknown one leaves it not measured). So a sweep file shrunk to one model on the
  command line (``--set grid.model=[resnet8]``) keeps its claims.
- ``<column>``: a numeric column of the summary (``CLAIM_COLUMNS``: ``top1``, ``delta_top1``, ``speedup``,
  ``inputs_ratio``, ``iso_time_gain``, ``early_term_speedup``, ``frac_mixed_mean``, the per-sample
  statistics ``lmid_correct_below`` ...). Accuracies and shares are percentages.
- Numbers, ``+ - * /``, comparisons (chains too: ``1.5 <= a.speedup <= 2``), ``and`` / ``or`` / ``not``,
  parentheses and the functions ``abs``, ``min``, ``max``.

No user string is run as Python: the references are cut out by a tokenizer, the remaining expression is
parsed with ``ast`` and evaluated by walking a whitelist of node types. Evaluation is three-valued: a
reference whose group did not finish (or whose value is blank) is *unknown*, and unknown propagates
(Kleene logic: ``False and unknown`` is False, ``True or unknown`` is True). Verdicts: ``holds`` (True),
``fails`` (False), ``not measured`` (unknown).
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from mixtrain_trainer.errors import ConfigError
from orchestrate.report.samples import STAT_COLUMNS

__all__ = ["CLAIM_COLUMNS", "FAILS", "HOLDS", "NOT_MEASURED", "Check", "Ref", "Verdict", "check_references",
           "evaluate_claims", "instances", "parse_check", "resolve_groups", "verdict_table"]

HOLDS, FAILS, NOT_MEASURED = "holds", "fails", "not measured"

#: the summary columns a check may read
CLAIM_COLUMNS = (
    "top1", "top1_std", "top5", "delta_top1", "wall_seconds", "speedup", "n_inputs", "n_forward", "inputs_ratio",
    "inputs_speedup", "iso_time_gain", "early_term_epoch", "early_term_speedup", "early_term_inputs_speedup",
    "frac_mixed_final", "frac_mixed_mean",
    "peak_gpu_mem_mb", "peak_rss_mb", "epochs", "n_seeds", *STAT_COLUMNS,
)
_FUNCTIONS = {"abs": abs, "min": min, "max": max}
_KEYWORDS = {"and", "or", "not", *_FUNCTIONS}
# a reference: label (letters, digits, '-', '_', an optional [..] override part), {qualifiers}, .column
_REF = re.compile(r"(?P<label>[A-Za-z_][A-Za-z0-9_\-]*(?:\[[^\]\[{}]*\])?)\s*(?P<qual>\{[^{}]*\})?"
                  r"\.(?P<column>[A-Za-z_][A-Za-z0-9_]*)")
_TOKEN = re.compile(r"\s+|(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
                    r"|(?P<op><=|>=|==|!=|[-+*/(),<>])")
_WORD = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Ref:
    """One ``label{qualifiers}.column`` of a check."""
    label: str
    qualifiers: tuple[tuple[str, str], ...]
    column: str

    def __str__(self) -> str:
        qual = "{" + ", ".join(f"{k}={v}" for k, v in self.qualifiers) + "}" if self.qualifiers else ""
        return f"{self.label}{qual}.{self.column}"


@dataclass
class Check:
    """A parsed check: ``tree`` refers to ``refs[i]`` as the name ``_ref<i>``."""
    source: str
    tree: ast.Expression
    refs: list[Ref]


class _Malformed(ValueError):
    pass


def _qualifiers(text: str | None, check: str) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    out = []
    for part in text.strip("{}").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise _Malformed(f"qualifier {part.strip()!r} in {check!r} is not key=value, e.g. {{model=resnet18}}")
        out.append((key.strip(), value.strip()))
    return tuple(sorted(out))


def _tokenize(check: str) -> tuple[str, list[Ref]]:
    """The check with each reference replaced by ``_ref<i>`` (a Python-syntax expression), the refs."""
    out, refs, i = [], [], 0
    while i < len(check):
        m = _REF.match(check, i)
        if m and not (m.group("label") in _KEYWORDS and not m.group("qual")):
            ref = Ref(m.group("label"), _qualifiers(m.group("qual"), check), m.group("column"))
            refs.append(ref)
            out.append(f" _ref{len(refs) - 1} ")
            i = m.end()
            continue
        w = _WORD.match(check, i)
        if w:
            if w.group() not in _KEYWORDS:
                raise _Malformed(f"{w.group()!r} in {check!r} is not a reference: write <label>.<column>, e.g. "
                                 "baseline.top1")
            out.append(f" {w.group()} ")
            i = w.end()
            continue
        t = _TOKEN.match(check, i)
        if not t or t.end() == i:
            raise _Malformed(f"unexpected {check[i]!r} at position {i} of {check!r}")
        out.append(t.group())
        i = t.end()
    return "".join(out), refs


_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
          ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Compare, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq,
          ast.Constant, ast.Name, ast.Load, ast.Call)


def parse_check(check: str) -> Check:
    """Parse a check; a malformed one raises ``ValueError`` with one line saying what is wrong."""
    if not isinstance(check, str) or not check.strip():
        raise _Malformed("a check must be a non-empty expression, e.g. 'mixtrain-cutmix.top1 >= baseline.top1'")
    expr, refs = _tokenize(check)
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise _Malformed(f"{check!r} is not a well-formed expression (references, numbers, + - * /, "
                         "comparisons, and/or/not, parentheses, abs/min/max)") from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise _Malformed(f"{check!r}: {type(node).__name__} is not allowed in a check")
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or
                                               not isinstance(node.value, (int, float))):
            raise _Malformed(f"{check!r}: only numbers may appear as constants")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS
                                           or node.keywords or not node.args):
            raise _Malformed(f"{check!r}: only abs(x), min(x, ...), max(x, ...) may be called")
        if isinstance(node, ast.Name) and not (node.id in _FUNCTIONS or re.fullmatch(r"_ref\d+", node.id)):
            raise _Malformed(f"{check!r}: unknown name {node.id!r}")
    if not refs:
        raise _Malformed(f"{check!r} reads no summary value; write <label>.<column>, e.g. baseline.top1")
    return Check(check, tree, refs)


# ---------------------------------------------------------------- which group a reference names


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def resolve_groups(ref: Ref, groups: list[Mapping], binding: Mapping | None = None) -> list[int]:
    """Indices of the groups (dicts of labels: variant, model, budget, grid axes) ``ref`` names. The
    ``binding`` (axis -> value, from ``instances``) applies to the axes ``ref`` does not qualify itself; a
    group without a value for a bound axis (it does not vary along it) matches any value."""
    quals = dict(ref.qualifiers)
    budget = quals.pop("budget", 1.0)
    implicit = {k: v for k, v in (binding or {}).items() if k not in quals}
    found = []
    for i, g in enumerate(groups):
        if str(g.get("variant")) != ref.label or not _same(g.get("budget", 1.0), budget):
            continue
        if not all(k in g and _same(g[k], v) for k, v in quals.items()):
            continue
        if all(_blank(g.get(k)) or _same(g[k], v) for k, v in implicit.items()):
            found.append(i)
    return found


def _blank(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def instances(check: Check, groups: list[Mapping], axes: Iterable[str]) -> list[dict]:
    """A check is a claim *for every* value of an axis (``model`` or a grid axis) that some reference
    leaves unqualified and that takes several values in the sweep: one binding (axis -> value) per
    combination of such values, ``[{}]`` when there is none."""
    free = []
    for axis in ("model", *axes):
        if all(axis in dict(r.qualifiers) for r in check.refs):
            continue
        values = list(dict.fromkeys(g[axis] for g in groups if axis in g and not _blank(g[axis])))
        if len(values) > 1:
            free.append((axis, values))
    return [dict(zip([a for a, _ in free], combo)) for combo in itertools.product(*(v for _, v in free))]


def _bound(ref: Ref, binding: Mapping) -> Ref:
    quals = dict(ref.qualifiers)
    quals.update({k: str(v) for k, v in binding.items() if k not in quals})
    return Ref(ref.label, tuple(sorted(quals.items())), ref.column)


def _describe(g: Mapping, axes: Iterable[str]) -> str:
    quals = [f"{a}={g[a]}" for a in axes if a in g and not _blank(g[a])]
    if g.get("budget", 1.0) not in (1, 1.0, None):
        quals.append(f"budget={g['budget']:g}")
    return str(g.get("variant")) + ("{" + ", ".join(quals) + "}" if quals else "")


def check_references(check: Check, groups: list[Mapping], axes: Iterable[str]) -> None:
    """Every reference names a known column and, for every binding of ``instances``, exactly one group;
    else ``ValueError`` (one line)."""
    axes = list(axes)
    known = sorted({_describe(g, ["model", *axes]) for g in groups})
    labels = sorted({str(g.get("variant")) for g in groups})
    for ref in check.refs:
        if ref.column not in CLAIM_COLUMNS:
            raise _Malformed(f"unknown column {ref.column!r} in {str(ref)!r}; columns: {', '.join(CLAIM_COLUMNS)}")
        bad = [k for k, _ in ref.qualifiers if k not in ("model", "budget", *axes)]
        if bad:
            raise _Malformed(f"unknown qualifier {bad[0]!r} in {str(ref)!r}; qualify by model, budget"
                             + "".join(f", {a}" for a in axes))
        if ref.label not in labels:
            raise _Malformed(f"unknown label {ref.label!r} in {str(ref)!r}; labels: {', '.join(labels)}")
    for binding in instances(check, groups, axes):
        for ref in check.refs:
            found = resolve_groups(ref, groups, binding)
            if not found:
                raise _Malformed(f"{str(_bound(ref, binding))!r} names no group of this sweep; groups: "
                                 f"{', '.join(known)}")
            if len(found) > 1:
                options = ", ".join(_describe(groups[i], ["model", *axes]) for i in found)
                raise _Malformed(f"{str(_bound(ref, binding))!r} names {len(found)} groups ({options}); qualify it")


# ---------------------------------------------------------------- three-valued evaluation

_UNKNOWN = None  # the third truth value and the unknown number alike


def _eval(node, values: list):
    if isinstance(node, ast.Expression):
        return _eval(node.body, values)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return values[int(node.id[4:])]
    if isinstance(node, ast.UnaryOp):
        x = _eval(node.operand, values)
        if x is _UNKNOWN:
            return _UNKNOWN
        return (not x) if isinstance(node.op, ast.Not) else (-x if isinstance(node.op, ast.USub) else +x)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, values), _eval(node.right, values)
        if a is _UNKNOWN or b is _UNKNOWN:
            return _UNKNOWN
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        return a / b if b != 0 else _UNKNOWN
    if isinstance(node, ast.BoolOp):  # Kleene: a definite False (and) / True (or) decides
        results = [_eval(v, values) for v in node.values]
        decisive = isinstance(node.op, ast.Or)
        if any(r is not _UNKNOWN and bool(r) == decisive for r in results):
            return decisive
        return _UNKNOWN if any(r is _UNKNOWN for r in results) else (not decisive)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        result = True
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, values)
            if left is _UNKNOWN or right is _UNKNOWN:
                result = _UNKNOWN if result is not False else False
            else:
                ok = {ast.Lt: left < right, ast.LtE: left <= right, ast.Gt: left > right, ast.GtE: left >= right,
                      ast.Eq: left == right, ast.NotEq: left != right}[type(op)]
                if not ok:
                    return False
            left = right
        return result
    if isinstance(node, ast.Call):
        args = [_eval(a, values) for a in node.args]
        if any(a is _UNKNOWN for a in args):
            return _UNKNOWN
        return float(_FUNCTIONS[node.func.id](*args))
    raise _Malformed(f"{type(node).__name__} is not allowed in a check")  # parse_check keeps these out


# ---------------------------------------------------------------- claims on a summary


@dataclass
class Verdict:
    id: str
    text: str
    check: str
    verdict: str  # HOLDS / FAILS / NOT_MEASURED
    values: dict[str, float | None] = field(default_factory=dict)  # reference -> measured value
    reason: str = ""  # why not measured

    @property
    def measured(self) -> str:
        return "; ".join(f"{k} = {'—' if v is None else f'{v:.4g}'}" for k, v in self.values.items())


def _groups_of(summary: pd.DataFrame) -> tuple[list[dict], list[str]]:
    from orchestrate.report.summary import SUMMARY_COLUMNS

    axes = [c for c in summary.columns if c not in SUMMARY_COLUMNS and c not in STAT_COLUMNS]
    groups = [{"variant": r["variant"], "model": r["model"], "budget": r["budget"], **{a: r[a] for a in axes}}
              for _, r in summary.iterrows()]
    return groups, axes


def evaluate_claims(claims: Iterable, summary: pd.DataFrame) -> list[Verdict]:
    """Each claim (``{id, text, check}`` dicts or objects with those attributes) checked on ``summary``
    (``summarize``'s table). A malformed check raises ``ConfigError``; a reference to a group that did not
    finish, or to no group of the results at all, makes the claim ``not measured`` unless the rest of the
    check decides it."""
    groups, axes = _groups_of(summary)
    verdicts = []
    for claim in claims:
        get = claim.get if isinstance(claim, Mapping) else lambda k, c=claim: getattr(c, k)
        cid, text, source = str(get("id")), str(get("text") or ""), str(get("check"))
        try:
            check = parse_check(source)
            for ref in check.refs:
                if ref.column not in CLAIM_COLUMNS:
                    raise _Malformed(f"unknown column {ref.column!r} in {str(ref)!r}")
        except ValueError as err:
            raise ConfigError(f"claim {cid!r}: {err}") from None
        results, measured, reasons = [], {}, []
        for binding in instances(check, groups, axes):
            values = []
            for ref in check.refs:
                bound = str(_bound(ref, binding))
                found = resolve_groups(ref, groups, binding)
                value = None
                if len(found) == 1:
                    raw = summary.iloc[found[0]][ref.column] if ref.column in summary.columns else None
                    value = None if _blank(raw) else float(raw)
                    if value is None:
                        reasons.append(f"{bound}: no value (no finished trial, or not recorded)")
                elif not found:
                    reasons.append(f"{bound}: no such group in the results")
                else:
                    reasons.append(f"{bound}: names {len(found)} groups; qualify it")
                values.append(value)
                measured[bound] = value
            results.append(_eval(check.tree, values))
        # every instance must hold (Kleene conjunction)
        if any(r is not _UNKNOWN and not r for r in results):
            verdict = FAILS
        elif any(r is _UNKNOWN for r in results):
            verdict = NOT_MEASURED
        else:
            verdict = HOLDS
        verdicts.append(Verdict(cid, text, source, verdict, measured,
                                "; ".join(dict.fromkeys(reasons)) if verdict == NOT_MEASURED else ""))
    return verdicts


def verdict_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """claims.csv: one row per claim."""
    return pd.DataFrame(
        [{"id": v.id, "verdict": v.verdict, "check": v.check, "measured": v.measured, "reason": v.reason,
          "text": v.text} for v in verdicts],
        columns=["id", "verdict", "check", "measured", "reason", "text"])
