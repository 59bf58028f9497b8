"""The student notebook, notebooks/rnn_lstm_captioning.ipynb, written without outputs.

The cells live here as text so a change to the notebook is a readable diff;
``capgrade build`` writes the stored notebook from them (``--check`` only compares),
and tests/test_notebook.py checks the stored notebook is what this module writes.
``python scripts/write_notebook.py`` does the same as ``capgrade build --only notebook``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

from grader.contract import NOTEBOOK_FILE

#: The stored notebook, from the project root.
NOTEBOOK = Path("notebooks") / NOTEBOOK_FILE
OUT = Path(__file__).resolve().parent.parent.parent / NOTEBOOK

CELLS: list[tuple[str, str] | tuple[str, str, list[str]]] = [
    ("markdown", """# Image captioning with an RNN, an LSTM and an attention LSTM

You will write, mostly from scratch, the pieces of an image-captioning model in
`rnn_lstm_captioning.py`: a vanilla RNN (forward and backward by hand), word
embeddings, a temporal softmax loss, an LSTM, dot-product attention and an
attention LSTM, and the `CaptioningRNN` that puts an image encoder and one of
those cells together. This notebook drives the module: after each part a
`check(...)` cell runs the course's checks on your code and shows the result
inline; then you overfit each model on a few images, train it, look at the
captions it writes and, for attention, where it looks.

**Where to work.** Locally: keep this notebook next to `rnn_lstm_captioning.py`,
install the grader from the course's release (`pip install capgrade-*.whl` in the
release folder; `pip install "$(echo capgrade-*.whl)[notebook]"` adds JupyterLab) and start
it with `jupyter lab`. On Colab: upload
the notebook, `rnn_lstm_captioning.py` and the capgrade release with the file
browser on the left; the set-up cell installs it. No Google Drive is needed.

**Data.** With the course's `coco.pt` set `DATA_PATH` below; otherwise a
synthetic captioning set (coloured shapes described by a small grammar) is
generated on the spot, so everything here works offline.

**Grading.** The grader runs this notebook itself in *grading mode*
(`GRADING_MODE = True`: small data, few iterations, on the CPU) and re-trains the
same configuration on your module: keep the training cells as they are.

**Training size.** Without a GPU the training below is laptop-sized by default
(`FULL_RUN = None`: 234 iterations per model, minutes): its loss file does not
pass the hand-in's checks, which expect the course's full run (2,340 iterations
per model, hours on a CPU). Set `FULL_RUN = True` (best on a GPU, e.g. Colab) for
the run you hand in; on a GPU the full run is already the default. Then
hand in `rnn_lstm_captioning.py`, this notebook and the
`rnn_lstm_attention_submission.pt` it writes after training; the last cell,
`export()`, zips exactly those three for you."""),
    ("code", """# Parameters. `capgrade run-notebook` injects GRADING_MODE = True after this cell.
GRADING_MODE = False  # True: small data, few iterations, CPU (what the grader runs)
DATA_PATH = None  # the course's coco.pt if you have it; None: the synthetic shapes set
MODULE_PATH = "rnn_lstm_captioning.py"
DEVICE = None  # None: CUDA when available, else the CPU
# None: the course's full training on a GPU (2,340 iterations x 3 models: hours on a
# CPU), a laptop-sized one (234 iterations x 3 models: minutes) on the CPU.
# True: the full run anywhere: the hand-in's loss file needs it (the laptop run's
# loss file fails the hand-in's length check). False: the laptop run anywhere.
FULL_RUN = None""", ["parameters"]),
    ("markdown", "## Set-up"),
    ("code", """%matplotlib inline
import glob
import subprocess
import sys

if "google.colab" in sys.modules:
    try:
        import grader
    except ImportError:  # install the capgrade release uploaded next to the notebook
        wheels = sorted(glob.glob("capgrade-*.whl"))
        if not wheels:
            raise RuntimeError("upload the course's capgrade-*.whl with the file browser "
                               "first") from None
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", wheels[-1]], check=True)

try:
    import grader  # noqa: F401
except ImportError as exc:
    raise ImportError("capgrade is not installed: `pip install capgrade-*.whl` from the "
                      "course's release, then restart the kernel") from exc

import matplotlib.pyplot as plt
import torch
from IPython.display import display

