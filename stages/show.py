"""show: the experiments as one readable table, for a terminal, a pipe or a report.

    python -m stages.show [--all] [-n N] [--width 120] [--sort COLUMN [--desc]] [--md | --csv]
    bash run.sh show ...                      # the same

Rows are the workspace, the baseline commit and its experiments (DVC's own list, as
`dvc exp show` has it); columns are the params that differ between those rows and the headline
metrics: each model's test accuracy and mean corruption accuracy (mCA), the best model and the
ensemble's accuracy, each model's best validation loss and accuracy and its training minutes.
No hashes; plain text that fits ``--width`` columns (the columns that do not fit are named
under the table, least important first to go). ``--csv`` prints every column.
"""

from __future__ import annotations

import argparse
import csv
import sys

from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import ParamsError
from stages.common.reporting.experiments import (
    MISSING,
    NARROWEST,
    collect_rows,
    dropped_note,
    fit,
    render_markdown,
    render_text,
    sort_rows,
    table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every branch's experiments")
    parser.add_argument("-n", "--num", type=int, default=1, help="commits back to show")
    parser.add_argument("--width", type=int, default=120, help="the table's width in characters")
    parser.add_argument("--sort", help="a column to sort experiments by")
    parser.add_argument("--desc", action="store_true", help="sort descending")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--md", action="store_true", help="a markdown table")
    output.add_argument("--csv", action="store_true", help="CSV, every column")
    args = parser.parse_args()
    if args.width < NARROWEST:
        raise ParamsError(f"--width: at least {NARROWEST} characters, got {args.width}")
    if args.num < 1:
        raise ParamsError(f"-n/--num: at least 1 commit, got {args.num}")
    rows = collect_rows(args.all, args.num)
    for row in rows:
        for problem in row.problems:
            print(
                f"warning: {row.label.strip()}: {problem} (its cells show {MISSING})",
                file=sys.stderr,
            )
    columns = table(rows)
    if args.sort:
        sort_rows(rows, columns, args.sort, args.desc)
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow([c.label for c in columns])
        writer.writerows(zip(*(c.cells for c in columns)))
        return
    if args.md:  # for a report, which wraps or scrolls: every column, nothing cut
        print("\n".join(render_markdown(columns)))
        return
    shown, dropped = fit(columns, args.width, keep=args.sort)
    print("\n".join(render_text(shown)))
    if dropped:
        print(f"\n{dropped_note(columns, dropped, args.width)}")
    if len(columns) == 1:
        print("\n(no params differ and no metrics yet: run an experiment, e.g. bash run.sh 5)")


if __name__ == "__main__":
    run_command(main)
