"""``emseg runs``: training runs after the fact; ``sync`` uploads what a run logged while its MLflow server was away."""

from __future__ import annotations

import argparse

from emseg.cli import GROUPS
from emseg.engine.tracking import sync_run


def run_sync(args: argparse.Namespace) -> int:
    for run_dir in args.run_dirs:
        counts = sync_run(run_dir)
        print(f"{run_dir}: " + (", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing to upload: the "
                                "MLflow server has all of this run"))
    return 0


def add_parsers(commands) -> None:
    runs = commands.add_parser("runs", help=GROUPS["runs"][1]).add_subparsers(dest="runs_command", required=True)
    sync = runs.add_parser("sync", help="upload to the MLflow server what runs logged to their folder while it was "
                                        "unreachable, and register their promoted models")
    sync.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run folder, bundles/<name>/runs/<run_name>")
    sync.set_defaults(func=run_sync)
