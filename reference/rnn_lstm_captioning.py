"""Image captioning with a vanilla RNN, an LSTM and an attention LSTM.

Shapes: N batch, T time steps, D input size, H hidden size, V vocabulary size,
W word-vector size. Nothing here may create a tensor with a hard-coded dtype or
device: make new tensors from the inputs (``new_zeros``, ``zeros_like``, ...), so
that every function works in float32 and float64, on the CPU and on CUDA.
"""

# BEGIN SOLUTION
# Reference solution (instructor only). `capgrade build-stub` writes the student
# stub from this file: each region between "BEGIN SOLUTION: <names>" and
# "END SOLUTION" becomes a TODO block in which <names> are set to None, and the
# "Task:" comment lines opening a region become its TODO text. Regions at module
# level (like this one) are dropped. Everything else is provided code.
# END SOLUTION

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import feature_extraction


def hello_rnn_lstm_captioning():
    """Setup smoke test: shows the module was found and imported."""
    print("Hello from rnn_lstm_captioning.py!")


class ImageEncoder(nn.Module):
    """RegNet-X 400MF trunk as a frozen-or-not feature extractor (provided code).

    Returns the last stage's features ``c5``: (N, 400, H/32, W/32), i.e.
    (N, 400, 4, 4) for 112x112 images. With ``pretrained=False`` the weights are
    random and nothing is downloaded.
    """

    def __init__(self, pretrained: bool = True, verbose: bool = True):
        super().__init__()
        weights = torchvision.models.RegNet_X_400MF_Weights.DEFAULT if pretrained else None
        cnn = torchvision.models.regnet_x_400mf(weights=weights)
        self._out_channels = cnn.fc.in_features  # channels entering the classifier head
        # Keep the trunk up to its last stage; the classifier head is dropped.
        self.backbone = feature_extraction.create_feature_extractor(
            cnn, return_nodes={"trunk_output.block4": "c5"}
        )
        # ImageNet statistics the pretrained trunk expects.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        if verbose:
            print(f"ImageEncoder: RegNet-X 400MF, pretrained={pretrained}, "
                  f"c5 features: {self._out_channels} channels at 1/32 resolution")

    @property
    def out_channels(self) -> int:
        return self._out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = self.mean.dtype
        if images.dtype == torch.uint8:
            images = images.to(dtype) / 255.0
        images = (images.to(dtype) - self.mean) / self.std
        return self.backbone(images)["c5"]


##############################################################################
# Vanilla RNN                                                                #
##############################################################################


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One step of a tanh RNN: next_h = tanh(x Wx + prev_h Wh + b).

    Args:
        x: (N, D) inputs; prev_h: (N, H) hidden state;
        Wx: (D, H), Wh: (H, H), b: (H,).
    Returns:
        next_h: (N, H), and a cache for rnn_step_backward.
    """
    # BEGIN SOLUTION: next_h, cache
    # Task: compute the next hidden state and keep in `cache` what the
    # backward pass needs.
    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)
    cache = (x, prev_h, Wx, Wh, next_h)
    # END SOLUTION
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    """Backward pass of rnn_step_forward, written by hand (no autograd).

    Args:
        dnext_h: (N, H) upstream gradient of next_h; cache from the forward.
    Returns:
        dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    # BEGIN SOLUTION: dx, dprev_h, dWx, dWh, db
    # Task: back-propagate through tanh and the two matrix products.
    # Hint: d tanh(a) / da = 1 - tanh(a)^2.
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h**2)  # gradient at the pre-activation
    dx = da @ Wx.T
    dprev_h = da @ Wh.T
    dWx = x.T @ da
    dWh = prev_h.T @ da
    db = da.sum(dim=0)
    # END SOLUTION
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """Run the tanh RNN over a whole sequence.

    Args:
        x: (N, T, D) inputs; h0: (N, H) initial hidden state; Wx, Wh, b as above.
    Returns:
        h: (N, T, H) hidden states of every step, and a cache for rnn_backward.
    """
    # BEGIN SOLUTION: h, cache
    # Task: loop over time with rnn_step_forward, stacking the hidden states.
    hs, cache = [], []
    prev_h = h0
    for t in range(x.shape[1]):
        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        hs.append(prev_h)
        cache.append(step_cache)
    h = torch.stack(hs, dim=1)
    # END SOLUTION
    return h, cache


