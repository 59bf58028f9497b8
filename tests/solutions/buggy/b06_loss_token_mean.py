# Style: sample() stops once every caption has produced <END> and keeps <NULL> after each caption's own <END>; loss via reduction="mean" rescaled to sum/N; attention with torch.bmm and F.softmax on an (N,16) view.; BUG: temporal_softmax_loss keeps reduction="mean" without rescaling to sum / N
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
    next_h = (x.matmul(Wx) + prev_h.matmul(Wh) + b).tanh()
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
    da = dnext_h * (1.0 - next_h * next_h)
    dx = da.matmul(Wx.t())
    dprev_h = da.matmul(Wh.t())
    dWx = x.t().matmul(da)
    dWh = prev_h.t().matmul(da)
    db = da.sum(0)
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
    cache = []
    h_list = []
    h_t = h0
    for x_t in x.unbind(dim=1):
        h_t, c_t = rnn_step_forward(x_t, h_t, Wx, Wh, b)
        h_list.append(h_t)
        cache.append(c_t)
    h = torch.stack(h_list, dim=1)
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
    dx_list = [None] * T
    dWx, dWh, db = 0, 0, 0
    dh_next = torch.zeros_like(dh[:, 0])
    for t in range(T - 1, -1, -1):
        dx_list[t], dh_next, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dh_next, cache[t])
        dWx = dWx + dWx_t
        dWh = dWh + dWh_t
        db = db + db_t
    dx = torch.stack(dx_list, dim=1)
    dh0 = dh_next
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
        out = self.W_embed[x.flatten()].view(*x.shape, self.W_embed.shape[1])
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
    loss = torch.nan_to_num(F.cross_entropy(x.flatten(0, 1), y.flatten(), ignore_index=ignore_index, reduction="mean"))
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
        # a linear layer over the channels: on pooled features for h0 (rnn / lstm),
        # at every grid position for A (attn), like a 1x1 convolution
        self.proj = nn.Linear(input_dim, hidden_dim)
        self.embed = WordEmbedding(vocab_size, wordvec_dim)
        if cell_type == "rnn":
            self.rnn = RNN(wordvec_dim, hidden_dim)
        elif cell_type == "lstm":
            self.rnn = LSTM(wordvec_dim, hidden_dim)
        else:
            self.rnn = AttentionLSTM(wordvec_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, vocab_size)
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
            init = self.proj(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        else:
            init = self.proj(feats.mean(dim=(2, 3)))
        hidden = self.rnn(self.embed(captions_in), init)
        loss = temporal_softmax_loss(self.out(hidden), captions_out, ignore_index=self.ignore_index)
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
            A = self.proj(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            h = A.mean(dim=(2, 3))
            c = h
        else:
            h = self.proj(feats.mean(dim=(2, 3)))
            c = torch.zeros_like(h)
        word = captions.new_full((N,), self._start)
        finished = torch.zeros_like(word, dtype=torch.bool)
        for t in range(max_length):
            x = self.embed(word)
            if self.cell_type == "rnn":
                h = self.rnn.step_forward(x, h)
            elif self.cell_type == "lstm":
                h, c = self.rnn.step_forward(x, h, c)
            else:
                attn, weights = dot_product_attention(h, A)
                attn_weights_all[:, t] = weights.detach()
                h, c = self.rnn.step_forward(x, h, c, attn)
            word = self.out(h).argmax(dim=1)
            # captions that already produced <END> keep <NULL> afterwards
            captions[:, t] = word.masked_fill(finished, self._null)
            if self._end is not None:
                finished = finished | (word == self._end)
                if bool(finished.all()):
                    break
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
        N, H = prev_h.shape
        a = x.matmul(self.Wx) + prev_h.matmul(self.Wh) + self.b
        a_i, a_f, a_o, a_g = a.reshape(N, 4, H).unbind(dim=1)
        next_c = torch.sigmoid(a_f) * prev_c + torch.sigmoid(a_i) * torch.tanh(a_g)
        next_h = torch.sigmoid(a_o) * torch.tanh(next_c)
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
        outputs = []
        for x_t in x.unbind(dim=1):
            h, c = self.step_forward(x_t, h, c)
            outputs.append(h)
        hn = torch.stack(outputs, dim=1)
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
    A_flat = A.reshape(N, H, -1)  # (N, H, 16)
    scores = torch.bmm(prev_h.unsqueeze(1), A_flat).view(N, -1) / math.sqrt(H)  # (N, 16)
    weights = F.softmax(scores, dim=1)
    attn = torch.bmm(A_flat, weights.unsqueeze(2)).view(N, H)
    attn_weights = weights.view(N, D_a, -1)
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
        N, H = prev_h.shape
        a = x.matmul(self.Wx) + prev_h.matmul(self.Wh) + attn.matmul(self.Wattn) + self.b
        a_i, a_f, a_o, a_g = a.reshape(N, 4, H).unbind(dim=1)
        next_c = torch.sigmoid(a_f) * prev_c + torch.sigmoid(a_i) * torch.tanh(a_g)
        next_h = torch.sigmoid(a_o) * torch.tanh(next_c)
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
        outputs = []
        for x_t in x.unbind(dim=1):
            attn, _ = dot_product_attention(h, A)
            h, c = self.step_forward(x_t, h, c, attn)
            outputs.append(h)
        hn = torch.stack(outputs, dim=1)
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return hn
