"""The report's `extraction` section: clone accuracy and agreement against queries spent, per method."""

from __future__ import annotations

import html as html_lib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurvePoint(_Strict):
    queries: int
    clone_acc: float
    agreement: float


class MethodResult(_Strict):
    method: str
    budget: int
    queries_spent: int
    clone_acc: float
    agreement: float
    curve: list[CurvePoint] = Field(default_factory=list)
    time_s: float
    params: dict[str, Any] = Field(default_factory=dict)


class Refusal(_Strict):
    method: str
    reason: str


class Section(_Strict):
    victim_acc: float
    output: str  # what the victim answers: probabilities | top-k | label
    budget: int
    student: str
    n_eval: int
    methods: list[MethodResult] = Field(default_factory=list)
    refused: list[Refusal] = Field(default_factory=list)


def markdown(section: Section) -> str:
    lines = [
        "## extraction",
        "",
        f"Victim clean accuracy {100 * section.victim_acc:.1f}% on {section.n_eval} images; it answers `{section.output}`; "
        f"query budget {section.budget}; clone architecture `{section.student}`.",
        "",
        "| method | queries spent | clone acc | agreement | time (s) |",
        "|---|---|---|---|---|",
    ]
    for m in section.methods:
        lines.append(f"| {m.method} | {m.queries_spent} | {100 * m.clone_acc:.1f}% | {100 * m.agreement:.1f}% | {m.time_s:.1f} |")
    for r in section.refused:
        lines.append(f"| {r.method} | refused | - | - | {r.reason} |")
    for m in section.methods:
        curve = ", ".join(f"{p.queries}: {100 * p.clone_acc:.1f}%" for p in m.curve)
        lines.append(f"\n{m.method} clone accuracy by queries: {curve}")
    return "\n".join(lines)


def html(section: Section) -> str:
    from secsuite.plots import line_plot

    esc = html_lib.escape
    rows = "".join(
        f"<tr><td>{esc(m.method)}</td><td>{m.queries_spent}</td><td>{100 * m.clone_acc:.1f}%</td>"
        f"<td>{100 * m.agreement:.1f}%</td><td>{m.time_s:.1f}</td></tr>" for m in section.methods
    ) + "".join(f"<tr><td>{esc(r.method)}</td><td colspan=4>refused: {esc(r.reason)}</td></tr>" for r in section.refused)
    parts = [
        "<h2>extraction</h2>",
        f"<p>Victim clean accuracy {100 * section.victim_acc:.1f}% on {section.n_eval} images; it answers "
        f"<code>{esc(section.output)}</code>; query budget {section.budget}; clone <code>{esc(section.student)}</code>.</p>",
        "<table><tr><th>method</th><th>queries spent</th><th>clone acc</th><th>agreement</th><th>time (s)</th></tr>"
        f"{rows}</table>",
    ]
    series = {m.method: ([p.queries for p in m.curve], [p.clone_acc for p in m.curve]) for m in section.methods if m.curve}
    if series:
        parts.append(line_plot(series, "victim queries", "clone accuracy", "Clone accuracy vs queries"))
    return "\n".join(parts)
