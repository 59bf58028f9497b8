"""``capgrade data``: validate the course's coco.pt, or make (and save) the synthetic set."""

from __future__ import annotations

import argparse
from pathlib import Path

from grader.usage import UsageError, add_out


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``capgrade data`` on the CLI's subparsers."""
    data = subparsers.add_parser("data", help="check the course's coco.pt, or make the "
                                 "synthetic set")
    data.add_argument("--coco", type=Path, default=None,
                      help="the course's coco.pt to validate (default: $CAPGRADE_COCO, else "
                           "the synthetic dataset)")
    data.add_argument("--n-train", type=int, default=2000, help="synthetic training images")
    data.add_argument("--n-val", type=int, default=200, help="synthetic validation images")
    data.add_argument("--seed", type=int, default=0, help="synthetic dataset seed")
    data.add_argument("--examples", type=int, default=3, help="captions to print")
    add_out(data, None, "also save the data to this file")
    data.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from grader.course import dataset
    from grader.course.training import decode_captions

    start = time.monotonic()
    try:
        data = dataset.load_data(args.coco, n_train=args.n_train, n_val=args.n_val,
                                 seed=args.seed)
    except dataset.DataError as exc:
        raise UsageError(str(exc)) from None
    print(f"ready in {time.monotonic() - start:.1f} s (format checked: keys, shapes, dtypes, "
          "vocabulary)")
    words = data["vocab"]["idx_to_token"]
    for caption in decode_captions(data["train_captions"][:args.examples], words):
        print(f"  {caption}")
    if args.out is not None:
        torch.save(data, args.out)
        print(f"wrote {args.out} (the course's coco.pt format)")
    return 0
