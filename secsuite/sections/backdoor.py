"""The report's `backdoor` section (EBYD): does the model look backdoored, which label, the recovered trigger,
the class-collapse curve during Clean Unlearning, and CA/ASR before and after removal with DER."""

from __future__ import annotations

import html as html_lib

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Curve(_Strict):
    steps: list[int]
    clean_acc: list[float]  # on the defender's clean set
    top_fraction: list[float]  # fraction of clean predictions on the most-predicted class


class Removal(_Strict):
    threshold: float  # pruning threshold chosen from the sweep
    pruned_channels: int
    sweep: list[dict[str, float | int | None]]  # threshold, pruned, clean_acc, trigger_asr per swept threshold
    clean_acc_before: float
    clean_acc_after: float
    asr_before: float | None = None  # with the planted trigger (known only for the planted control)
    asr_after: float | None = None
    recovered_trigger_asr_after: float | None = None  # the recovered trigger's success after pruning (defender's view)
    der: float | None = None  # [max(0, dASR) - max(0, dCA) + 1] / 2


class NeuralCleanseScan(_Strict):
    l1: list[float]  # mask |m|_1 per label
    anomaly_index: list[float]  # MAD anomaly index per label (flag at > 2)
    flagged_label: int | None


class Result(_Strict):
    subject: str  # "audited model" or the planted control's description
    backdoored: bool
    label: int  # the exposed label (most-predicted class after unlearning)
    collapse: float
    collapse_steps: int
    histogram_variance: float
    trigger_l1: float
    reference_labels: list[int]
    reference_l1: list[float]
    trigger_ratio: float
    blend_ratio: float | None = None  # the same ratio for a uniform-blend trigger (None: blend scan off)
    trigger_success: float  # recovered trigger's success on the clean set
    mask: list[list[float]] = Field(repr=False)  # (H, W)
    pattern: list[list[list[float]]] = Field(repr=False)  # (C, H, W)
    curve: Curve
    planted_asr: float | None = None  # the planted control's ASR before any defense
    removal: Removal | None = None
    removal_skipped: str | None = None
    neural_cleanse: NeuralCleanseScan | None = None


class Section(_Strict):
    method: str = "EBYD (Clean Unlearning exposure + Neural Cleanse on the exposed label + BN-mask pruning)"
    clean_size: int
    bn_eval: bool
    thresholds: dict[str, float]
    results: list[Result]

    def validity_warnings(self) -> list:
        from secsuite.report import ReportWarning

        warnings = []
        for result in self.results:
            if result.planted_asr is not None and not result.backdoored:
                warnings.append(ReportWarning(code="backdoor_control_missed", subject=result.subject, message=(
                    "EBYD did not flag the planted backdoor: a clean verdict on the audited model is weak evidence here")))
            if result.removal_skipped:
                warnings.append(ReportWarning(code="backdoor_removal_skipped", subject=result.subject, message=result.removal_skipped))
        return warnings


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _blend_threshold(section: Section) -> str:
    value = section.thresholds.get("blend_ratio")
    return "" if value is None else f" or blend-trigger ratio <= {value:.2f}"


def _verdict(result: Result) -> str:
    return f"backdoored, target label {result.label}" if result.backdoored else "no backdoor detected"


def markdown(section: Section) -> str:
    lines = ["## backdoor", "", f"{section.method}; clean set {section.clean_size} images, BatchNorm "
             f"{'in eval mode' if section.bn_eval else 'updating'} during unlearning; thresholds: "
             f"collapse >= {section.thresholds['collapse']:.2f} and (mask-trigger ratio <= {section.thresholds['trigger_ratio']:.2f}"
             f"{_blend_threshold(section)}).", "",
             "| model | verdict | exposed label | collapse | steps | trigger L1 | ratio to reference | blend ratio | planted ASR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in section.results:
        lines.append(f"| {r.subject} | {_verdict(r)} | {r.label} | {r.collapse:.2f} | {r.collapse_steps} | {r.trigger_l1:.1f} | "
                     f"{r.trigger_ratio:.2f} | {_ratio(r.blend_ratio)} | {_pct(r.planted_asr)} |")
    for r in section.results:
        if r.removal is not None:
            m = r.removal
            lines += ["", f"Removal on {r.subject}: pruned {m.pruned_channels} channels (threshold {m.threshold:.2f}); "
                      f"CA {_pct(m.clean_acc_before)} -> {_pct(m.clean_acc_after)}, ASR {_pct(m.asr_before)} -> {_pct(m.asr_after)}, "
                      f"recovered-trigger ASR after {_pct(m.recovered_trigger_asr_after)}, DER {'-' if m.der is None else f'{m.der:.3f}'}."]
        elif r.removal_skipped:
            lines += ["", f"Removal on {r.subject} skipped: {r.removal_skipped}"]
        if r.neural_cleanse is not None:
            nc = r.neural_cleanse
            lines += ["", f"Neural Cleanse baseline on {r.subject}: flagged label {nc.flagged_label}; L1 per label "
                      + ", ".join(f"{v:.1f}" for v in nc.l1)]
    return "\n".join(lines)


def html(section: Section) -> str:
    import torch

    from secsuite.plots import image_grid, line_plot

    escape = html_lib.escape
    parts = ["<h2>backdoor</h2>", f"<p>{escape(section.method)}; clean set {section.clean_size} images.</p>",
             "<table><tr><th>model</th><th>verdict</th><th>exposed label</th><th>collapse</th><th>steps</th>"
             "<th>trigger L1</th><th>ratio</th><th>blend ratio</th><th>planted ASR</th></tr>"]
    for r in section.results:
        parts.append(f"<tr><td>{escape(r.subject)}</td><td>{escape(_verdict(r))}</td><td>{r.label}</td><td>{r.collapse:.2f}</td>"
                     f"<td>{r.collapse_steps}</td><td>{r.trigger_l1:.1f}</td><td>{r.trigger_ratio:.2f}</td><td>{_ratio(r.blend_ratio)}</td>"
                     f"<td>{_pct(r.planted_asr)}</td></tr>")
    parts.append("</table>")
    for r in section.results:
        parts.append(f"<h3>{escape(r.subject)}</h3>")
        mask, pattern = torch.tensor(r.mask).unsqueeze(0), torch.tensor(r.pattern)
        parts.append(image_grid([mask, pattern, mask * pattern], ["mask", "pattern", "mask x pattern"],
                                f"recovered trigger for label {r.label}"))
        parts.append(line_plot({"clean accuracy": (r.curve.steps, r.curve.clean_acc),
                                "top-class fraction": (r.curve.steps, r.curve.top_fraction)},
                               "unlearning step", "fraction of clean set", "class collapse during Clean Unlearning"))
        if r.removal is not None:
            m = r.removal
            der = "-" if m.der is None else f"{m.der:.3f}"
            parts.append(f"<p>Removal: {m.pruned_channels} channels pruned (threshold {m.threshold:.2f}); CA {_pct(m.clean_acc_before)} "
                         f"&rarr; {_pct(m.clean_acc_after)}, ASR {_pct(m.asr_before)} &rarr; {_pct(m.asr_after)}, DER {der}.</p>")
        elif r.removal_skipped:
            parts.append(f"<p>Removal skipped: {escape(r.removal_skipped)}</p>")
    return "\n".join(parts)
