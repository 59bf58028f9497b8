"""Judging in numpy (grader.harness.judging): torch's tolerance rule, the same feedback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from grader.harness import judging
from grader.harness.judging import CheckFailure, as_tensor, close, equal, match_by_shape
from grader.worker.values import to_wire


def test_the_rule_is_torch_testing_assert_close():
    """On values straddling the tolerance, numpy's verdict is torch's, element for element."""
    rng = np.random.default_rng(0)
    for dtype, rtol, atol in [(np.float64, 1e-8, 1e-10), (np.float32, 1e-5, 1e-6)]:
        for _ in range(300):
            expected = rng.normal(size=(4, 3)).astype(dtype)
            scale = atol + rtol * np.abs(expected)
            actual = (expected + scale * rng.uniform(-1.5, 1.5, size=expected.shape)).astype(dtype)
            if rng.random() < 0.1:
                actual[0, 0] = expected[0, 0] = np.nan
            try:
                torch.testing.assert_close(torch.from_numpy(actual), torch.from_numpy(expected),
                                           rtol=rtol, atol=atol, equal_nan=True)
                torch_ok = True
            except AssertionError:
                torch_ok = False
            assert judging._all_close(actual, expected, rtol, atol) == torch_ok


def test_feedback_names_the_worst_element_and_hides_hidden_values():
    expected = np.arange(6, dtype=np.float64).reshape(2, 3)
    actual = expected.copy()
    actual[1, 2] += 0.5
    with pytest.raises(CheckFailure) as public:
        close(actual, expected, "f: h", rtol=1e-8, atol=1e-10)
    assert "worst element at index (1, 2) (got 5.5, expected 5)" in public.value.message
    assert "course rel_error" in public.value.message
    with pytest.raises(CheckFailure) as hidden:
        close(actual, expected, "f: h", rtol=1e-8, atol=1e-10, hidden=True)
    assert "got 5.5" in hidden.value.message and "expected 5" not in hidden.value.message
    assert close(expected.copy(), expected, "f", rtol=1e-8, atol=1e-10) == 0.0


def test_shape_dtype_nan_and_a_float32_value_in_float64():
    expected = np.linspace(1, 2, 6).reshape(2, 3)
    with pytest.raises(CheckFailure, match=r"wrong shape \(3, 2\), expected \(2, 3\)"):
        close(expected.reshape(3, 2), expected, "f", rtol=1e-8, atol=1e-10)
    with pytest.raises(CheckFailure, match=r"dtype torch\.float32, expected torch\.float64"):
        close(expected.astype(np.float32), expected, "f", rtol=1e-8, atol=1e-10)
    bad = expected.copy()
    bad[0, 1] = np.nan
    with pytest.raises(CheckFailure, match=r"1 NaN/inf values, the first at index \(0, 1\)"):
        close(bad, expected, "f", rtol=1e-8, atol=1e-10)
    rounded = expected.astype(np.float32).astype(np.float64) + 1e-7 * expected
    with pytest.raises(CheckFailure, match="agree only to float32 precision"):
        close(rounded, expected, "f", rtol=1e-8, atol=1e-10)
    with pytest.raises(CheckFailure, match=r"1 of 3 entries differ, the first at index \(2,\)"):
        equal(np.array([1, 2, 4]), np.array([1, 2, 3]), "captions")


def test_what_comes_back_is_named():
    with pytest.raises(CheckFailure, match="returned None"):
        as_tensor(None, "f")
    with pytest.raises(CheckFailure, match="bfloat16"):
        as_tensor(to_wire(torch.ones(2, dtype=torch.bfloat16)), "f")
    with pytest.raises(CheckFailure, match="tensor subclass"):
        as_tensor(to_wire(torch.nn.Parameter(torch.ones(2))), "f")
    with pytest.raises(CheckFailure, match="expected a tensor, got a list of 2 items"):
        as_tensor(to_wire([torch.ones(1), 2]), "f")
    assert as_tensor(to_wire(torch.ones(2, 3).T), "f").shape == (3, 2)


def test_gradients_match_by_shape_whatever_the_names():
    g1, g2 = np.ones((2, 3)), np.full((2, 3), 2.0)
    expected = [{"name": "W", "shape": (2, 3), "grad": g1}, {"name": "U", "shape": (2, 3),
                                                             "grad": g2}]
    actual = [{"name": "a", "shape": (2, 3), "grad": g2}, {"name": "b", "shape": (2, 3),
                                                           "grad": g1},
              {"name": "unused", "shape": (9,), "grad": None}]
    assert match_by_shape(actual, expected, "grads", rtol=1e-7, atol=1e-9) == 0.0
    actual[0]["grad"] = g2 + 1
    with pytest.raises(CheckFailure, match=r"a parameter of shape \(2, 3\) gets a wrong gradient"):
        match_by_shape(actual, expected, "grads", rtol=1e-7, atol=1e-9)
