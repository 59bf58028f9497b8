# Style: verbose beginner -- many intermediate variables, .matmul, explicit per-gate slices, lots of comments, Linear / Conv2d((1, 1)) projections, no prints.; BUG: dot_product_attention takes the softmax over dim=0 (the batch)
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
    # first compute the input part and the hidden part separately
    input_part = x.matmul(Wx)            # (N, H)
    hidden_part = prev_h.matmul(Wh)      # (N, H)
    # add them together with the bias
    total = input_part + hidden_part + b
    # apply the tanh non-linearity
    next_h = torch.tanh(total)
    # save everything we need for the backward pass
    cache = (x, prev_h, Wx, Wh, b, next_h)
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
    # unpack the cache
    x, prev_h, Wx, Wh, b, next_h = cache
    # derivative of tanh(z) is 1 - tanh(z)^2, and tanh(z) is next_h
    local_derivative = 1 - next_h * next_h
    dtotal = dnext_h * local_derivative          # (N, H)
    # gradient w.r.t. the input x
    dx = dtotal.matmul(Wx.T)                     # (N, D)
    # gradient w.r.t. the previous hidden state
    dprev_h = dtotal.matmul(Wh.T)                # (N, H)
    # gradients w.r.t. the weights
    dWx = x.T.matmul(dtotal)                     # (D, H)
    dWh = prev_h.T.matmul(dtotal)                # (H, H)
    # gradient w.r.t. the bias: sum over the batch
    db = torch.sum(dtotal, dim=0)                # (H,)
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
    # get the sizes
    N = x.shape[0]
    T = x.shape[1]
    # a list for the hidden states and a list for the caches
    all_hidden_states = []
    all_caches = []
    current_h = h0
    for t in range(T):
        x_at_t = x[:, t, :]
        current_h, cache_at_t = rnn_step_forward(x_at_t, current_h, Wx, Wh, b)
        all_hidden_states.append(current_h)
        all_caches.append(cache_at_t)
    # stack along the time dimension to get (N, T, H)
    h = torch.stack(all_hidden_states, dim=1)
    cache = all_caches
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
    # get the sizes
    N = dh.shape[0]
    T = dh.shape[1]
    H = dh.shape[2]
    first_x = cache[0][0]
    D = first_x.shape[1]
    # gradients start at zero and are accumulated over time
    dx = torch.zeros(N, T, D, dtype=dh.dtype, device=dh.device)   # (N, T, D)
    dWx = torch.zeros_like(cache[0][2])
    dWh = torch.zeros_like(cache[0][3])
    db = torch.zeros_like(cache[0][4])
    # gradient flowing from the future time step (nothing after the last step)
    dh_from_future = torch.zeros_like(dh[:, 0, :])
    # go backwards in time
    for t in range(T - 1, -1, -1):
        # total gradient on h_t = upstream gradient + gradient from step t+1
        total_dh = dh[:, t, :] + dh_from_future
        dx_t, dprev_h_t, dWx_t, dWh_t, db_t = rnn_step_backward(total_dh, cache[t])
        dx[:, t, :] = dx_t
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
        dh_from_future = dprev_h_t
    # the gradient that flows out of the first step goes to h0
    dh0 = dh_from_future
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
        # look up the row of W_embed for every index in x
        # indexing with an integer tensor of shape (N, T) gives (N, T, D)
        embedding_matrix = self.W_embed
        out = embedding_matrix[x]
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
    loss = F.cross_entropy(x.reshape(x.shape[0] * x.shape[1], x.shape[2]), y.reshape(y.shape[0] * y.shape[1]), ignore_index=ignore_index, reduction="sum") / x.shape[0]
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
        # (0) the CNN that turns images into features
        self.image_encoder = ImageEncoder(pretrained=image_encoder_pretrained, verbose=False)
        # (2) feature projection
        if cell_type == "attn":
            # the attention model keeps the 4x4 grid, so use a 1x1 convolution
            self.feature_projection = nn.Conv2d(input_dim, hidden_dim, kernel_size=(1, 1))
        else:
            # rnn / lstm: project the pooled (averaged) feature vector to h0
            self.feature_projection = nn.Linear(input_dim, hidden_dim)
        # word embedding layer
        self.word_embedding = WordEmbedding(vocab_size, wordvec_dim)
        # the recurrent cell
        if cell_type == "rnn":
            self.rnn = RNN(wordvec_dim, hidden_dim)
        if cell_type == "lstm":
            self.rnn = LSTM(wordvec_dim, hidden_dim)
        if cell_type == "attn":
            self.rnn = AttentionLSTM(wordvec_dim, hidden_dim)
        # (1) output projection from hidden state to vocabulary scores
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
        # step 1: image features
        image_features = self.image_encoder(images)            # (N, 400, 4, 4)
        if self.cell_type == "attn":
            A = self.feature_projection(image_features)         # (N, H, 4, 4)
        else:
            pooled_features = image_features.mean(dim=(2, 3))   # (N, 400)
            h0 = self.feature_projection(pooled_features)       # (N, H)
        # step 2: word embeddings
        word_vectors = self.word_embedding(captions_in)         # (N, T, W)
        # step 3: run the recurrent network
        if self.cell_type == "attn":
            hidden_states = self.rnn(word_vectors, A)           # (N, T, H)
        else:
            hidden_states = self.rnn(word_vectors, h0)          # (N, T, H)
        # step 4: scores over the vocabulary
        scores = self.output_projection(hidden_states)          # (N, T, V)
        # step 5: loss, ignoring <NULL>
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
        # image features
        image_features = self.image_encoder(images)
        if self.cell_type == "attn":
            A = self.feature_projection(image_features)        # (N, H, 4, 4)
            hidden = A.mean(dim=(2, 3))                        # h0
            cell = hidden                                      # c0
        else:
            pooled_features = image_features.mean(dim=(2, 3))
            hidden = self.feature_projection(pooled_features)  # h0
            cell = torch.zeros_like(hidden)                    # c0 for the LSTM
        # the first input word is <START>
        current_word = self._start * images.new(N).fill_(1).long()
        for t in range(max_length):
            # embed the current word: (N, W)
            word_vector = self.word_embedding(current_word)
            # one step of the recurrent network
            if self.cell_type == "rnn":
                hidden = self.rnn.step_forward(word_vector, hidden)
            elif self.cell_type == "lstm":
                hidden, cell = self.rnn.step_forward(word_vector, hidden, cell)
            else:
                attn, attn_weights = dot_product_attention(hidden, A)
                attn_weights_all[:, t] = attn_weights.detach()
                hidden, cell = self.rnn.step_forward(word_vector, hidden, cell, attn)
            # scores for every word in the vocabulary: (N, V)
            scores = self.output_projection(hidden)
            # greedy: take the best word
            best_word = torch.argmax(scores, dim=1)
            captions[:, t] = best_word
            # feed it back in at the next step
            current_word = best_word
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
        # the big matrix multiply for all four gates at once
        x_part = x.matmul(self.Wx)            # (N, 4H)
        h_part = prev_h.matmul(self.Wh)       # (N, 4H)
        a = x_part + h_part + self.b          # (N, 4H)
        # split into the gates, order is i, f, o, g
        input_gate = torch.sigmoid(a[:, 0:H])
        forget_gate = torch.sigmoid(a[:, H:2 * H])
        output_gate = torch.sigmoid(a[:, 2 * H:3 * H])
        gate_gate = torch.tanh(a[:, 3 * H:4 * H])
        # new cell state
        next_c = forget_gate * prev_c + input_gate * gate_gate
        # new hidden state
        next_h = output_gate * torch.tanh(next_c)
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
        T = x.shape[1]
        hidden_list = []
        current_h = h0
        current_c = c0
        for t in range(T):
            x_t = x[:, t, :]
            current_h, current_c = self.step_forward(x_t, current_h, current_c)
            hidden_list.append(current_h)
        hn = torch.stack(hidden_list, dim=1)
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
    # flatten the 4x4 grid into 16 positions: (N, H, 16)
    A_flattened = A.reshape(N, H, D_a * D_a)
    # make prev_h a row vector: (N, 1, H)
    prev_h_row = prev_h.reshape(N, 1, H)
    # dot product with each of the 16 positions: (N, 1, 16)
    raw_scores = prev_h_row.matmul(A_flattened)
    raw_scores = raw_scores.reshape(N, D_a * D_a)
    # scale by sqrt(H)
    scaled_scores = raw_scores / math.sqrt(H)
    # softmax over the 16 positions
    weights = torch.softmax(scaled_scores, dim=0)              # (N, 16)
    # weighted sum of the columns of A: (N, H, 16) x (N, 16, 1) -> (N, H, 1)
    weights_column = weights.reshape(N, D_a * D_a, 1)
    attn = A_flattened.matmul(weights_column).reshape(N, H)
    # reshape the weights back to the grid
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
        # same as the LSTM but with one more term for the attention
        x_part = x.matmul(self.Wx)
        h_part = prev_h.matmul(self.Wh)
        attn_part = attn.matmul(self.Wattn)
        a = x_part + h_part + attn_part + self.b
        # gates in the order i, f, o, g
        input_gate = torch.sigmoid(a[:, 0:H])
        forget_gate = torch.sigmoid(a[:, H:2 * H])
        output_gate = torch.sigmoid(a[:, 2 * H:3 * H])
        gate_gate = torch.tanh(a[:, 3 * H:4 * H])
        next_c = forget_gate * prev_c + input_gate * gate_gate
        next_h = output_gate * torch.tanh(next_c)
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
        T = x.shape[1]
        hidden_list = []
        current_h = h0
        current_c = c0
        for t in range(T):
            # attend using the previous hidden state
            attn, attn_weights = dot_product_attention(current_h, A)
            x_t = x[:, t, :]
            current_h, current_c = self.step_forward(x_t, current_h, current_c, attn)
            hidden_list.append(current_h)
        hn = torch.stack(hidden_list, dim=1)
        ######################################################################
        #                           END OF YOUR CODE                         #
        ######################################################################
        return hn
