"""``mri-synth``: the command-line entry points.

    mri-synth notebooks --profile quick        run notebooks 01..07 in order (papermill) into runs/quick
    mri-synth data [SOURCE]                    decode and cache a data source; print its class counts

Each sub-command is a thin wrapper over a package function, so a notebook or script can call the same thing.
"""

from __future__ import annotations

import argparse
import sys


def _notebooks(args: argparse.Namespace) -> None:
    from .notebooks import run_batch

    runs = run_batch(args.profile, run_dir=args.run_dir, only=args.only, log_output=args.log_output)
    print(f"ran {len(runs)} notebook(s) in {sum(r.seconds for r in runs):.0f} s; outputs in {runs[-1].output.parent}")


def _data(args: argparse.Namespace) -> None:
    from .data import load_data
    from .explore import class_count_table

    data = load_data(args.source)
    print(f"{data.source} (fingerprint {data.fingerprint})")
    print(class_count_table(data).to_string())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mri-synth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    nb = sub.add_parser("notebooks", help="run the numbered notebooks with a profile's parameters")
    nb.add_argument("--profile", default="quick", help="profile name in profiles/ or a YAML path (default: quick)")
    nb.add_argument("--run-dir", default=None, help="output folder (default: runs/<profile>; reuse it to resume)")
    nb.add_argument("--only", nargs="*", default=None, help="notebook stems or prefixes to run, e.g. 01 07")
    nb.add_argument("--log-output", action="store_true", help="stream cell outputs while running")
    nb.set_defaults(func=_notebooks)

    data = sub.add_parser("data", help="decode and cache a data source, print its class counts")
    data.add_argument("source", nargs="?", default=None, help="'sample', a hub id or a folder (default: MRI_SYNTH_DATA)")
    data.set_defaults(func=_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:  # our errors name the problem and the fix: show them plainly
        print(f"mri-synth: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
