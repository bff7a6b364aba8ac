"""The report's `mpc` section: private inference cost and fidelity per MPC-friendly variant."""

from __future__ import annotations

import html as html_lib

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpCost(_Strict):
    rounds: int
    bytes: int
    calls: int
    seconds: float = 0.0  # wall time inside this operation type, slowest party


class Variant(_Strict):
    name: str
    attention: str | None = None
    activation: str | None = None
    clean_acc: float  # plaintext, on the audit's evaluation data
    private_acc: float  # decrypted private outputs, on the private batch
    argmax_agreement: float
    max_abs_logit_error: float | None  # None: the private outputs were not finite
    agrees: bool  # argmax_agreement >= the section's min_agreement and max_abs_logit_error < plaintext's largest |logit|
    bytes: int  # sent by all parties together
    bytes_per_party: list[int]
    rounds: int  # the most any party took
    wall_time_s: float
    compute_s: float
    modelled_latency_s: dict[str, float]
    by_op: dict[str, OpCost]


class KnobResult(_Strict):
    variant: str
    exp_iterations: int
    reciprocal_iterations: int
    precision_bits: int
    sqrt_iterations: int = 3
    argmax_agreement: float
    max_abs_logit_error: float | None  # None: the private outputs were not finite
    bytes: int
    rounds: int


class Section(_Strict):
    parties: int
    batch_size: int
    private_weights: bool
    exp_iterations: int
    reciprocal_iterations: int
    precision_bits: int
    sqrt_iterations: int = 3
    calibrated: bool = False  # public power-of-two prescales for inv_sqrt/reciprocal, calibrated on the model owner's data
    min_agreement: float
    network_profiles: dict[str, dict[str, float]]  # name -> rtt_s, bandwidth_bytes_per_s
    note: str = ("Counted traffic is the online phase only: Beaver triples come from CrypTen's trusted first party. "
                 "Measured wall time is on loopback; modelled latency = compute + rounds x RTT + bytes / bandwidth.")
    variants: list[Variant] = Field(default_factory=list)
    knobs: list[KnobResult] = Field(default_factory=list)

    def validity_warnings(self) -> list:
        from secsuite.report import ReportWarning

        return [
            ReportWarning(code="mpc_disagreement", subject=variant.name,
                          message=f"private inference of {variant.name} disagrees with plaintext: argmax agreement {variant.argmax_agreement:.1%}, "
                                  f"max logit error {_err(variant.max_abs_logit_error)}; its MPC cost is not for the same model")
            for variant in self.variants if not variant.agrees
        ]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (cost, accuracy) that no other point beats on both (lower cost, higher accuracy)."""
    return [i for i, (cost, acc) in enumerate(points)
            if not any(c <= cost and a >= acc and (c, a) != (cost, acc) for c, a in points)]


def _err(value: float | None) -> str:
    return "non-finite" if value is None else f"{value:.3g}"


def _mb(value: int) -> str:
    return f"{value / 1e6:.2f}"


def _rows(section: Section) -> list[list[str]]:
    rows = []
    for v in section.variants:
        rows.append([v.name, f"{v.clean_acc:.3f}", f"{v.private_acc:.3f}", f"{v.argmax_agreement:.3f}" + ("" if v.agrees else " (DISAGREES)"),
                     _err(v.max_abs_logit_error), _mb(v.bytes), str(v.rounds), f"{v.wall_time_s:.3f}",
                     " / ".join(f"{name} {seconds:.3f}" for name, seconds in v.modelled_latency_s.items())])
    return rows


HEADER = ["variant", "clean acc", "private acc", "agreement", "max logit err", "MB", "rounds", "wall s", "modelled s"]


def markdown(section: Section) -> str:
    lines = ["## mpc", "", f"{section.parties} parties, private batch {section.batch_size}, weights "
             f"{'secret-shared' if section.private_weights else 'public'}; exp iterations {section.exp_iterations}, "
             f"reciprocal iterations {section.reciprocal_iterations}, inv_sqrt iterations {section.sqrt_iterations}, precision bits "
             f"{section.precision_bits}; LayerNorm/reciprocal ranges {'calibrated on training data' if section.calibrated else 'not calibrated'}.", "",
             section.note, "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(section)]
    if section.knobs:
        lines += ["", "Approximation knobs:", "", "| variant | exp it | recip it | sqrt it | bits | agreement | max logit err | MB | rounds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {k.variant} | {k.exp_iterations} | {k.reciprocal_iterations} | {k.sqrt_iterations} | {k.precision_bits} | {k.argmax_agreement:.3f} | "
                  f"{_err(k.max_abs_logit_error)} | {_mb(k.bytes)} | {k.rounds} |" for k in section.knobs]
    return "\n".join(lines)


def _pareto_plot(section: Section) -> str:
    from secsuite.plots import figure_to_img, new_figure

    fig, ax = new_figure()
    points = [(v.bytes / 1e6, v.clean_acc) for v in section.variants]
    front = sorted((points[i] for i in pareto_front(points)))
    for v, (cost, acc) in zip(section.variants, points):
        ax.scatter(cost, acc, marker="o" if v.agrees else "x", color="C0" if v.agrees else "C3")
        ax.annotate(v.name, (cost, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if front:
        ax.plot(*zip(*front), color="C1", linestyle="--", label="Pareto front")
        ax.legend()
    ax.set_xscale("log")
    ax.set_xlabel("MB communicated (online, all parties)")
    ax.set_ylabel("clean accuracy")
    ax.set_title("accuracy vs MPC cost")
    return figure_to_img(fig, "accuracy vs MPC cost")


def html(section: Section) -> str:
    escape = html_lib.escape
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in _rows(section))
    parts = [f"<h2>mpc</h2><p>{escape(section.note)}</p><table><tr>{head}</tr>{body}</table>"]
    if section.variants:
        parts.append(_pareto_plot(section))
    if section.knobs:
        rows = "".join(f"<tr><td>{escape(k.variant)}</td><td>{k.exp_iterations}</td><td>{k.reciprocal_iterations}</td><td>{k.sqrt_iterations}</td><td>{k.precision_bits}</td>"
                       f"<td>{k.argmax_agreement:.3f}</td><td>{_err(k.max_abs_logit_error)}</td></tr>" for k in section.knobs)
        parts.append("<table><tr><th>variant</th><th>exp it</th><th>recip it</th><th>sqrt it</th><th>bits</th><th>agreement</th>"
                     f"<th>max logit err</th></tr>{rows}</table>")
    return "".join(parts)