def rnn_backward(dh, cache):
    """Backpropagation through time for rnn_forward (no autograd).

    Args:
        dh: (N, T, H) upstream gradients of every hidden state h_t (not the
            gradients that flow between steps).
    Returns:
        dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    # BEGIN SOLUTION: dx, dh0, dWx, dWh, db
    # Task: walk back in time; the gradient reaching h_t is its upstream
    # gradient dh[:, t] plus what flows back from step t + 1.
    x0, _, Wx, Wh, _ = cache[0]
    N, T, _ = dh.shape
    dx = dh.new_zeros(N, T, x0.shape[1])
    dWx, dWh = torch.zeros_like(Wx), torch.zeros_like(Wh)
    db = dh.new_zeros(Wh.shape[0])
    dprev_h = torch.zeros_like(dh[:, 0])
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dprev_h, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    dh0 = dprev_h
    # END SOLUTION
    return dx, dh0, dWx, dWh, db


class RNN(nn.Module):
    """A tanh RNN layer built on rnn_forward (provided code)."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, hidden_dim).div(math.sqrt(hidden_dim)))
        self.b = nn.Parameter(torch.zeros(hidden_dim))

    def forward(self, x, h0):
        """x: (N, T, D), h0: (N, H) -> hidden states (N, T, H)."""
        hn, _ = rnn_forward(x, h0, self.Wx, self.Wh, self.b)
        return hn

    def step_forward(self, x, prev_h):
        """x: (N, D), prev_h: (N, H) -> next hidden state (N, H)."""
        next_h, _ = rnn_step_forward(x, prev_h, self.Wx, self.Wh, self.b)
        return next_h


class WordEmbedding(nn.Module):
    """Maps word indices to learned vectors by row lookup in W_embed (V, W)."""

    def __init__(self, vocab_size: int, embed_size: int):
        super().__init__()
        self.W_embed = nn.Parameter(torch.randn(vocab_size, embed_size).div(math.sqrt(vocab_size)))

    def forward(self, x):
        """x: integer indices of any shape, e.g. (N, T) -> (N, T, W)."""
        # BEGIN SOLUTION: out
        # Task: look up the rows of W_embed named by x, keeping the result
        # differentiable with respect to W_embed (nn.Embedding is not allowed).
        out = self.W_embed[x]
        # END SOLUTION
        return out


def temporal_softmax_loss(x, y, ignore_index=None):
    """Cross-entropy summed over time and batch, divided by the batch size.

    Args:
        x: (N, T, V) scores; y: (N, T) target indices in [0, V);
        ignore_index: targets equal to it contribute nothing (None: none ignored).
    Returns:
        a scalar tensor.
    """
    # BEGIN SOLUTION: loss
    # Task: one line with F.cross_entropy (mind its reduction and ignore_index).
    N, _, V = x.shape
    loss = F.cross_entropy(
        x.reshape(-1, V),
        y.reshape(-1),
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction="sum",
    ) / N
    # END SOLUTION
    return loss


