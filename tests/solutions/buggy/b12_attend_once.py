# Style: projections wrapped in nn.Sequential, custom layer names (proj_img/word_emb/decoder/to_vocab), shared _lstm_gates helper, flattened cross-entropy.; BUG: AttentionLSTM.forward computes the attention once from h0 before the loop
"""A course-style starter for the captioning assignment (written for capgrade's tests).

This is NOT capgrade's stub: it follows the conventions of the course's own
starter that real students fill in (../shared/ASSIGNMENT.md, "What real students
hand in"): every TODO sets its result to None and ends in ``pass``; the
provided lines of ``CaptioningRNN.sample`` allocate the captions with
``images.new(...).fill_(1).long()`` and the attention weights as a float32
buffer (``.float()``); ``ImageEncoder`` uses torchvision's old ``pretrained=``
keyword; ``LSTM.forward`` and ``AttentionLSTM.forward`` provide their initial
states. The test solutions in tests/solutions/ are this file with the TODOs
filled in, each in its own style.
"""

import math
from typing import Optional, Tuple

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models import feature_extraction


def hello_rnn_lstm_captioning():
    print("Hello from rnn_lstm_captioning.py!")


class ImageEncoder(nn.Module):
    """RegNet-X 400MF backbone giving a 4x4 grid of 400-channel features (provided)."""

    def __init__(self, pretrained: bool = True, verbose: bool = True):
        super().__init__()
        self.cnn = torchvision.models.regnet_x_400mf(pretrained=pretrained)
        self.backbone = feature_extraction.create_feature_extractor(
            self.cnn, return_nodes={"trunk_output.block4": "c5"}
        )
        dummy_out = self.backbone(torch.randn(2, 3, 224, 224))["c5"]
        self._out_channels = dummy_out.shape[1]
        if verbose:
            print("For input images in NCHW format, shape (2, 3, 224, 224)")
            print(f"Shape of output c5 features: {dummy_out.shape}")
        self.normalize = torchvision.transforms.Normalize(
            mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]
        )

    @property
    def out_channels(self):
        return self._out_channels

    def forward(self, images: torch.Tensor):
        if images.dtype == torch.uint8:
            images = images.to(dtype=self.cnn.stem[0].weight.dtype)
            images /= 255.0
        images = self.normalize(images)
        return self.backbone(images)["c5"]


##############################################################################
# Recurrent Neural Networks                                                  #
##############################################################################


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """
    Run the forward pass for a single timestep of a vanilla RNN with a tanh
    activation function: next_h = tanh(x Wx + prev_h Wh + b).

    Inputs: x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,).
    Returns a tuple of: next_h (N, H), cache (values needed for the backward pass).
    """
    next_h, cache = None, None
    ##########################################################################
    # TODO: Implement a single forward step for the vanilla RNN. Store the   #
    # next hidden state and anything the backward pass needs in next_h and   #
    # cache.                                                                 #
    ##########################################################################
    # Replace "pass" statement with your code
    next_h = torch.tanh(x @ Wx + prev_h @ Wh + b)
    cache = (x, prev_h, Wx, Wh, next_h)
    ##########################################################################
    #                             END OF YOUR CODE                           #
    ##########################################################################
    return next_h, cache


