"""The unified robustness report: a pydantic model (JSON is the source of truth), rendered to Markdown and HTML.

Field names follow RobustBench where they overlap (`clean_acc`, `eps`, `number_forward_passes`).
Sections that were not run are None and are omitted from every rendering.
"""

from __future__ import annotations

import html as html_lib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from secsuite.files import replace_file_set
from secsuite.sections import backdoor as backdoor_section
from secsuite.sections import certified as certified_section
from secsuite.sections import extraction as extraction_section
from secsuite.sections import mpc as mpc_section
from secsuite.sections import unlearnable as unlearnable_section
from secsuite.threat import ThreatModel

SCHEMA_VERSION = "1.0.0"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportWarning(_Section):
    # zero_gradients | not_monotone | probability_outputs | weaker_than_weaker_attack | chance_level | other_norm_attack
    # | clean_accuracy_drop | flat_sweep | limit_exceeds_split | ...
    code: str
    message: str
    subject: str | None = None  # the model (or defended model) the warning is about


class Meta(_Section):
    schema_version: str = SCHEMA_VERSION
    versions: dict[str, str] = Field(default_factory=dict)
    seed: int = 0
    config_hash: str | None = None
    git_revision: str | None = None
    device: str = "cpu"
    started_at: str | None = None
    wall_time_s: float = 0.0
    section_time_s: dict[str, float] = Field(default_factory=dict)


class ModelInfo(_Section):
    source: str
    num_classes: int
    input_shape: list[int]
    parameters: int
    weights: str | None = None
    trained_here: bool = False
    train_epochs: int = 0


class DataInfo(_Section):
    source: str
    n_train: int
    n_eval: int
    n_test: int | None = Field(None, description="size of the test split the evaluation examples were drawn from")
    limit: int | None = Field(None, description="data.limit: a seeded, class-stratified subset of the test split of this size")
    class_counts: list[int] | None = Field(None, description="evaluation examples per class (index = label)")


class CleanSection(_Section):
    clean_acc: float
    n_examples: int
    chance_acc: float | None = Field(None, description="accuracy of always answering the most common class of these examples")
    zero_gradient_fraction: float = Field(description="share of examples whose input gradient of the loss is (numerically) zero")
    non_finite_gradient_fraction: float = Field(0.0, description="share of examples whose input gradient of the loss has NaN or infinite entries")
    outputs_look_like_probabilities: bool


class EpsResult(_Section):
    eps: float
    robust_acc: float
    success_rate: float = Field(description="share of clean-correct examples the attack flipped")
    median_norm: float | None = Field(None, description="median perturbation norm (threat norm) over successful examples")
    number_forward_passes: int = 0
    number_backward_passes: int = 0
    time_s: float = 0.0


class AttackEntry(_Section):
    name: str
    norm: str
    attack_norm: str | None = Field(None, description="the norm the attack searches in (results are scored in `norm`, the threat's)")
    in_worst_case: bool = Field(True, description="False for an attack of another norm than the threat's: shown, not counted")
    minimum_norm: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    unbounded_success_rate: float | None = Field(None, description="minimum-norm attacks: success with no eps limit")
    results: list[EpsResult]


class WorstCaseEntry(_Section):
    eps: float
    robust_acc: float
    broken_by: dict[str, int] = Field(default_factory=dict, description="examples first broken by each attack, in cascade order")


class EpsDelta(_Section):
    eps: float
    robust_acc_delta: float


class DefenseEntry(_Section):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    clean_acc: float
    clean_acc_delta: float
    attacks: list[AttackEntry]
    worst_case: list[WorstCaseEntry]
    worst_case_delta: list[EpsDelta]
    training_time_s: float
    training_epochs: int = 0
    checkpoint: str | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="defense-specific results (e.g. RiFT's MRC table)")


class Report(_Section):
    meta: Meta = Field(default_factory=Meta)
    model: ModelInfo
    data: DataInfo
    threat: ThreatModel
    clean: CleanSection
    attacks: list[AttackEntry] = Field(default_factory=list)
    worst_case: list[WorstCaseEntry] = Field(default_factory=list)
    certified: certified_section.Section | None = None
    defenses: list[DefenseEntry] | None = None
    backdoor: backdoor_section.Section | None = None
    extraction: extraction_section.Section | None = None
    unlearnable: unlearnable_section.Section | None = None
    mpc: mpc_section.Section | None = None
    warnings: list[ReportWarning] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.model_validate_json(text)

    def robust_acc(self, attack: str, eps: float) -> float:
        for entry in self.attacks:
            if entry.name == attack:
                for result in entry.results:
                    if abs(result.eps - eps) < 1e-12:
                        return result.robust_acc
        raise KeyError(f"no result for attack {attack!r} at eps {eps}")


