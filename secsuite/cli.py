"""The `secsuite` command: audit, validate, report, list.

User errors (bad config, missing data, unsafe checkpoint, bad parameter) print one line on
stderr and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"secsuite: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def cmd_audit(args: argparse.Namespace) -> int:
    from secsuite.audit import audit
    from secsuite.report import SUFFIXES

    try:
        report = audit(args.config, out_dir=args.out, resume=args.resume)
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command with --resume to continue from the finished evaluations")
    if report is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    out = Path(args.out or report_dir(args.config))
    print(f"clean accuracy {100 * report.clean.clean_acc:.1f}%; worst-case robust accuracy: "
          + ", ".join(f"eps {w.eps:g}: {100 * w.robust_acc:.1f}%" for w in report.worst_case))
    for warning in report.warnings:
        print(f"warning [{warning.code}] {warning.subject or ''}: {warning.message}")
    print("wrote " + ", ".join(str(out / SUFFIXES[f]) for f in ("json", "md", "html") if (out / SUFFIXES[f]).exists()))
    return 0


def report_dir(config_path: str | None) -> str:
    from secsuite.threat import load_config

    return load_config(config_path).output.dir


def cmd_validate(args: argparse.Namespace) -> int:
    from secsuite.audit import check_plan
    from secsuite.threat import load_config

    config = load_config(args.config)
    check_plan(config)
    kinds = ", ".join(f"{e.kind}:{e.name}" for e in config.evaluate)
    print(f"{args.config}: OK (model {config.model.source}, data {config.data.source}, {config.threat.norm} eps {config.threat.eps}; {kinds})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from secsuite.files import check_output_dir, write_atomic
    from secsuite.report import RENDERERS, Report, to_html

    path = Path(args.report)
    if not path.is_file():
        return _fail(f"report file not found: {path}")
    if args.output:
        if Path(args.output).is_dir():
            return _fail(f"-o {args.output} is a folder; give the file to write")
        check_output_dir(Path(args.output).parent)
    try:
        report = Report.from_json(path.read_text())
    except ValidationError as error:
        first = error.errors()[0]
        return _fail(f"{path}: not a secsuite report: {'.'.join(map(str, first['loc']))}: {first['msg']}")
    # The file may come from anyone: the page it renders to embeds no HTML taken from it.
    text = to_html(report, defense_html=False) if args.format == "html" else RENDERERS[args.format](report)
    if args.output:
        write_atomic(args.output, text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text + "\n")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from attacks import ATTACK_DESCRIPTIONS
    from defenses import DEFENSES
    from secsuite.data import DATASETS
    from secsuite.sources import SOURCES

    def block(title: str, rows: dict[str, str]) -> None:
        print(title)
        width = max(len(k) for k in rows)
        for key, description in rows.items():
            print(f"  {key.ljust(width)}  {description}")

    block("attacks:", ATTACK_DESCRIPTIONS)
    block("defenses:", {name: description for name, (_, description) in DEFENSES.items()})
    block("models:", SOURCES)
    block("datasets:", DATASETS)
    saved = sorted(Path(args.models).glob("*.json")) if args.models else []
    if saved:
        block(f"saved models in {args.models}:", {p.stem: f"audit with [model] source/weights from {p}" for p in saved})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secsuite", description="Privacy and security audits of PyTorch image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser("audit", help="run an audit and write report.json/.md/.html")
    audit.add_argument("config", nargs="?", help="TOML audit config (omit for the embedded default)")
    audit.add_argument("--out", help="output folder (default: [output] dir, secsuite-report)")
    audit.add_argument("--resume", action="store_true",
                       help="reuse the model and evaluations an interrupted run of the same config checkpointed in OUT/.state")
    audit.set_defaults(func=cmd_audit)
    validate = sub.add_parser("validate", help="check a config without running it")
    validate.add_argument("config")
    validate.set_defaults(func=cmd_validate)
    report = sub.add_parser("report", help="render a report.json as Markdown or HTML")
    report.add_argument("report")
    report.add_argument("--format", choices=["md", "html", "json"], default="md")
    report.add_argument("-o", "--output", help="write to this file instead of stdout")
    report.set_defaults(func=cmd_report)
    listing = sub.add_parser("list", help="list attacks, defenses, model sources, datasets and saved models")
    listing.add_argument("--models", default="secsuite-report/models", help="folder of saved (defended) models")
    listing.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    from secsuite.errors import SecsuiteError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SecsuiteError, ValueError) as error:
        return _fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
    except OSError as error:  # a file or folder the user named that the system refuses
        return _fail(f"{error.filename}: {error.strerror}" if error.filename else str(error))
    except KeyboardInterrupt:
        return _fail("interrupted")


if __name__ == "__main__":
    sys.exit(main())