def rnn_step_backward(dnext_h, cache):
    """
    Backward pass for a single timestep of a vanilla RNN.

    Inputs: dnext_h (N, H) gradient of the loss w.r.t. the next hidden state;
    cache from the forward pass.
    Returns a tuple of: dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    dx, dprev_h, dWx, dWh, db = None, None, None, None, None
    ##########################################################################
    # TODO: Implement the backward pass for a single step of a vanilla RNN.  #
    # HINT: For the tanh function, you can compute the local derivative in   #
    # terms of the output value from tanh.                                   #
    ##########################################################################
    # Replace "pass" statement with your code
    x, prev_h, Wx, Wh, next_h = cache
    dtanh = (1 - next_h ** 2) * dnext_h
    dx = dtanh @ Wx.t()
    dprev_h = dtanh @ Wh.t()
    dWx = x.t() @ dtanh
    dWh = prev_h.t() @ dtanh
    db = dtanh.sum(dim=0)
    ##########################################################################
    #                             END OF YOUR CODE                           #
    ##########################################################################
    return dx, dprev_h, dWx, dWh, db


def rnn_forward(x, h0, Wx, Wh, b):
    """
    Run a vanilla RNN forward on an entire sequence of data: x (N, T, D),
    h0 (N, H). Returns h (N, T, H) and the cache for the backward pass.
    """
    h, cache = None, None
    ##########################################################################
    # TODO: Implement forward pass for a vanilla RNN running on a sequence of#
    # input data. You should use the rnn_step_forward function above.       #
    ##########################################################################
    # Replace "pass" statement with your code
    N, T, _ = x.shape
    H = h0.shape[1]
    h = x.new_zeros(N, T, H)
    cache = []
    prev_h = h0
    for t in range(T):
        prev_h, c = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        h[:, t] = prev_h
        cache.append(c)
    ##########################################################################
    #                             END OF YOUR CODE                           #
    ##########################################################################
    return h, cache


def rnn_backward(dh, cache):
    """
    Compute the backward pass for a vanilla RNN over an entire sequence.

    Inputs: dh (N, T, H) upstream gradients of all hidden states.
    NOTE: 'dh' contains the upstream gradients produced by the individual loss
    functions at each timestep, *not* the gradients being passed between
    timesteps (which you'll have to compute yourself by calling
    rnn_step_backward in a loop).
    Returns a tuple of: dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    dx, dh0, dWx, dWh, db = None, None, None, None, None
    ##########################################################################
    # TODO: Implement the backward pass for a vanilla RNN running an entire  #
    # sequence of data. You should use the rnn_step_backward function above.#
    ##########################################################################
    # Replace "pass" statement with your code
    N, T, H = dh.shape
    D = cache[0][0].shape[1]
    dx = dh.new_zeros(N, T, D)
    dWx = dh.new_zeros(D, H)
    dWh = dh.new_zeros(H, H)
    db = dh.new_zeros(H)
    dh0 = dh.new_zeros(N, H)
    for t in range(T - 1, -1, -1):
        dx[:, t], dh0, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dh0, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    ##########################################################################
    #                             END OF YOUR CODE                           #
    ##########################################################################
    return dx, dh0, dWx, dWh, db


class RNN(nn.Module):
    """
    Single-layer vanilla RNN module (provided: uses rnn_forward and
    rnn_step_forward above).
    """

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(torch.randn(hidden_dim, hidden_dim).div(math.sqrt(hidden_dim)))
        self.b = nn.Parameter(torch.zeros(hidden_dim))

    def forward(self, x, h0):
        hn, _ = rnn_forward(x, h0, self.Wx, self.Wh, self.b)
        return hn

    def step_forward(self, x, prev_h):
        next_h, _ = rnn_step_forward(x, prev_h, self.Wx, self.Wh, self.b)
        return next_h


class WordEmbedding(nn.Module):
    """
    Simplified version of torch.nn.Embedding: maps word indices x of shape
    (N, T) to word vectors (N, T, D) by looking up rows of W_embed.
    """

    def __init__(self, vocab_size: int, embed_size: int):
        super().__init__()
        self.W_embed = nn.Parameter(
            torch.randn(vocab_size, embed_size).div(math.sqrt(vocab_size))
        )

    def forward(self, x):
        out = None
        ######################################################################
        # TODO: Implement the forward pass for word embeddings.              #
        ######################################################################
        # Replace "pass" statement with your code
        flat = self.W_embed.index_select(0, x.reshape(-1))
        out = flat.reshape(*x.shape, self.W_embed.shape[1])
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return out


