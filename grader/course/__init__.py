"""The assignment's course material: both sides use it, neither side's machinery.

The course's check inputs (``inputs``, torch: built in the worker) and its
settings as plain data (``settings``), the synthetic data set and the grader's
image encoder, the training loop, the overfit setups and bounds, plots, and
the loss file's rules (``lossfile``). Modules the harness imports are
torch-free at import (torch only inside the functions the worker calls).
"""
