"""The `capgrade` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader.stubgen import StubError, build_stub

REFERENCE = Path("reference/rnn_lstm_captioning.py")
STUB = Path("student/rnn_lstm_captioning.py")


def _build_stub(args: argparse.Namespace) -> int:
    if not args.reference.is_file():
        print(f"capgrade build-stub: reference not found: {args.reference} "
              "(run from the project root or pass --reference)", file=sys.stderr)
        return 2
    try:
        if args.check:
            from grader.stubgen import stub_is_current

            if stub_is_current(args.reference, args.out):
                print(f"{args.out} is in sync with {args.reference}")
                return 0
            print(f"{args.out} is stale: run `capgrade build-stub`", file=sys.stderr)
            return 1
        changed = build_stub(args.reference, args.out)
    except (StubError, SyntaxError) as exc:
        print(f"capgrade build-stub: {args.reference}: {exc}", file=sys.stderr)
        return 2
    print(f"{'wrote' if changed else 'unchanged:'} {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from grader.demo import run_demo

    for path in (args.reference, args.stub):
        if not path.is_file():
            print(f"capgrade demo: not found: {path} (run from the project root)", file=sys.stderr)
            return 2
    return run_demo(args.reference, args.stub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capgrade", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    stub = sub.add_parser("build-stub", help="write the student stub from the reference")
    stub.add_argument("--reference", type=Path, default=REFERENCE)
    stub.add_argument("--out", type=Path, default=STUB)
    stub.add_argument("--check", action="store_true",
                      help="only report whether the stub is in sync (exit 1 when stale)")
    stub.set_defaults(func=_build_stub)

    demo = sub.add_parser("demo", help="run the reference and the stub on the course's inputs")
    demo.add_argument("--reference", type=Path, default=REFERENCE)
    demo.add_argument("--stub", type=Path, default=STUB)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