def temporal_softmax_loss(x, y, ignore_index=None):
    """
    A temporal version of softmax loss: x (N, T, V) scores, y (N, T) ground-truth
    indices. Sum the loss over all timesteps, then average across the minibatch.
    Elements of y equal to ignore_index are ignored.

    Returns: loss, a scalar tensor.
    """
    loss = None
    ##########################################################################
    # TODO: Implement the temporal softmax loss function.                    #
    #                                                                        #
    # REQUIREMENT: This part MUST be done in one single line of code!        #
    #                                                                        #
    # HINT: Look up the function torch.functional.cross_entropy, set         #
    # ignore_index to the variable ignore_index (i.e., index of NULL) and    #
    # set reduction to either 'sum' or 'mean' (avoid using 'none' for now).  #
    #                                                                        #
    # We use a cross-entropy loss at each timestep, summing the loss over    #
    # all timesteps and averaging across the minibatch.                      #
    ##########################################################################
    # Replace "pass" statement with your code
    loss = F.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1), ignore_index=ignore_index, reduction="sum") / x.shape[0]
    ##########################################################################
    #                             END OF YOUR CODE                           #
    ##########################################################################
    return loss


class CaptioningRNN(nn.Module):
    """
    A CaptioningRNN produces captions from images using a recurrent neural
    network: the image features give the initial hidden state (or the attention
    features), and the network reads the caption word by word.
    """

    def __init__(
        self,
        word_to_idx,
        input_dim: int = 512,
        wordvec_dim: int = 128,
        hidden_dim: int = 128,
        cell_type: str = "rnn",
        image_encoder_pretrained: bool = True,
        ignore_index: Optional[int] = None,
    ):
        super().__init__()
        if cell_type not in {"rnn", "lstm", "attn"}:
            raise ValueError('Invalid cell_type "%s"' % cell_type)

        self.cell_type = cell_type
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}

        vocab_size = len(word_to_idx)

        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>", None)
        self._end = word_to_idx.get("<END>", None)
        self.ignore_index = ignore_index

        ######################################################################
        # TODO: Initialize the image captioning module. Refer to the TODO    #
        # in the forward function on layers you need to create.              #
        #                                                                    #
        # You may want to check the following pre-defined classes:          #
        # ImageEncoder, WordEmbedding, RNN, LSTM, AttentionLSTM, nn.Linear   #
        #                                                                    #
        # (1) output projection (from RNN hidden state to vocab probability) #
        # (2) feature projection (from CNN pooled feature to h0)             #
        ######################################################################
        # Replace "pass" statement with your code
        self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained, verbose=False)
        if cell_type == "attn":
            self.proj_img = nn.Sequential(nn.Conv2d(input_dim, hidden_dim, 1))
        else:
            self.proj_img = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, hidden_dim))
        self.word_emb = WordEmbedding(vocab_size, wordvec_dim)
        cells = {"rnn": RNN, "lstm": LSTM, "attn": AttentionLSTM}
        self.decoder = cells[cell_type](wordvec_dim, hidden_dim)
        self.to_vocab = nn.Sequential(nn.Linear(hidden_dim, vocab_size))
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################

    def forward(self, images, captions):
        """
        Compute the training-time loss for the RNN: images (N, 3, 112, 112),
        captions (N, T) ground-truth captions. Returns the scalar loss.
        """
        # Cut captions into two pieces: captions_in has everything but the last
        # word and will be input to the RNN; captions_out has everything but the
        # first word and this is what we will expect the RNN to generate.
        captions_in = captions[:, :-1]
        captions_out = captions[:, 1:]

        loss = None
        ######################################################################
        # TODO: Implement the forward pass for the CaptioningRNN.            #
        # (1) Use an affine transformation to project the image feature to   #
        #     the initial hidden state h0 (for RNN/LSTM, of shape (N, H)) or #
        #     the projected CNN activation input A (for Attention LSTM, of   #
        #     shape (N, H, 4, 4)).                                           #
        # (2) Use a word embedding layer to transform the words in           #
        #     captions_in from indices to vectors, giving (N, T, W).         #
        # (3) Use either a vanilla RNN or LSTM (depending on self.cell_type) #
        #     to process the sequence of input word vectors and produce      #
        #     hidden state vectors for all timesteps, producing (N, T, H).   #
        # (4) Use a (temporal) affine transformation to compute scores over  #
        #     the vocabulary at every timestep, giving (N, T, V).            #
        # (5) Use (temporal) softmax to compute loss using captions_out,     #
        #     ignoring the points where the output word is <NULL>.           #
        ######################################################################
        # Replace "pass" statement with your code
        feats = self.image_encoder(images)
        if self.cell_type == "attn":
            A = self.proj_img(feats)
            hs = self.decoder(self.word_emb(captions_in), A)
        else:
            h0 = self.proj_img(feats.mean(dim=(2, 3), keepdim=True))
            hs = self.decoder(self.word_emb(captions_in), h0)
        scores = self.to_vocab(hs)
        loss = temporal_softmax_loss(scores, captions_out, ignore_index=self.ignore_index)
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return loss

    def sample(self, images, max_length=15):
        """
        Run a test-time forward pass for the model, sampling captions for input
        feature vectors: at each timestep, embed the current word, pass it and
        the previous hidden state to the RNN to get the next hidden state, use
        the hidden state to get scores for all vocab words, and choose the word
        with the highest score as the next word. The initial hidden state is
        computed by applying an affine transform to the image features, and the
        initial word is the <START> token.

        For LSTMs you will also have to keep track of the cell state; in that
        case the initial cell state should be zero.

        Returns:
        - captions: (N, max_length) giving sampled captions; the first element
          of captions should be the first sampled word, not the <START> token.
        - attn_weights_all (attention only): (N, max_length, 4, 4)
        """
        N = images.shape[0]
        captions = self._null * images.new(N, max_length).fill_(1).long()

        if self.cell_type == "attn":
            attn_weights_all = images.new(N, max_length, 4, 4).fill_(0).float()

        ######################################################################
        # TODO: Implement test-time sampling for the model.                  #
        # NOTE: we are still working over minibatches in this function. Also #
        # if you are using an LSTM, initialize the first cell state to zeros.#
        # For AttentionLSTM, first project the 1280x4x4 CNN feature activation#
        # to A of shape Hx4x4. The LSTM initial hidden state and cell state  #
        # would both be A.mean(dim=(2, 3)).                                  #
        ######################################################################
        # Replace "pass" statement with your code
        feats = self.image_encoder(images)
        if self.cell_type == "attn":
            A = self.proj_img(feats)
            h = A.mean(dim=(2, 3))
            c = h
        else:
            h = self.proj_img(feats.mean(dim=(2, 3), keepdim=True))
            c = torch.zeros_like(h)
        words = torch.full((N,), self._start, dtype=torch.long, device=images.device)
        for t in range(max_length):
            emb = self.word_emb(words)
            if self.cell_type == "rnn":
                h = self.decoder.step_forward(emb, h)
            elif self.cell_type == "lstm":
                h, c = self.decoder.step_forward(emb, h, c)
            else:
                attn, w = dot_product_attention(h, A)
                attn_weights_all[:, t] = w.detach()
                h, c = self.decoder.step_forward(emb, h, c, attn)
            words = self.to_vocab(h).argmax(dim=1)
            captions[:, t] = words
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        if self.cell_type == "attn":
            return captions, attn_weights_all.cpu()
        else:
            return captions


