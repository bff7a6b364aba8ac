"""The report's `certified` section: verified accuracy per eps and method (auto_LiRPA), next to empirical robust accuracy.

A sound certificate can never beat an attack: verified accuracy above empirical robust accuracy on the same
examples means a broken certifier or a broken attack, and is reported as a validity warning.
"""

from __future__ import annotations

import html as html_lib

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VerifiedPoint(_Strict):
    eps: float
    verified_acc: float
    time_per_example_s: float
    # Examples this method verified that an attack nevertheless broke (must be 0 for a sound certifier).
    verified_but_broken: int | None = None


class MethodCurve(_Strict):
    method: str
    results: list[VerifiedPoint]


class EmpiricalCurve(_Strict):
    name: str = Field(description="attack name, or 'worst case' for the pointwise minimum over attacks")
    eps: list[float]
    robust_acc: list[float]


class Section(_Strict):
    norm: str
    n_examples: int
    clean_acc: float
    methods: list[MethodCurve]
    empirical: list[EmpiricalCurve] = Field(default_factory=list)
    # Empirical robust accuracy on exactly the certified examples (worst case over the audit's attacks), per eps.
    empirical_on_subset: dict[str, float] = Field(default_factory=dict)
    note: str = ("bounds from auto_LiRPA 0.3; Linf balls are intersected with [0,1]; an example is verified when every "
                 "lower bound of f_true - f_other is > 0")

    def validity_warnings(self) -> list:
        from secsuite.report import ReportWarning

        warnings = []
        for curve in self.methods:
            for point in curve.results:
                empirical = self.empirical_on_subset.get(f"{point.eps:g}")
                if point.verified_but_broken:
                    warnings.append(ReportWarning(code="verified_but_broken", subject="model", message=(
                        f"{curve.method} verified {point.verified_but_broken} example(s) at eps {point.eps:g} that an attack broke: "
                        "the certificate or the attack is wrong")))
                elif empirical is not None and point.verified_acc > empirical:
                    warnings.append(ReportWarning(code="verified_above_empirical", subject="model", message=(
                        f"{curve.method} verified accuracy {100 * point.verified_acc:.1f}% exceeds empirical robust accuracy "
                        f"{100 * empirical:.1f}% at eps {point.eps:g}: the certificate or the attack is wrong")))
        return warnings


def _rows(section: Section) -> list[tuple[str, float, float, float]]:
    return [(curve.method, p.eps, p.verified_acc, p.time_per_example_s) for curve in section.methods for p in curve.results]


def markdown(section: Section) -> str:
    lines = ["## certified", "",
             f"{section.n_examples} examples, norm {section.norm}, clean accuracy {100 * section.clean_acc:.1f}%. {section.note}.", "",
             "| method | eps | verified acc | empirical robust acc (same examples) | time / example (ms) |", "|---|---|---|---|---|"]
    for method, eps, acc, seconds in _rows(section):
        empirical = section.empirical_on_subset.get(f"{eps:g}")
        shown = f"{100 * empirical:.1f}%" if empirical is not None else "n/a"
        lines.append(f"| {method} | {eps:g} | {100 * acc:.1f}% | {shown} | {1000 * seconds:.2f} |")
    return "\n".join(lines)


def plot(section: Section) -> str:
    """Certified (solid) and empirical (dashed) accuracy vs eps; the gap between the best certificate and the worst case shaded."""
    from secsuite.plots import figure_to_img, new_figure

    fig, ax = new_figure()
    for curve in section.methods:
        ax.plot([p.eps for p in curve.results], [p.verified_acc for p in curve.results], marker="o", label=f"verified ({curve.method})")
    for curve in section.empirical:
        ax.plot(curve.eps, curve.robust_acc, marker="s", linestyle="--", label=f"empirical ({curve.name})")
    worst = next((c for c in section.empirical if c.name == "worst case"), section.empirical[0] if section.empirical else None)
    if worst is not None and section.methods:
        best = {eps: max(p.verified_acc for c in section.methods for p in c.results if p.eps == eps)
                for eps in worst.eps if any(p.eps == eps for c in section.methods for p in c.results)}
        eps = sorted(best)
        empirical = dict(zip(worst.eps, worst.robust_acc))
        ax.fill_between(eps, [best[e] for e in eps], [empirical[e] for e in eps], alpha=0.2, color="grey", label="gap")
    ax.set_xlabel(f"eps ({section.norm})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("certified vs empirical robust accuracy")
    ax.legend(fontsize=7)
    return figure_to_img(fig, "certified vs empirical robust accuracy")


def html(section: Section) -> str:
    rows = "".join(
        f"<tr><td>{html_lib.escape(method)}</td><td>{eps:g}</td><td>{100 * acc:.1f}%</td><td>{1000 * seconds:.2f}</td></tr>"
        for method, eps, acc, seconds in _rows(section))
    return (f"<h2>certified</h2><p>{section.n_examples} examples, norm {html_lib.escape(section.norm)}, clean accuracy "
            f"{100 * section.clean_acc:.1f}%. {html_lib.escape(section.note)}.</p>"
            "<table><tr><th>method</th><th>eps</th><th>verified acc</th><th>time / example (ms)</th></tr>"
            f"{rows}</table>{plot(section)}")