class CaptioningRNN(nn.Module):
    """Encodes an image with a CNN and decodes a caption with an RNN/LSTM/attention LSTM."""

    def __init__(
        self,
        word_to_idx: dict,
        input_dim: int = 512,
        wordvec_dim: int = 128,
        hidden_dim: int = 128,
        cell_type: str = "rnn",
        image_encoder_pretrained: bool = True,
        ignore_index: int | None = None,
    ):
        """
        Args:
            word_to_idx: vocabulary, word -> index in [0, V).
            input_dim: channels of the image features (400 for RegNet-X 400MF).
            wordvec_dim: W; hidden_dim: H.
            cell_type: "rnn", "lstm" or "attn".
            image_encoder_pretrained: passed to ImageEncoder.
            ignore_index: target index the loss ignores (usually <NULL>).
        """
        super().__init__()
        if cell_type not in {"rnn", "lstm", "attn"}:
            raise ValueError(f'Invalid cell_type "{cell_type}"')

        self.cell_type = cell_type
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}

        vocab_size = len(word_to_idx)

        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>", None)
        self._end = word_to_idx.get("<END>", None)
        self.ignore_index = ignore_index

        # BEGIN SOLUTION
        # Task: create the image encoder, the projection of its features to H
        # (a linear layer on averaged features for rnn/lstm, a 1x1 projection of
        # the feature grid for attn), the word embedding, the recurrent cell and
        # the output projection from H to V.
        self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained)
        if cell_type == "attn":
            self.feature_proj = nn.Conv2d(input_dim, hidden_dim, kernel_size=1)
        else:
            self.feature_proj = nn.Linear(input_dim, hidden_dim)
        self.embedding = WordEmbedding(vocab_size, wordvec_dim)
        cell = {"rnn": RNN, "lstm": LSTM, "attn": AttentionLSTM}[cell_type]
        self.rnn = cell(wordvec_dim, hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, vocab_size)
        # END SOLUTION

    def forward(self, images, captions):
        """Training loss for a batch.

        Args:
            images: (N, 3, 112, 112); captions: (N, T + 1) word indices.
        Returns:
            the temporal softmax loss (scalar): the model reads captions[:, :-1]
            and predicts captions[:, 1:].
        """
        # BEGIN SOLUTION: loss
        # Task: encode the images, build the initial state (h0, or the projected
        # feature grid A for attn), embed the input words, run the cell over the
        # sequence, score the vocabulary and return the temporal softmax loss.
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        features = self.image_encoder(images)
        words = self.embedding(captions_in)
        if self.cell_type == "attn":
            A = self.feature_proj(features)  # (N, H, 4, 4)
            hidden = self.rnn(words, A)
        else:
            h0 = self.feature_proj(features.mean(dim=(2, 3)))  # (N, H)
            hidden = self.rnn(words, h0)
        scores = self.output_proj(hidden)  # (N, T, V)
        loss = temporal_softmax_loss(scores, captions_out, ignore_index=self.ignore_index)
        # END SOLUTION
        return loss

    @torch.no_grad()
    def sample(self, images, max_length: int = 15):
        """Greedy decoding.

        Args:
            images: (N, 3, 112, 112); max_length: number of words to generate.
        Returns:
            captions: int64 (N, max_length), the first column being the first
            generated word (not <START>); for "attn" also the attention weights
            used at each step, (N, max_length, 4, 4), on the CPU.
        """
        # BEGIN SOLUTION: captions, attn_weights_all
        # Task: start from <START>; at every step embed the previous word,
        # advance the cell one step, score the vocabulary, take the argmax and
        # feed it back as the next input.
        N = images.shape[0]
        features = self.image_encoder(images)
        if self.cell_type == "attn":
            A = self.feature_proj(features)
            h = c = A.mean(dim=(2, 3))
        else:
            h = self.feature_proj(features.mean(dim=(2, 3)))
            c = torch.zeros_like(h)
        captions = torch.full((N, max_length), self._null, dtype=torch.long, device=h.device)
        attn_weights_all = h.new_zeros(N, max_length, 4, 4)
        word = torch.full((N,), self._start, dtype=torch.long, device=h.device)
        for t in range(max_length):
            x = self.embedding(word)
            if self.cell_type == "rnn":
                h = self.rnn.step_forward(x, h)
            elif self.cell_type == "lstm":
                h, c = self.rnn.step_forward(x, h, c)
            else:
                attn, attn_weights_all[:, t] = dot_product_attention(h, A)
                h, c = self.rnn.step_forward(x, h, c, attn)
            word = self.output_proj(h).argmax(dim=1)
            captions[:, t] = word
        # END SOLUTION
        if self.cell_type == "attn":
            return captions, attn_weights_all.cpu()
        return captions


##############################################################################
# LSTM                                                                       #
##############################################################################


