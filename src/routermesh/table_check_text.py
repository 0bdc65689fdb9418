"""The ``router-mesh check-table`` report as text for a terminal (``--json`` prints the
model itself)."""

from __future__ import annotations

from routermesh.table_check import EvalReport, Figures, RowResult, TableCheck


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _quoted(text: str, width: int = 70) -> str:
    return f'"{text}"' if len(text) <= width else f'"{text[: width - 3]}..."'


def report_text(check: TableCheck, limit: int = 20) -> str:
    """The report; lists of requests stop after ``limit`` lines each."""
    lines = [
        f"RouterMesh {check.mesh}: {check.routes} routes, {check.examples} examples, "
        f"{check.description_phrases} description phrases (L0: {check.encoder})",
    ]
    if check.half_in_scope_similarity is not None:
        lines.append(
            "L0 takes a message as in scope from a best similarity of about "
            f"{check.half_in_scope_similarity:.2f} to a route's examples or description "
            "(per route below; less when the message uses words of that route's own)."
        )
    lines += ["", _self_check(check, limit)]
    if check.evaluation is not None:
        lines += ["", _evaluation(check.evaluation, check.threshold, limit, head=check.head)]
    return "\n".join(lines)


def _self_check(check: TableCheck, limit: int) -> str:
    total = sum(c.examples for c in check.route_checks)
    width = max([5, *(len(c.route) for c in check.route_checks)])
    lines = [
        f"Examples routed to their own route when left out: {check.own_route} of {total}",
        f"{'route':<{width}}  examples  own route  in scope from  elsewhere",
    ]
    for c in check.route_checks:
        away: dict[str, int] = {}
        for miss in c.elsewhere:
            away[miss.chosen] = away.get(miss.chosen, 0) + 1
        where = ", ".join(f"{n} -> {route}" for route, n in sorted(away.items()))
        start = "-" if c.in_scope_from is None else f"{c.in_scope_from:.2f}"
        lines.append(
            f"{c.route:<{width}}  {c.examples:>8}  {c.own_route:>9}  {start:>13}  {where}".rstrip()
        )
    misses = [m for c in check.route_checks for m in c.elsewhere]
    if misses:
        lines += [
            "",
            "Examples L0 puts nearer another route (reword them, or make the descriptions "
            "tell the routes apart):",
        ]
        lines += [
            f"  {m.route}: {_quoted(m.text)} -> {m.chosen} "
            f"(nearest: {_quoted(m.nearest, 50)}, {m.similarity:.2f})"
            for m in misses[:limit]
        ]
        lines += _more(len(misses), limit)
    return "\n".join(lines)


def _evaluation(report: EvalReport, threshold: float, limit: int, *, head: bool) -> str:
    lines = [
        f"Labelled requests ({report.path}: {report.in_scope} in scope, "
        f"{report.out_of_scope} out of scope, {report.multi_step} multi-step), L0 alone:",
        "threshold  routed accuracy  in-scope coverage  out-of-scope escalated  "
        "multi-step escalated",
    ]
    lines += [_figures_line(f, threshold) for f in report.figures]
    whose = "the threshold of L0's trained head" if head else "the mesh's L0 threshold"
    lines.append(f"(* {whose}, {threshold:.2f})")
    missed = [r for r in report.rows if r.kind == "in_scope" and r.decided != r.expected]
    unrouted = [r for r in missed if r.reason is not None]
    wrong = [r for r in missed if r.reason is None]
    wrongly_routed = [r for r in report.rows if r.kind != "in_scope" and r.reason is None]
    sections = (
        ("In-scope requests escalated (examples in their words raise coverage)", unrouted),
        ("In-scope requests routed to another route", wrong),
        ("Out-of-scope or multi-step requests routed", wrongly_routed),
    )
    for title, rows in sections:
        if rows:
            lines += ["", f"{title}, at {threshold:.2f}:"]
            lines += [_row_line(r) for r in rows[:limit]]
            lines += _more(len(rows), limit)
    return "\n".join(lines)


def _figures_line(f: Figures, mesh_threshold: float) -> str:
    mark = " *" if f.threshold == mesh_threshold else "  "
    return (
        f"{f.threshold:<7.2f}{mark}  {_percent(f.routed_accuracy):>15}  "
        f"{_percent(f.coverage):>17}  {_percent(f.out_of_scope_escalated):>22}  "
        f"{_percent(f.multi_step_escalated):>20}"
    )


def _row_line(row: RowResult) -> str:
    why = f", {row.reason}" if row.reason else ""
    return (
        f"  {row.expected}: {_quoted(row.text)} -> {row.decided} "
        f"(L0: {row.route} {row.confidence:.2f}{why})"
    )


def _more(count: int, limit: int) -> list[str]:
    return [f"  ... {count - limit} more (--json shows every one)"] if count > limit else []