EXTENSION_SECTIONS = {
    "certified": certified_section, "backdoor": backdoor_section, "extraction": extraction_section,
    "unlearnable": unlearnable_section, "mpc": mpc_section,
}


def json_schema() -> dict[str, Any]:
    schema = Report.model_json_schema()
    schema["$id"] = f"urn:secsuite:report-schema:{SCHEMA_VERSION}"
    schema["title"] = f"secsuite report {SCHEMA_VERSION}"
    return schema


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _attack_rows(entries: list[AttackEntry], worst: list[WorstCaseEntry]) -> tuple[list[str], list[list[str]]]:
    eps_values = sorted({r.eps for e in entries for r in e.results} | {w.eps for w in worst})
    header = ["attack"] + [f"eps={_num(e)}" for e in eps_values]
    rows = []
    for entry in entries:
        by_eps = {r.eps: r.robust_acc for r in entry.results}
        label = entry.name if entry.in_worst_case else f"{entry.name} ({entry.attack_norm}, not in worst case)"
        rows.append([label] + [_pct(by_eps.get(e)) for e in eps_values])
    if worst:
        by_eps = {w.eps: w.robust_acc for w in worst}
        rows.append(["**worst case**"] + [_pct(by_eps.get(e)) for e in eps_values])
    return header, rows


def _data_line(data: DataInfo) -> str:
    drawn = (f"a seeded, class-stratified subset of the {data.n_test} test examples (limit {data.limit})"
             if data.n_test is not None and data.n_eval < data.n_test else "all test examples")
    return f"Evaluation examples: {drawn}; per class: {data.class_counts}."


