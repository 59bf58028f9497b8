# Style: builds all three cells and both projections in __init__ and uses only what cell_type needs; loop-heavy, h stored into preallocated tensors.; BUG: sample() starts the LSTM cell at h0; AttentionLSTM.step_forward drops attn @ Wattn
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
    a = torch.mm(x, Wx) + torch.mm(prev_h, Wh) + b
    next_h = torch.tanh(a)
    cache = [x, prev_h, Wx, Wh, next_h]
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
    da = dnext_h * (1 - next_h.pow(2))
    dx = torch.mm(da, Wx.t())
    dprev_h = torch.mm(da, Wh.t())
    dWx = torch.mm(x.t(), da)
    dWh = torch.mm(prev_h.t(), da)
    db = torch.sum(da, dim=0)
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
    N, T, D = x.shape
    H = h0.shape[1]
    h = x.new_zeros(N, T, H)
    cache = []
    prev_h = h0
    for t in range(T):
        next_h, step_cache = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
        h[:, t, :] = next_h
        cache.append(step_cache)
        prev_h = next_h
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
    dprev_h = dh.new_zeros(N, H)
    for t in range(T - 1, -1, -1):
        dcur = dh[:, t, :] + dprev_h
        dx_t, dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dcur, cache[t])
        dx[:, t, :] = dx_t
        dWx = dWx + dWx_t
        dWh = dWh + dWh_t
        db = db + db_t
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
        V = self.W_embed.shape[0]
        one_hot = F.one_hot(x.long(), num_classes=V).to(self.W_embed.dtype)
        out = torch.matmul(one_hot, self.W_embed)
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
        self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained, verbose=True)
        # (2) feature projections: pooled features -> h0 (rnn / lstm), grid -> A (attn)
        self.feature_projection = nn.Linear(input_dim, hidden_dim)
        self.attn_projection = nn.Conv2d(input_dim, hidden_dim, kernel_size=1)
        self.word_embedding = WordEmbedding(vocab_size, wordvec_dim)
        self.rnn = RNN(wordvec_dim, hidden_dim)
        self.lstm = LSTM(wordvec_dim, hidden_dim)
        self.attn_lstm = AttentionLSTM(wordvec_dim, hidden_dim)
        # (1) output projection
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
        word_vecs = self.word_embedding(captions_in)
        if self.cell_type == "rnn":
            h0 = self.feature_projection(features.mean(dim=(2, 3)))
            hidden = self.rnn(word_vecs, h0)
        elif self.cell_type == "lstm":
            h0 = self.feature_projection(features.mean(dim=(2, 3)))
            hidden = self.lstm(word_vecs, h0)
        else:
            A = self.attn_projection(features)
            hidden = self.attn_lstm(word_vecs, A)
        N, T, H = hidden.shape
        V = self.output_projection.out_features
        scores = hidden.new_zeros(N, T, V)
        for t in range(T):
            scores[:, t, :] = self.output_projection(hidden[:, t, :])
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
        features = self.image_encoder(images)
        if self.cell_type == "attn":
            A = self.attn_projection(features)
            h = A.mean(dim=(2, 3))
            c = A.mean(dim=(2, 3))
        else:
            h = self.feature_projection(features.mean(dim=(2, 3)))
            c = self.feature_projection(features.mean(dim=(2, 3)))
        words = captions.new_zeros(N)
        words[:] = self._start
        for t in range(max_length):
            x = self.word_embedding(words)
            if self.cell_type == "rnn":
                h = self.rnn.step_forward(x, h)
            elif self.cell_type == "lstm":
                h, c = self.lstm.step_forward(x, h, c)
            else:
                attn, attn_weights = dot_product_attention(h, A)
                attn_weights_all[:, t, :, :] = attn_weights.detach()
                h, c = self.attn_lstm.step_forward(x, h, c, attn)
            scores = self.output_projection(h)
            words = torch.argmax(scores, dim=1)
            captions[:, t] = words.detach()
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
        Wx, Wh, b = self.Wx, self.Wh, self.b
        i = torch.sigmoid(torch.mm(x, Wx[:, 0:H]) + torch.mm(prev_h, Wh[:, 0:H]) + b[0:H])
        f = torch.sigmoid(torch.mm(x, Wx[:, H:2 * H]) + torch.mm(prev_h, Wh[:, H:2 * H]) + b[H:2 * H])
        o = torch.sigmoid(torch.mm(x, Wx[:, 2 * H:3 * H]) + torch.mm(prev_h, Wh[:, 2 * H:3 * H]) + b[2 * H:3 * H])
        g = torch.tanh(torch.mm(x, Wx[:, 3 * H:4 * H]) + torch.mm(prev_h, Wh[:, 3 * H:4 * H]) + b[3 * H:4 * H])
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
        N, T, D = x.shape
        H = h0.shape[1]
        hn = x.new_zeros(N, T, H)
        prev_h, prev_c = h0, c0
        for t in range(T):
            next_h, next_c = self.step_forward(x[:, t, :], prev_h, prev_c)
            hn[:, t, :] = next_h
            prev_h, prev_c = next_h, next_c
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
    W_a = A.shape[3]
    scores = prev_h.new_zeros(N, D_a * W_a)
    for i in range(D_a):
        for j in range(W_a):
            scores[:, i * W_a + j] = (prev_h * A[:, :, i, j]).sum(dim=1) / math.sqrt(H)
    weights = torch.softmax(scores, dim=1)
    attn = prev_h.new_zeros(N, H)
    for i in range(D_a):
        for j in range(W_a):
            attn = attn + weights[:, i * W_a + j].unsqueeze(1) * A[:, :, i, j]
    attn_weights = weights.reshape(N, D_a, W_a)
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
        Wx, Wh, Wattn, b = self.Wx, self.Wh, self.Wattn, self.b
        gates = []
        for k in range(4):
            cols = slice(k * H, (k + 1) * H)
            gates.append(torch.mm(x, Wx[:, cols]) + torch.mm(prev_h, Wh[:, cols]) + b[cols])
        i = torch.sigmoid(gates[0])
        f = torch.sigmoid(gates[1])
        o = torch.sigmoid(gates[2])
        g = torch.tanh(gates[3])
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
        N, T, D = x.shape
        H = h0.shape[1]
        hn = x.new_zeros(N, T, H)
        prev_h, prev_c = h0, c0
        for t in range(T):
            attn, _ = dot_product_attention(prev_h, A)
            next_h, next_c = self.step_forward(x[:, t, :], prev_h, prev_c, attn)
            hn[:, t, :] = next_h
            prev_h, prev_c = next_h, next_c
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return hn