def _lstm_gates(a, prev_c):
    """Turn the (N, 4H) pre-activations (order i, f, o, g) into (next_h, next_c)."""
    H = a.shape[1] // 4
    i = torch.sigmoid(a[:, :H])
    f = torch.sigmoid(a[:, H : 2 * H])
    o = torch.sigmoid(a[:, 2 * H : 3 * H])
    g = torch.tanh(a[:, 3 * H :])
    next_c = f * prev_c + i * g
    next_h = o * torch.tanh(next_c)
    return next_h, next_c


class LSTM(nn.Module):
    """Single-layer, uni-directional LSTM module (gates in the order i, f, o, g)."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim * 4).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(
            torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim))
        )
        self.b = nn.Parameter(torch.zeros(hidden_dim * 4))

    def step_forward(
        self, x: torch.Tensor, prev_h: torch.Tensor, prev_c: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        One timestep of an LSTM: x (N, D), prev_h (N, H), prev_c (N, H).
        Returns next_h, next_c (N, H).
        """
        next_h, next_c = None, None
        ######################################################################
        # TODO: Implement the forward pass for a single timestep of an LSTM. #
        ######################################################################
        # Replace "pass" statement with your code
        a = x @ self.Wx + prev_h @ self.Wh + self.b
        next_h, next_c = _lstm_gates(a, prev_c)
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return next_h, next_c

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """
        Forward pass over a whole sequence: x (N, T, D), h0 (N, H); the initial
        cell state is zero. Returns hn (N, T, H).
        """
        c0 = torch.zeros_like(h0)  # we provide the initial cell state c0 here for you!
        hn = None
        ######################################################################
        # TODO: Implement the forward pass for an LSTM over entire timeseries#
        ######################################################################
        # Replace "pass" statement with your code
        N, T, _ = x.shape
        hn = x.new_zeros(N, T, h0.shape[1])
        h, c = h0, c0
        for t in range(T):
            h, c = self.step_forward(x[:, t], h, c)
            hn[:, t] = h
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return hn


