"""capgrade: an autograder for the RNN / LSTM / attention-LSTM captioning assignment."""

__version__ = "0.1.0"
