# Student stub generated from the reference by `capgrade build-stub`.
# Fill in every TODO block; check your work with `capgrade check`.
"""Image captioning with a vanilla RNN, an LSTM and an attention LSTM.

Shapes: N batch, T time steps, D input size, H hidden size, V vocabulary size,
W word-vector size. Nothing here may create a tensor with a hard-coded dtype or
device: make new tensors from the inputs (``new_zeros``, ``zeros_like``, ...), so
that every function works in float32 and float64, on the CPU and on CUDA.
"""


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
    next_h, cache = None, None
    ##########################################################################
    # TODO: compute the next hidden state and keep in `cache` what the
    # backward pass needs.
    ##########################################################################
    # Replace the "raise" line below with your code.
    raise NotImplementedError("[capgrade stub] TODO: rnn_step_forward")
    ##########################################################################
    #                            END OF YOUR CODE                            #
    ##########################################################################
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    """Backward pass of rnn_step_forward, written by hand (no autograd).

    Args:
        dnext_h: (N, H) upstream gradient of next_h; cache from the forward.
    Returns:
        dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    dx, dprev_h, dWx, dWh, db = None, None, None, None, None
    ##########################################################################
    # TODO: back-propagate through tanh and the two matrix products.
    # Hint: d tanh(a) / da = 1 - tanh(a)^2.
    ##########################################################################
    # Replace the "raise" line below with your code.
    raise NotImplementedError("[capgrade stub] TODO: rnn_step_backward")
    ##########################################################################
    #                            END OF YOUR CODE                            #
    ##########################################################################
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """Run the tanh RNN over a whole sequence.

    Args:
        x: (N, T, D) inputs; h0: (N, H) initial hidden state; Wx, Wh, b as above.
    Returns:
        h: (N, T, H) hidden states of every step, and a cache for rnn_backward.
    """
    h, cache = None, None
    ##########################################################################
    # TODO: loop over time with rnn_step_forward, stacking the hidden states.
    ##########################################################################
    # Replace the "raise" line below with your code.
    raise NotImplementedError("[capgrade stub] TODO: rnn_forward")
    ##########################################################################
    #                            END OF YOUR CODE                            #
    ##########################################################################
    return h, cache


def rnn_backward(dh, cache):
    """Backpropagation through time for rnn_forward (no autograd).

    Args:
        dh: (N, T, H) upstream gradients of every hidden state h_t (not the
            gradients that flow between steps).
    Returns:
        dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    dx, dh0, dWx, dWh, db = None, None, None, None, None
    ##########################################################################
    # TODO: walk back in time; the gradient reaching h_t is its upstream
    # gradient dh[:, t] plus what flows back from step t + 1.
    ##########################################################################
    # Replace the "raise" line below with your code.
    raise NotImplementedError("[capgrade stub] TODO: rnn_backward")
    ##########################################################################
    #                            END OF YOUR CODE                            #
    ##########################################################################
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
        out = None
        ######################################################################
        # TODO: look up the rows of W_embed named by x, keeping the result
        # differentiable with respect to W_embed (nn.Embedding is not allowed).
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: WordEmbedding.forward")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################
        return out


def temporal_softmax_loss(x, y, ignore_index=None):
    """Cross-entropy summed over time and batch, divided by the batch size.

    Args:
        x: (N, T, V) scores; y: (N, T) target indices in [0, V);
        ignore_index: targets equal to it contribute nothing (None: none ignored).
    Returns:
        a scalar tensor.
    """
    loss = None
    ##########################################################################
    # TODO: one line with F.cross_entropy (mind its reduction and ignore_index).
    ##########################################################################
    # Replace the "raise" line below with your code.
    raise NotImplementedError("[capgrade stub] TODO: temporal_softmax_loss")
    ##########################################################################
    #                            END OF YOUR CODE                            #
    ##########################################################################
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

        ######################################################################
        # TODO: create the image encoder, the projection of its features to H
        # (a linear layer on averaged features for rnn/lstm, a 1x1 projection of
        # the feature grid for attn), the word embedding, the recurrent cell and
        # the output projection from H to V.
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: CaptioningRNN.__init__")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################

    def forward(self, images, captions):
        """Training loss for a batch.

        Args:
            images: (N, 3, 112, 112); captions: (N, T + 1) word indices.
        Returns:
            the temporal softmax loss (scalar): the model reads captions[:, :-1]
            and predicts captions[:, 1:].
        """
        loss = None
        ######################################################################
        # TODO: encode the images, build the initial state (h0, or the projected
        # feature grid A for attn), embed the input words, run the cell over the
        # sequence, score the vocabulary and return the temporal softmax loss.
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: CaptioningRNN.forward")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################
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
        captions, attn_weights_all = None, None
        ######################################################################
        # TODO: start from <START>; at every step embed the previous word,
        # advance the cell one step, score the vocabulary, take the argmax and
        # feed it back as the next input.
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: CaptioningRNN.sample")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################
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
        next_h, next_c = None, None
        ######################################################################
        # TODO: compute the activation vector, split it into the i, f, o, g
        # gates and update the cell and hidden states.
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: LSTM.step_forward")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################
        return next_h, next_c

    def forward(self, x, h0):
        """x: (N, T, D), h0: (N, H) -> hidden states (N, T, H); the cell starts at zero."""
        hn = None
        ######################################################################
        # TODO: loop over time with step_forward, starting with c0 = 0.
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: LSTM.forward")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################
        return hn


def dot_product_attention(prev_h, A):
    """Scaled dot-product attention over a 4x4 feature grid.

    Args:
        prev_h: (N, H) previous hidden state (the query);
        A: (N, H, 4, 4) projected image features (keys and values).
    Returns:
        attn: (N, H) attention-weighted feature vector;
        attn_weights: (N, 4, 4) softmax weights, row-major over the grid.
    """
    attn, attn_weights = None, None
    ##########################################################################
    # TODO: score each of the 16 positions by (prev_h . A[:, :, i, j]) / sqrt(H),
    # softmax over positions, and average A's columns with those weights.
    ##########################################################################
    # Replace the "raise" line below with your code.
    raise NotImplementedError("[capgrade stub] TODO: dot_product_attention")
    ##########################################################################
    #                            END OF YOUR CODE                            #
    ##########################################################################
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
        next_h, next_c = None, None
        ######################################################################
        # TODO: as LSTM.step_forward, with attn Wattn added to the activation.
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: AttentionLSTM.step_forward")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################
        return next_h, next_c

    def forward(self, x, A):
        """x: (N, T, D), A: (N, H, 4, 4) -> hidden states (N, T, H).

        h0 = c0 = A averaged over its spatial axes; every step attends over A
        with the previous hidden state.
        """
        hn = None
        ######################################################################
        # TODO: initialise h and c from A, then loop over time: attend with the
        # previous hidden state, then take one step.
        ######################################################################
        # Replace the "raise" line below with your code.
        raise NotImplementedError("[capgrade stub] TODO: AttentionLSTM.forward")
        ######################################################################
        #                          END OF YOUR CODE                          #
        ######################################################################
        return hn
