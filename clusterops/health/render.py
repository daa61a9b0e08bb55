"""A health report as a rich table for people (JSON comes from Report.to_dict)."""

from __future__ import annotations

from clusterops.health.model import Report

COLOURS = {0: "green", 1: "yellow", 2: "red", 3: "magenta"}


def table(report: Report):
    from rich.table import Table

    t = Table(
        title=f"{report.node}: {report.verdict.label.upper()} (profile {report.profile}, {report.source})",
        title_justify="left",
    )
    t.add_column("check")
    t.add_column("verdict")
    t.add_column("seconds", justify="right")
    t.add_column("detail", overflow="fold")
    for c in report.checks:
        colour = COLOURS[int(c.verdict)]
        t.add_row(c.name, f"[{colour}]{c.verdict.label}[/]", f"{c.seconds:.3f}", c.detail)
        for f in c.findings:
            if f.text() != c.detail:
                t.add_row(
                    "", f"[{COLOURS[int(f.verdict)]}]{f.verdict.label}[/]", "", f"  {f.item}: {f.text()}"
                )
    for name in report.disabled:
        t.add_row(name, "[dim]disabled[/]", "", "")
    return t
