"""cross_entropy: values, stability, ignore_index, reductions and gradients."""

import math

import numpy as np
import pytest

from tinytorch.core.gradcheck import compare_gradients
from tinytorch.core.losses import cross_entropy
from tinytorch.core.tensor import Tensor


def logits_leaf(shape, seed, scale=1.0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=np.float64, requires_grad=True)


def reference_losses(logits, targets):
    flat = logits.reshape(-1, logits.shape[-1])
    log_probs = flat - np.log(np.exp(flat).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(flat.shape[0]), targets.reshape(-1)]


def test_uniform_logits_give_log_classes():
    loss = cross_entropy(Tensor(np.zeros((4, 10))), [0, 3, 9, 2])
    assert loss.item() == pytest.approx(math.log(10), rel=1e-6)


def test_values_match_formula_for_each_reduction():
    logits = logits_leaf((2, 3, 5), 0)
    targets = np.array([[1, 4, 0], [2, 2, 3]])
    expected = reference_losses(logits.data, targets)
    assert cross_entropy(logits, targets).item() == pytest.approx(expected.mean())
    assert cross_entropy(logits, targets, reduction="sum").item() == pytest.approx(expected.sum())
    np.testing.assert_allclose(cross_entropy(logits, targets, reduction="none").data, expected.reshape(2, 3))


def test_large_logits_are_stable():
    logits = Tensor(np.array([[1000.0, 0.0, -1000.0]]), dtype=np.float64)
    assert cross_entropy(logits, [0]).item() == pytest.approx(0.0, abs=1e-12)
    assert cross_entropy(logits, [2]).item() == pytest.approx(2000.0)


def test_ignore_index_excluded_from_mean_and_gradient():
    logits = logits_leaf((4, 6), 1)
    targets = np.array([2, -100, 5, -100])
    loss = cross_entropy(logits, targets, ignore_index=-100)
    expected = reference_losses(logits.data[[0, 2]], np.array([2, 5])).mean()
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert (logits.grad.data[[1, 3]] == 0).all()


def test_all_ignored_mean_is_nan():
    assert math.isnan(cross_entropy(Tensor(np.zeros((2, 3))), [-1, -1], ignore_index=-1).item())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_matches_finite_differences(reduction):
    targets = np.array([[1, 4, 0], [2, -1, 3]])
    analytic, numeric = compare_gradients(
        lambda x: cross_entropy(x, targets, ignore_index=-1, reduction=reduction), [logits_leaf((2, 3, 5), 2, scale=2.0)]
    )
    np.testing.assert_allclose(analytic[0], numeric[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "targets, error, message",
    [
        ([0, 5], ValueError, r"targets must be in \[0, 5\) for 5 classes; received 5"),
        ([0, -2], ValueError, r"received -2"),
        ([0.0, 1.0], TypeError, "ids must be integers"),
        ([0, 1, 2], ValueError, r"targets must have shape \(2,\) to match logits \(2, 5\); received shape \(3,\)"),
    ],
)
def test_bad_targets(targets, error, message):
    with pytest.raises(error, match=message):
        cross_entropy(Tensor(np.zeros((2, 5))), targets)


@pytest.mark.parametrize(
    "logits, error, message",
    [
        (Tensor(np.array([[1, 5, 2]])), TypeError, "logits must be a floating-point Tensor with a class axis; received dtype int64"),
        (np.zeros((2, 3)), TypeError, r"logits must be a Tensor; received array"),
    ],
)
def test_bad_logits(logits, error, message):
    with pytest.raises(error, match=message):
        cross_entropy(logits, [1])


def test_bad_ignore_index():
    with pytest.raises(TypeError, match=r"ignore_index must be an integer; received 1\.5"):
        cross_entropy(Tensor(np.zeros((2, 3))), [0, 1], ignore_index=1.5)


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none'; received 'avg'"):
        cross_entropy(Tensor(np.zeros((2, 5))), [0, 1], reduction="avg")


def test_matches_torch():
    torch = pytest.importorskip("torch")
    logits = logits_leaf((6, 7), 3, scale=3.0)
    targets = np.array([0, 6, 3, 3, -100, 1])
    loss = cross_entropy(logits, targets, ignore_index=-100)
    loss.backward()
    reference = torch.tensor(logits.data, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(reference, torch.tensor(targets), ignore_index=-100)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(logits.grad.data, reference.grad.numpy(), rtol=1e-10, atol=1e-12)