def to_markdown(report: Report) -> str:
    meta = report.meta
    lines = [
        "# secsuite robustness report", "",
        f"Model `{report.model.source}` ({report.model.parameters:,} parameters), data `{report.data.source}` "
        f"({report.data.n_eval} evaluation examples), threat {report.threat.norm} eps {report.threat.eps}, seed {meta.seed}.", "",
    ] + ([_data_line(report.data), ""] if report.data.class_counts is not None else []) + [
        f"**Clean accuracy: {_pct(report.clean.clean_acc)}**", "",
    ]
    if report.warnings:
        lines += ["## Warnings", ""] + [f"- **{w.code}**{f' ({w.subject})' if w.subject else ''}: {w.message}" for w in report.warnings] + [""]
    if report.attacks:
        header, rows = _attack_rows(report.attacks, report.worst_case)
        lines += ["## Robust accuracy", ""] + _table(header, rows) + [""]
        detail = []
        for entry in report.attacks:
            for r in entry.results:
                detail.append([entry.name, _num(r.eps), _pct(r.robust_acc), _pct(r.success_rate), _num(r.median_norm),
                               str(r.number_forward_passes), str(r.number_backward_passes), f"{r.time_s:.2f}"])
        lines += ["### Attack details", ""] + _table(
            ["attack", "eps", "robust acc", "success", "median norm", "forward", "backward", "time (s)"], detail) + [""]
    if report.defenses:
        lines += ["## Defenses", ""]
        rows = [["undefended", _pct(report.clean.clean_acc), "-"] + [_pct(w.robust_acc) for w in report.worst_case] + ["-"]]
        for d in report.defenses:
            rows.append([d.name, _pct(d.clean_acc), f"{100 * d.clean_acc_delta:+.1f}"] + [_pct(w.robust_acc) for w in d.worst_case] + [f"{d.training_time_s:.1f}"])
        lines += _table(["model", "clean acc", "Δ clean (pts)"] + [f"worst eps={_num(w.eps)}" for w in report.worst_case] + ["training (s)"], rows) + [""]
        for d in report.defenses:
            header, drows = _attack_rows(d.attacks, d.worst_case)
            lines += [f"### {d.name}", "", f"Parameters: `{json.dumps(d.params)}`; checkpoint: `{d.checkpoint}`", ""] + _table(header, drows) + [""]
            if "markdown" in d.details:
                lines += [d.details["markdown"], ""]
    for name, module in EXTENSION_SECTIONS.items():
        section = getattr(report, name)
        if section is not None:
            lines += [module.markdown(section), ""]
    lines += ["## Meta", "", f"- schema {meta.schema_version}, config hash `{meta.config_hash}`, git `{meta.git_revision}`, device {meta.device}",
              f"- wall time {meta.wall_time_s:.1f} s; " + ", ".join(f"{k} {v:.1f} s" for k, v in meta.section_time_s.items()),
              "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta.versions.items())), ""]
    return "\n".join(lines)


def _robust_plot(report: Report) -> str:
    from secsuite.plots import line_plot

    series = {e.name: ([r.eps for r in e.results], [r.robust_acc for r in e.results]) for e in report.attacks}
    if report.worst_case:
        series["worst case"] = ([w.eps for w in report.worst_case], [w.robust_acc for w in report.worst_case])
    for d in report.defenses or []:
        series[f"{d.name} (worst case)"] = ([w.eps for w in d.worst_case], [w.robust_acc for w in d.worst_case])
    return line_plot(series, f"eps ({report.threat.norm})", "robust accuracy", "Robust accuracy versus eps")


def _markdown_table_to_html(lines: list[str]) -> str:
    header, *rows = [line for i, line in enumerate(lines) if i != 1]
    cells = lambda line: [html_lib.escape(c.strip().strip("*")) for c in line.strip("|").split("|")]  # noqa: E731
    out = ["<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in cells(header)) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in cells(row)) + "</tr>" for row in rows]
    return "\n".join(out + ["</tbody></table>"])


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.warn{background:#fff4e5;border-left:4px solid #f90;padding:6px 10px}
img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}"""


def to_html(report: Report, defense_html: bool = True) -> str:
    """A self-contained page: inline CSS, plots as data: URIs, no external URL.

    Every string from the report is escaped. The one exception, a defense's own HTML rendering, is
    left out with `defense_html=False` (a report read from a file, which anyone may have written):
    its Markdown text is shown instead, escaped.
    """
    esc = html_lib.escape
    parts = [f"<h1>secsuite robustness report</h1><p>Model <code>{esc(report.model.source)}</code>, data <code>{esc(report.data.source)}</code> "
             f"({report.data.n_eval} examples), threat {esc(report.threat.norm)} eps {esc(str(report.threat.eps))}, seed {report.meta.seed}.</p>",
             f"<p>{esc(_data_line(report.data))}</p>" if report.data.class_counts is not None else "",
             f"<p><b>Clean accuracy: {_pct(report.clean.clean_acc)}</b></p>"]
    if report.warnings:
        parts.append("<h2>Warnings</h2>" + "".join(f'<p class="warn"><b>{esc(w.code)}</b>{esc(f" ({w.subject})" if w.subject else "")}: {esc(w.message)}</p>' for w in report.warnings))
    if report.attacks:
        header, rows = _attack_rows(report.attacks, report.worst_case)
        parts += ["<h2>Robust accuracy</h2>", _robust_plot(report), _markdown_table_to_html(_table(header, rows))]
    if report.defenses:
        parts.append("<h2>Defenses</h2>")
        for d in report.defenses:
            header, rows = _attack_rows(d.attacks, d.worst_case)
            parts += [f"<h3>{esc(d.name)}</h3><p>clean accuracy {_pct(d.clean_acc)} ({100 * d.clean_acc_delta:+.1f} points), training {d.training_time_s:.1f} s</p>",
                      _markdown_table_to_html(_table(header, rows)),
                      d.details.get("html", "") if defense_html else f"<pre>{esc(str(d.details.get('markdown', '')))}</pre>"]
    for name, module in EXTENSION_SECTIONS.items():
        section = getattr(report, name)
        if section is not None:
            parts.append(module.html(section))
    meta = report.meta
    parts.append(f"<h2>Meta</h2><p>schema {esc(meta.schema_version)}, config hash <code>{esc(str(meta.config_hash))}</code>, git <code>{esc(str(meta.git_revision))}</code>, "
                 f"device {esc(meta.device)}, wall time {meta.wall_time_s:.1f} s</p><p>{esc(', '.join(f'{k} {v}' for k, v in sorted(meta.versions.items())))}</p>")
    body = "\n".join(parts)
    return f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>secsuite report</title><style>{HTML_STYLE}</style></head><body>{body}</body></html>"


RENDERERS = {"json": Report.to_json, "md": to_markdown, "html": to_html}
SUFFIXES = {"json": "report.json", "md": "report.md", "html": "report.html"}


def write_report(report: Report, out_dir: str | Path, formats: list[str] = ("json", "md", "html")) -> list[Path]:
    """Render every format first, then swap the whole set into `out_dir` at once: a reader, a kill or a
    full disk leaves the previous report set or this one, never json from one run and html from another."""
    return replace_file_set(out_dir, {SUFFIXES[fmt]: RENDERERS[fmt](report) for fmt in formats})