class LSTM(nn.Module):
    """An LSTM layer; gates are the four H-wide blocks of Wx/Wh/b in the order i, f, o, g."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim * 4).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim)))
        self.b = nn.Parameter(torch.zeros(hidden_dim * 4))

    def step_forward(self, x, prev_h, prev_c):
        """x: (N, D), prev_h, prev_c: (N, H) -> next_h, next_c: (N, H)."""
        # BEGIN SOLUTION: next_h, next_c
        # Task: compute the activation vector, split it into the i, f, o, g
        # gates and update the cell and hidden states.
        a = x @ self.Wx + prev_h @ self.Wh + self.b  # (N, 4H)
        next_h, next_c = _lstm_update(a, prev_c)
        # END SOLUTION
        return next_h, next_c

    def forward(self, x, h0):
        """x: (N, T, D), h0: (N, H) -> hidden states (N, T, H); the cell starts at zero."""
        # BEGIN SOLUTION: hn
        # Task: loop over time with step_forward, starting with c0 = 0.
        h, c = h0, torch.zeros_like(h0)
        hs = []
        for t in range(x.shape[1]):
            h, c = self.step_forward(x[:, t], h, c)
            hs.append(h)
        hn = torch.stack(hs, dim=1)
        # END SOLUTION
        return hn


# BEGIN SOLUTION
def _lstm_update(a, prev_c):
    """Gates from the activation a (N, 4H), in the order i, f, o, g."""
    i, f, o, g = a.chunk(4, dim=1)
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
    next_c = f * prev_c + i * g  # forget some of the old cell, write some of the new
    next_h = o * torch.tanh(next_c)
    return next_h, next_c
# END SOLUTION


def dot_product_attention(prev_h, A):
    """Scaled dot-product attention over a 4x4 feature grid.

    Args:
        prev_h: (N, H) previous hidden state (the query);
        A: (N, H, 4, 4) projected image features (keys and values).
    Returns:
        attn: (N, H) attention-weighted feature vector;
        attn_weights: (N, 4, 4) softmax weights, row-major over the grid.
    """
    # BEGIN SOLUTION: attn, attn_weights
    # Task: score each of the 16 positions by (prev_h . A[:, :, i, j]) / sqrt(H),
    # softmax over positions, and average A's columns with those weights.
    N, H, h_a, w_a = A.shape
    A_flat = A.reshape(N, H, h_a * w_a)  # (N, H, 16)
    scores = torch.einsum("nh,nhp->np", prev_h, A_flat) / math.sqrt(H)
    weights = scores.softmax(dim=1)  # (N, 16)
    attn = torch.einsum("nhp,np->nh", A_flat, weights)
    attn_weights = weights.reshape(N, h_a, w_a)
    # END SOLUTION
    return attn, attn_weights


class AttentionLSTM(nn.Module):
    """An LSTM whose every step also reads an attention vector through Wattn."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim * 4).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim)))
        self.Wattn = nn.Parameter(
            torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim))
        )
        self.b = nn.Parameter(torch.zeros(hidden_dim * 4))

    def step_forward(self, x, prev_h, prev_c, attn):
        """x: (N, D), prev_h, prev_c, attn: (N, H) -> next_h, next_c: (N, H)."""
        # BEGIN SOLUTION: next_h, next_c
        # Task: as LSTM.step_forward, with attn Wattn added to the activation.
        a = x @ self.Wx + prev_h @ self.Wh + attn @ self.Wattn + self.b
        next_h, next_c = _lstm_update(a, prev_c)
        # END SOLUTION
        return next_h, next_c

    def forward(self, x, A):
        """x: (N, T, D), A: (N, H, 4, 4) -> hidden states (N, T, H).

        h0 = c0 = A averaged over its spatial axes; every step attends over A
        with the previous hidden state.
        """
        # BEGIN SOLUTION: hn
        # Task: initialise h and c from A, then loop over time: attend with the
        # previous hidden state, then take one step.
        h = c = A.mean(dim=(2, 3))
        hs = []
        for t in range(x.shape[1]):
            attn, _ = dot_product_attention(h, A)
            h, c = self.step_forward(x[:, t], h, c, attn)
            hs.append(h)
        hn = torch.stack(hs, dim=1)
        # END SOLUTION
        return hn