from grader import check, check_all, export
from grader.course.plots import attention_figure, captioned_images, plot_losses
from grader.course.training import decode_captions, train_captioner
from grader.notebook import support as ns

run = ns.settings(GRADING_MODE, DEVICE or ns.default_device(), full=FULL_RUN)
if not GRADING_MODE and run.train_iterations != ns.COURSE.train_iterations:
    print(f"laptop-sized training ({run.train_iterations} iterations per model, not the "
          f"course's {ns.COURSE.train_iterations}): fine for trying things, but the loss file "
          "it writes will NOT pass the hand-in's checks. Set FULL_RUN = True (on a GPU, e.g. "
          "Colab) for the run you hand in.")
if GRADING_MODE:
    plt.rcParams["figure.dpi"] = 60  # smaller pictures in the copy a TA reads
# Your module, reloaded on every run of this cell, with the grader's ImageEncoder in
# place of the provided one: it never downloads (ImageNet weights are used only when
# torchvision already cached them; otherwise weights trained on synthetic shapes).
rlc = ns.load_student_module(MODULE_PATH, grading=GRADING_MODE)
rlc.hello_rnn_lstm_captioning()
print(f"grading mode: {GRADING_MODE}; device: {run.device}")"""),
    ("markdown", """## Data

A dict in the course's `coco.pt` format: uint8 images (N, 3, 112, 112), captions
(N, 17) of word indices (`<START>`, up to 15 words, `<END>`, `<NULL>` padding)
and the vocabulary."""),
    ("code", """data = ns.load_notebook_data(run, DATA_PATH)
word_to_idx = data["vocab"]["token_to_idx"]
idx_to_word = data["vocab"]["idx_to_token"]
NULL_INDEX = word_to_idx["<NULL>"]
display(captioned_images(data["train_images"][:8],
                         decode_captions(data["train_captions"][:8], idx_to_word),
                         title="training images and their captions"))"""),
    ("markdown", """Every model below is built by `new_model`, right after seeding torch's
generator: the grader re-runs this exact configuration on your module, and your
losses must match its own."""),
    ("code", """def new_model(cell_type: str):
    torch.manual_seed(run.seed)
    return rlc.CaptioningRNN(word_to_idx, input_dim=run.input_dim, wordvec_dim=run.wordvec_dim,
                             hidden_dim=run.hidden_dim, cell_type=cell_type,
                             ignore_index=NULL_INDEX)


def train(cell_type: str, images, captions, epochs: int, batch_size: int, lr: float):
    \"\"\"The course's loop: AdamW, batches in order, one loss per iteration.\"\"\"
    return train_captioner(new_model(cell_type), images, captions, num_epochs=epochs,
                           batch_size=batch_size, learning_rate=lr, device=run.device,
                           progress=not GRADING_MODE, description=f"training {cell_type}")


def show_samples(model, split: str, count: int = 4):
    \"\"\"Greedy captions under the images, the ground truth first.\"\"\"
    images = data[f"{split}_images"][:count]
    truth = decode_captions(data[f"{split}_captions"][:count], idx_to_word)
    model.eval()
    with torch.no_grad():
        out = model.sample(images.to(run.device))
    sampled = decode_captions((out[0] if isinstance(out, tuple) else out).cpu(), idx_to_word)
    texts = [f"true: {t}\\nsampled: {s}" for t, s in zip(truth, sampled, strict=False)]
    display(captioned_images(images, texts, title=f"{split} samples"))


small_images, small_captions = ns.overfit_subset(data, run)
train_images, train_captions = ns.training_subset(data, run)
print(f"overfitting on {len(small_images)} samples; training on {len(train_images)} drawn "
      f"with replacement for {run.train_epochs} epochs ({run.train_iterations} iterations)")"""),
    ("markdown", """# Part I: the vanilla RNN

### One step, forward and backward
`rnn_step_forward(x, prev_h, Wx, Wh, b)` computes
$h_t = \\tanh(x_t W_x + h_{t-1} W_h + b)$ and a cache; `rnn_step_backward(dnext_h, cache)`
returns `dx, dprev_h, dWx, dWh, db` using $\\frac{d}{da}\\tanh a = 1 - \\tanh^2 a$.
Write both by hand (no autograd)."""),
    ("code", 'check("rnn_step")'),
    ("markdown", """### A whole sequence
