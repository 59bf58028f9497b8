# Style: einsum everywhere it fits, torch.split gates, adaptive_avg_pool2d pooling, torch.softmax attention, out-of-place BPTT accumulation.; BUG: rnn_step_backward builds dWh from next_h; dot_product_attention weights A with the raw scores
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
    a = torch.einsum("nd,dh->nh", x, Wx) + torch.einsum("nk,kh->nh", prev_h, Wh) + b
    next_h = torch.tanh(a)
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
    da = dnext_h * (1 - next_h * next_h)
    dx = torch.einsum("nh,dh->nd", da, Wx)
    dprev_h = torch.einsum("nh,kh->nk", da, Wh)
    dWx = torch.einsum("nd,nh->dh", x, da)
    dWh = torch.einsum("nk,nh->kh", next_h, da)
    db = torch.einsum("nh->h", da)
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
    T = x.shape[1]
    hs, cache = [], []
    prev_h = h0
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
        hs.append(prev_h)
        cache.append(step_cache)
    h = torch.stack(hs, dim=1)
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
    T = dh.shape[1]
    _, _, Wx, Wh, _ = cache[0]
    dWx = torch.zeros_like(Wx)
    dWh = torch.zeros_like(Wh)
    db = dh.new_zeros(dh.shape[2])
    dprev_h = torch.zeros_like(dh[:, 0, :])
    dx_steps = []
    for t in reversed(range(T)):
        dx_t, dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :] + dprev_h, cache[t])
        dx_steps.append(dx_t)
        dWx = dWx + dWx_t
        dWh = dWh + dWh_t
        db = db + db_t
    dx = torch.stack(dx_steps[::-1], dim=1)
    dh0 = dprev_h
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
        out = self.W_embed[x]
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
    loss = F.cross_entropy(x.transpose(1, 2), y, ignore_index=ignore_index, reduction="sum") / x.shape[0]
    ##########################################################################
    #                             END OF YOUR CODE                           #
    ##########################################################################
    return loss


def _project_grid(linear, features):
    """1x1 projection of a (N, C, h, w) grid with a Linear(C, H) layer, via einsum."""
    return torch.einsum("nchw,kc->nkhw", features, linear.weight) + linear.bias.view(1, -1, 1, 1)


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
        # A Linear(C, H): on pooled features for rnn/lstm, as a 1x1 projection (einsum) for attn.
        self.feature_projection = nn.Linear(input_dim, hidden_dim)
        self.word_embedding = WordEmbedding(vocab_size, wordvec_dim)
        if cell_type == "rnn":
            self.rnn = RNN(wordvec_dim, hidden_dim)
        elif cell_type == "lstm":
            self.rnn = LSTM(wordvec_dim, hidden_dim)
        else:
            self.rnn = AttentionLSTM(wordvec_dim, hidden_dim)
        self.output_projection = nn.Linear(hidden_dim, vocab_size)
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
        features = self.image_encoder(images)
        word_vectors = self.word_embedding(captions_in)
        if self.cell_type == "attn":
            A = _project_grid(self.feature_projection, features)
            hidden = self.rnn(word_vectors, A)
        else:
            pooled = F.adaptive_avg_pool2d(features, 1).flatten(1)
            h0 = self.feature_projection(pooled)
            hidden = self.rnn(word_vectors, h0)
        scores = self.output_projection(hidden)
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
        with torch.no_grad():
            features = self.image_encoder(images)
            if self.cell_type == "attn":
                A = _project_grid(self.feature_projection, features)
                h = A.mean(dim=(2, 3))
                c = h
            else:
                h = self.feature_projection(F.adaptive_avg_pool2d(features, 1).flatten(1))
                c = torch.zeros_like(h)
            word = captions.new_full((N,), self._start)
            for t in range(max_length):
                word_vector = self.word_embedding(word)
                if self.cell_type == "rnn":
                    h = self.rnn.step_forward(word_vector, h)
                elif self.cell_type == "lstm":
                    h, c = self.rnn.step_forward(word_vector, h, c)
                else:
                    attn, attn_weights = dot_product_attention(h, A)
                    attn_weights_all[:, t] = attn_weights
                    h, c = self.rnn.step_forward(word_vector, h, c, attn)
                scores = self.output_projection(h)
                word = scores.argmax(dim=1)
                captions[:, t] = word
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        if self.cell_type == "attn":
            return captions, attn_weights_all.cpu()
        else:
            return captions


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
        H = prev_h.shape[1]
        a = (
            torch.einsum("nd,dk->nk", x, self.Wx)
            + torch.einsum("nh,hk->nk", prev_h, self.Wh)
            + self.b
        )
        i, f, o, g = torch.split(a, H, dim=1)
        i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
        next_c = f * prev_c + i * g
        next_h = o * torch.tanh(next_c)
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
        h, c = h0, c0
        hs = []
        for t in range(x.shape[1]):
            h, c = self.step_forward(x[:, t], h, c)
            hs.append(h)
        hn = torch.stack(hs, dim=1)
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
    A_flat = A.reshape(N, H, D_a * D_a)
    scores = torch.einsum("nh,nhp->np", prev_h, A_flat) / math.sqrt(H)
    weights = torch.softmax(scores, dim=1)
    attn = torch.einsum("nhp,np->nh", A_flat, scores)
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
        H = prev_h.shape[1]
        a = (
            torch.einsum("nd,dk->nk", x, self.Wx)
            + torch.einsum("nh,hk->nk", prev_h, self.Wh)
            + torch.einsum("nh,hk->nk", attn, self.Wattn)
            + self.b
        )
        i, f, o, g = torch.split(a, H, dim=1)
        i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
        next_c = f * prev_c + i * g
        next_h = o * torch.tanh(next_c)
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
        h, c = h0, c0
        hs = []
        for t in range(x.shape[1]):
            attn, _ = dot_product_attention(h, A)
            h, c = self.step_forward(x[:, t], h, c, attn)
            hs.append(h)
        hn = torch.stack(hs, dim=1)
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return hn
