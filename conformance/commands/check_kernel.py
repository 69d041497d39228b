"""``conformance check-kernel``: can this target's kernel run containers, and which optional features does it have?

Exit status 0 when every necessary feature is present, 1 when one is missing, 2 when the check could not run
(unreachable target, unreadable ``--kernel-config``, probe program failure).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from conformance.kernel.manifest import check
from conformance.kernel.render import FORMATS, render
from conformance.targets import get_target

REPORT_FILES = {"json": "features.json", "md": "check-kernel.md", "html": "check-kernel.html"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("check-kernel", help="kernel config analysis and live feature probes of a target")
    parser.add_argument("--target", default="local", help="local (default), ssh://user@host[:port], qemu, vagrant")
    parser.add_argument("--report-dir", help="write features.json, check-kernel.md and check-kernel.html here")
    parser.add_argument("--format", choices=FORMATS, default="table", help="what to print (default: table)")
    parser.add_argument("--kernel-config", metavar="FILE",
                        help="analyse this kernel config instead of the target's (probes still run on the target)")
    parser.set_defaults(func=run)


def write_reports(report_dir: Path, manifest_text: dict[str, str]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    for fmt, name in REPORT_FILES.items():
        (report_dir / name).write_text(manifest_text[fmt])


def run(args: argparse.Namespace) -> int:
    if args.kernel_config and not Path(args.kernel_config).is_file():
        print(f"conformance: error: --kernel-config {args.kernel_config}: no such file", file=sys.stderr)
        return 2
    target = get_target(args.target)
    if getattr(target, "warm", None) not in (None, "none") and "warm" not in target.spec.options:
        target.warm = "none"  # type: ignore[attr-defined]  # the probes need no runtime: restore the plain snapshot
    try:
        target.up()
        manifest = check(target, args.kernel_config)
    finally:
        target.down()
    if args.report_dir:
        write_reports(Path(args.report_dir), {fmt: render(manifest, fmt) for fmt in REPORT_FILES})
    color = args.format == "table" and sys.stdout.isatty()
    sys.stdout.write(render(manifest, args.format, color=color))
    if args.format != "json" and not manifest.verdict.ok:
        print(json.dumps({"missing_necessary": manifest.verdict.missing_necessary}), file=sys.stderr)
    return manifest.exit_code