`rnn_forward(x, h0, Wx, Wh, b)` runs the step over T time steps and returns all
hidden states (N, T, H); `rnn_backward(dh, cache)` accumulates gradients backwards
through time (the gradient flowing into $h_t$ is the upstream `dh[:, t]` plus what
comes back from step $t+1$). The `RNN` module wraps them as `nn.Parameter`s."""),
    ("code", 'check("rnn_forward or rnn_backward or rnn_module")'),
    ("markdown", """### Word embeddings and the loss
`WordEmbedding` maps word indices (N, T) to vectors (N, T, W) by indexing its
weight matrix. `temporal_softmax_loss(x, y, ignore_index)` is the cross-entropy
summed over time steps and averaged over the batch, skipping targets equal to
`ignore_index`."""),
    ("code", 'check("word_embedding or temporal_softmax_loss")'),
    ("markdown", """### The captioning model
`CaptioningRNN` encodes the image (RegNet features, projected to the initial
hidden state), embeds the caption's words, runs the cell and scores the
vocabulary at every step; the loss compares the scores with the caption shifted
by one word. `sample` decodes greedily from `<START>`."""),
    ("code", 'check("captioning_loss_public and rnn")'),
    ("markdown", """### Overfit a small set, then train
A correct model drives the loss towards zero on a few samples (the course
expects below 0.5 after 80 epochs)."""),
    ("code", """_, rnn_overfit_losses = train(
    "rnn", small_images, small_captions, run.overfit_epochs, run.overfit_batch,
    run.overfit_lr["rnn"])
display(plot_losses(rnn_overfit_losses, title="RNN: overfitting a small set").figure)
print(f"final loss {rnn_overfit_losses[-1]:.3f}")"""),
    ("code", """rnn_model, rnn_losses = train(
    "rnn", train_images, train_captions, run.train_epochs, run.train_batch, run.train_lr)
display(plot_losses(rnn_losses, title="RNN: training loss").figure)
print(f"final loss {rnn_losses[-1]:.3f} (full course run: below 2.0)")
show_samples(rnn_model, "train")
show_samples(rnn_model, "val")"""),
    ("markdown", """# Part II: the LSTM

`LSTM.step_forward` computes the four gates from one matrix product,
$a = x W_x + h_{t-1} W_h + b$ split into $i, f, o, g$:
$c_t = \\sigma(f) \\odot c_{t-1} + \\sigma(i) \\odot \\tanh(g)$ and
$h_t = \\sigma(o) \\odot \\tanh(c_t)$. `LSTM.forward` runs it over the sequence
from $c_0 = 0$. Autograd computes the gradients from here on."""),
    ("code", 'check("lstm and not attention and not captioning")'),
    ("code", 'check("captioning_loss_public and lstm")'),
    ("code", """_, lstm_overfit_losses = train(
    "lstm", small_images, small_captions, run.overfit_epochs, run.overfit_batch,
    run.overfit_lr["lstm"])
display(plot_losses(lstm_overfit_losses, title="LSTM: overfitting a small set").figure)
print(f"final loss {lstm_overfit_losses[-1]:.3f}")"""),
    ("code", """lstm_model, lstm_losses = train(
    "lstm", train_images, train_captions, run.train_epochs, run.train_batch, run.train_lr)
display(plot_losses(lstm_losses, title="LSTM: training loss").figure)
print(f"final loss {lstm_losses[-1]:.3f} (full course run: below 1.8)")
show_samples(lstm_model, "train")
show_samples(lstm_model, "val")"""),
    ("markdown", """# Part III: attention

`dot_product_attention(prev_h, A)` scores each of the 4x4 feature positions
$A$ (N, H, 4, 4) against the previous hidden state, scaled by $1/\\sqrt{H}$,
turns the scores into weights with a softmax over the 16 positions and returns
the weighted sum of features (N, H) and the weights (N, 4, 4).
`AttentionLSTM` adds that context vector to each gate's input:
$a = x W_x + h_{t-1} W_h + \\text{attn}\\, W_{attn} + b$; $h_0 = c_0$ is the
mean of $A$ over positions."""),
    ("code", 'check("dot_product_attention or attention_lstm")'),
    ("code", 'check("captioning_loss_public and attn")'),
    ("code", """_, attn_overfit_losses = train(
    "attn", small_images, small_captions, run.overfit_epochs, run.overfit_batch,
    run.overfit_lr["attn"])
