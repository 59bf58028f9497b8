"""Benchmarks for the data and training side (figures in docs/benchmarks.md).

1. Synthetic dataset generation time at the default size (no cache).
2. Each overfit check on the reference, through `capgrade check --only` (the
   check's own duration, worker start excluded, and the whole command).
3. A short training run of the reference attention model on the synthetic
   set, then greedy captions for the validation images: how often the first
   (colour, shape) the caption names is an object in the image, and how often
   every named pair is.

    .venv/bin/python scripts/bench.py training [--epochs 8] [--train 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import torch

from grader.course import dataset, encoder, synthetic
from grader.course.training import decode_captions, train_captioner
from grader.worker.loader import load_module

ROOT = Path(__file__).resolve().parents[2]


def bench_generation(n_train: int, n_val: int) -> None:
    start = time.perf_counter()
    synthetic.make_dataset(n_train, n_val, seed=0)
    print(f"synthetic dataset {n_train} train + {n_val} val: "
          f"{time.perf_counter() - start:.2f} s to generate")


def bench_overfit() -> None:
    from grader.harness.engine import run_checks

    for cell in ("rnn", "lstm", "attn"):
        start = time.perf_counter()
        result = run_checks(ROOT / "reference" / "rnn_lstm_captioning.py",
                            only=f"overfit and {cell}")
        (check,) = result.checks
        print(f"overfit[{cell}]: {check.status}, check {check.duration:.2f} s, "
              f"whole run incl. worker start {time.perf_counter() - start:.2f} s")


def bench_short_training(epochs: int, n_train: int, threads: int) -> None:
    torch.set_num_threads(threads)
    data = dataset.load_data(n_train=n_train, n_val=200, verbose=False)
    ref = load_module(ROOT / "reference" / "rnn_lstm_captioning.py", "bench_reference")
    ref.ImageEncoder = encoder.ImageEncoder
    vocab = data["vocab"]["token_to_idx"]
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        model = ref.CaptioningRNN(vocab, input_dim=400, wordvec_dim=128, hidden_dim=256,
                                  cell_type="attn", image_encoder_pretrained=False,
                                  ignore_index=0)
    start = time.perf_counter()
    with encoder.memoised_features():
        model, losses = train_captioner(model, data["train_images"], data["train_captions"],
                                        num_epochs=epochs, batch_size=100, learning_rate=2e-3,
                                        progress=False)
    seconds = time.perf_counter() - start
    model.eval()
    words = data["vocab"]["idx_to_token"]
    sampled, _ = model.sample(data["val_images"], max_length=15)
    first_ok = all_ok = 0
    samples = decode_captions(sampled, words)
    truths = decode_captions(data["val_captions"], words)
    for sample, truth in zip(samples, truths, strict=True):
        named = synthetic.objects_named(sample.split())
        present = set(synthetic.objects_named(truth.split()))
        first_ok += bool(named) and named[0] in present
        all_ok += bool(named) and all(p in present for p in named)
    n = len(samples)
    print(f"attention model, {n_train} synthetic images, {epochs} epochs of batch 100 "
          f"({len(losses)} iterations, {threads} threads): {seconds:.1f} s, loss "
          f"{losses[0]:.2f} -> {losses[-1]:.2f}")
    print(f"validation ({n} images): first named colour+shape present {first_ok / n:.1%}, "
          f"every named colour+shape present {all_ok / n:.1%}")
    for sample, truth in list(zip(samples, truths, strict=True))[:4]:
        print(f"  sampled: {sample}\n  truth:   {truth}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench.py training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["data", "overfit", "train"])
    args = parser.parse_args(argv)
    if "data" not in args.skip:
        bench_generation(2000, 200)
        bench_generation(10000, 500)
    if "overfit" not in args.skip:
        bench_overfit()
    if "train" not in args.skip:
        bench_short_training(args.epochs, args.train, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
