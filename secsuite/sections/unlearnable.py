"""The report's `unlearnable` section: clean test accuracy of models trained on clean vs protected data."""

from __future__ import annotations

import html as html_lib

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Row(_Strict):
    training_set: str  # "clean" or "protected"
    mix: float  # fraction of the training set protected (0 for clean)
    regime: str  # "erm" or "pgd-at linf eps=..."
    clean_test_acc: float
    drop: float  # clean-trained accuracy minus this row's, same regime (0 for clean rows)


class Section(_Strict):
    method: str = "cuda"
    key: int
    blur: float
    kernel_size: int
    arch: str
    epochs: int
    n_train: int
    n_test: int
    dataset: str | None = None  # where the protected set was written (a load_dataset source)
    rows: list[Row] = Field(default_factory=list)


def _regimes(section: Section) -> list[str]:
    return list(dict.fromkeys(r.regime for r in section.rows))


def markdown(section: Section) -> str:
    lines = [
        "## unlearnable",
        "",
        f"{section.method.upper()} (key {section.key}, blur {section.blur:g}, kernel {section.kernel_size}); "
        f"`{section.arch}` trained {section.epochs} epochs on {section.n_train} images, tested on {section.n_test} clean images.",
    ]
    if section.dataset:
        lines.append(f"Protected training set written to `{section.dataset}`.")
    lines += ["", "| training set | mix | regime | clean test acc | drop (points) |", "|---|---|---|---|---|"]
    for r in section.rows:
        lines.append(f"| {r.training_set} | {r.mix:g} | {r.regime} | {100 * r.clean_test_acc:.1f}% | {100 * r.drop:.1f} |")
    return "\n".join(lines)


def html(section: Section) -> str:
    from secsuite.plots import line_plot

    esc = html_lib.escape
    rows = "".join(
        f"<tr><td>{esc(r.training_set)}</td><td>{r.mix:g}</td><td>{esc(r.regime)}</td>"
        f"<td>{100 * r.clean_test_acc:.1f}%</td><td>{100 * r.drop:.1f}</td></tr>" for r in section.rows
    )
    parts = [
        "<h2>unlearnable</h2>",
        f"<p>{esc(section.method.upper())} (key {section.key}, blur {section.blur:g}, kernel {section.kernel_size}); "
        f"<code>{esc(section.arch)}</code> trained {section.epochs} epochs on {section.n_train} images, "
        f"tested on {section.n_test} clean images.</p>",
        "<table><tr><th>training set</th><th>mix</th><th>regime</th><th>clean test acc</th><th>drop (points)</th></tr>"
        f"{rows}</table>",
    ]
    series = {}
    for regime in _regimes(section):
        points = sorted((r.mix, r.clean_test_acc) for r in section.rows if r.regime == regime)
        series[regime] = ([p[0] for p in points], [p[1] for p in points])
    if any(len(xs) > 1 for xs, _ in series.values()):
        parts.append(line_plot(series, "protected fraction (mix)", "clean test accuracy", "Accuracy when trained on protected data"))
    return "\n".join(parts)