display(plot_losses(attn_overfit_losses, title="Attention LSTM: overfitting").figure)
print(f"final loss {attn_overfit_losses[-1]:.3f}")"""),
    ("code", """attn_model, attn_losses = train(
    "attn", train_images, train_captions, run.train_epochs, run.train_batch, run.train_lr)
display(plot_losses({"rnn": rnn_losses, "lstm": lstm_losses, "attn": attn_losses},
                    title="training loss, all three models").figure)
print(f"final loss {attn_losses[-1]:.3f} (full course run: below 0.5)")
show_samples(attn_model, "train")
show_samples(attn_model, "val")"""),
    ("markdown", """### Where the model looks, word by word
Each panel shows the attention weights used to produce one word, upsampled
onto the image: bright is where the model looked."""),
    ("code", """for split in ("train", "val"):
    image = data[f"{split}_images"][:1]
    attn_model.eval()
    with torch.no_grad():
        words_idx, weights = attn_model.sample(image.to(run.device))
    words = decode_captions(words_idx[0].cpu(), idx_to_word).split()
    if not words:
        print(f"{split}: the model wrote no words")
        continue
    display(attention_figure(image[0], words, weights[0][:len(words)]))"""),
    ("markdown", """## The whole module, and your hand-in

The last check looks at the module as a whole (no forbidden shortcuts such as
`torch.nn.RNN` or `F.cross_entropy` for the parts you write). Then save the
three training-loss histories: hand in `rnn_lstm_attention_submission.pt` with
your module and this notebook."""),
    ("code", 'check("from_scratch")'),
    ("code", """submission = {"rnn_losses": rnn_losses, "lstm_losses": lstm_losses,
              "attn_losses": attn_losses}
torch.save(submission, "rnn_lstm_attention_submission.pt")
print("saved rnn_lstm_attention_submission.pt:",
      {key: len(losses) for key, losses in submission.items()}, "losses")"""),
    ("markdown", """## Before you hand in

`check_all()` runs every public check once more and ends with one line: how
many passed and your public points. Then **save this notebook** (File > Save)
and run `export()`: it checks the three files you hand in (`rnn_lstm_captioning.py`
parses and is not the untouched stub, the notebook is a valid notebook,
`rnn_lstm_attention_submission.pt` is readable by the grader) and zips exactly
them into `rnn_lstm_captioning_submission_<date>.zip` next to this notebook.
If a file is missing or broken it says which and what to do, and writes no zip
(`export(force=True)` writes it anyway). On Colab, download the notebook
(File > Download > Download .ipynb) and upload it next to the module first.
In grading mode `export()` does nothing."""),
    ("code", "result = check_all(MODULE_PATH)"),
    ("code", "zip_path = export(module=MODULE_PATH)"),
]


def build() -> nbformat.NotebookNode:
    cells = []
    for kind, source, *tags in CELLS:
        metadata = {"tags": tags[0]} if tags else {}
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cells.append(make(source, metadata=metadata))
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"  # stable diffs: new cells get random ids
    return nb


def sources(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def stale(out: Path) -> list[str]:
    """Why the notebook stored at ``out`` is not what ``build()`` writes (empty: in sync)."""
    if not out.is_file():
        return ["missing"]
    same = sources(nbformat.read(out, as_version=4)) == sources(build())
    return [] if same else ["its cells differ from grader/authoring/notebook.py's"]


def write(out: Path) -> bool:
    """Write the notebook to ``out``; False when it was already what ``build()`` writes."""
    if out.is_file() and not stale(out):
        return False
    out.parent.mkdir(exist_ok=True)
    nbformat.write(build(), out)
    return True


def main(argv: list[str] | None = None) -> int:
    """``scripts/write_notebook.py [--check]``: its messages and exit codes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the stored one differs")
    args = parser.parse_args(argv)
    nb = build()
    if args.check:
        stored = nbformat.read(OUT, as_version=4)
        same = sources(stored) == sources(nb)
        print(f"{OUT} is {'in sync' if same else 'stale: run scripts/write_notebook.py'}")
        return 0 if same else 1
    OUT.parent.mkdir(exist_ok=True)
    nbformat.write(nb, OUT)
    print(f"wrote {OUT}")
    return 0