def dot_product_attention(prev_h, A):
    """
    A simple scaled dot-product attention layer: prev_h (N, H), A (N, H, 4, 4).
    Returns attn (N, H) and attn_weights (N, 4, 4).
    """
    N, H, D_a, _ = A.shape

    attn, attn_weights = None, None
    ##########################################################################
    # TODO: Implement the scaled dot-product attention we described earlier. #
    # HINT: Make sure you reshape attn_weights back to (N, 4, 4)!            #
    ##########################################################################
    # Replace "pass" statement with your code
    A_flat = A.reshape(N, H, -1)
    scores = torch.bmm(prev_h.unsqueeze(1), A_flat).squeeze(1) / math.sqrt(H)
    weights = F.softmax(scores, dim=1)
    attn = torch.bmm(A_flat, weights.unsqueeze(2)).squeeze(2)
    attn_weights = weights.reshape(N, D_a, D_a)
    ##########################################################################
    #                             END OF YOUR CODE                           #
    ##########################################################################
    return attn, attn_weights


class AttentionLSTM(nn.Module):
    """An LSTM whose every step also reads an attention vector through Wattn."""

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_dim, hidden_dim * 4).div(math.sqrt(input_dim)))
        self.Wh = nn.Parameter(
            torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim))
        )
        self.Wattn = nn.Parameter(
            torch.randn(hidden_dim, hidden_dim * 4).div(math.sqrt(hidden_dim))
        )
        self.b = nn.Parameter(torch.zeros(hidden_dim * 4))

    def step_forward(
        self,
        x: torch.Tensor,
        prev_h: torch.Tensor,
        prev_c: torch.Tensor,
        attn: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        x (N, D), prev_h (N, H), prev_c (N, H), attn (N, H) the attention embedding.
        Returns next_h, next_c (N, H).
        """
        next_h, next_c = None, None
        ######################################################################
        # TODO: Implement forward pass for a single timestep of attention LSTM#
        # Feel free to re-use some of your code from `LSTM.step_forward()`.  #
        ######################################################################
        # Replace "pass" statement with your code
        a = x @ self.Wx + prev_h @ self.Wh + attn @ self.Wattn + self.b
        next_h, next_c = _lstm_gates(a, prev_c)
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return next_h, next_c

    def forward(self, x: torch.Tensor, A: torch.Tensor):
        """
        Forward pass over a whole sequence: x (N, T, D), A (N, H, 4, 4) the
        projected CNN features. Returns hn (N, T, H).
        """
        # The initial hidden state h0 and cell state c0 are initialized
        # differently in AttentionLSTM from the original LSTM and hence
        # we provided them for you.
        h0 = A.mean(dim=(2, 3))  # Initial hidden state, of shape (N, H)
        c0 = h0  # Initial cell state, of shape (N, H)

        hn = None
        ######################################################################
        # TODO: Implement the forward pass for an LSTM over an entire time-  #
        # series. You should use the `dot_product_attention` function that   #
        # is defined outside this module.                                    #
        ######################################################################
        # Replace "pass" statement with your code
        N, T, _ = x.shape
        hn = x.new_zeros(N, T, h0.shape[1])
        h, c = h0, c0
        attn, _ = dot_product_attention(h, A)
        for t in range(T):
            h, c = self.step_forward(x[:, t], h, c, attn)
            hn[:, t] = h
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return hn
