"""``conformance report merge|diff``: compatibility matrices across runs, and regressions between two runs.

``merge A/results.json B/results.json ... [--report-dir D]`` prints the matrix as a terminal table and, with
``--report-dir``, writes ``matrix.html`` and ``matrix.md`` there. Results of ``--shard K/N`` runs are first joined
into the run they are parts of (all N shards must be given); when the inputs are exactly the shards of one run,
``--report-dir`` also gets that run's ``results.json``, ``junit.xml``, ``report.html`` and ``summary.md``, the same
reports one unsharded run writes, and the command exits with that run's exit code (so a CI merge job fails when
the run did). Otherwise merge exits 0. ``diff OLD NEW`` prints newly failing, newly passing, newly flaky, newly
known differences and changed skip reasons and exits 1 when a case newly fails (0 otherwise, 2 on unreadable
input).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.errors import ReportError
from conformance.reports.compare import diff, load, merge, render_diff, render_html, render_markdown, render_terminal


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("report", help="merge results into a compatibility matrix, or diff two runs")
    actions = parser.add_subparsers(dest="report_command", metavar="ACTION", parser_class=type(parser))
    merge_parser = actions.add_parser("merge", help="matrix of cases x (runtime, target) from results files")
    merge_parser.add_argument("results", nargs="+", metavar="RESULTS_JSON")
    merge_parser.add_argument("--report-dir", help="write matrix.html and matrix.md here")
    merge_parser.set_defaults(func=run_merge)
    diff_parser = actions.add_parser("diff", help="what changed from OLD to NEW; exit 1 on a regression")
    diff_parser.add_argument("old", metavar="OLD")
    diff_parser.add_argument("new", metavar="NEW")
    diff_parser.set_defaults(func=run_diff)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def run_merge(args: argparse.Namespace) -> int:
    from conformance.reports import write_all
    from conformance.reports.shards import group_shards, is_shard

    documents = load(args.results)
    runs = group_shards(documents)
    one_sharded_run = len(runs) == 1 and all(is_shard(d) for _, d in documents)
    matrix = merge(runs)
    if args.report_dir:
        out = Path(args.report_dir)
        if one_sharded_run:
            write_all(runs[0][1], out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "matrix.html").write_text(render_html(matrix), encoding="utf-8")
            (out / "matrix.md").write_text(render_markdown(matrix), encoding="utf-8")
        except OSError as exc:
            raise ReportError(f"cannot write the matrix to {out}: {exc.strerror}") from None
    sys.stdout.write(render_terminal(matrix))
    if args.report_dir:
        print(f"matrix: {Path(args.report_dir) / 'matrix.html'}, {Path(args.report_dir) / 'matrix.md'}")
    if one_sharded_run:
        from conformance.reports.summary import terminal_table

        document = runs[0][1]
        print("\n" + terminal_table(document) + "\n")
        print(f"joined {document['joined_shards']} shards: {document['summary']['total']} cases, "
              f"exit code {document['exit_code']}" + (f"; reports in {args.report_dir}" if args.report_dir else ""))
        return int(document["exit_code"])
    return 0


def run_diff(args: argparse.Namespace) -> int:
    (_, old), (_, new) = load([args.old, args.new])
    result = diff(old, new)
    sys.stdout.write(render_diff(result))
    return 1 if result.regression else 0
