"""SGD, Adam, AdamW, SparseAdam and gradient clipping: formulas, PyTorch references, sparse against dense."""

import numpy as np
import pytest

from tinytorch.core.embeddings import Embedding
from tinytorch.core.layers import Linear, Parameter
from tinytorch.core.optimizers import SGD, Adam, AdamW, SparseAdam, clip_grad_norm
from tinytorch.core.tensor import Tensor


def quadratic_step(param, target):
    param.zero_grad()
    ((param - Tensor(target, dtype=param.dtype)) ** 2).sum().backward()


def test_sgd_plain_step_formula():
    param = Parameter(np.array([1.0, -2.0]), dtype=np.float64)
    quadratic_step(param, np.zeros(2))
    SGD([param], lr=0.1).step()
    np.testing.assert_allclose(param.data, [1.0 - 0.1 * 2.0, -2.0 + 0.1 * 4.0])


def test_sgd_momentum_and_weight_decay_by_hand():
    param = Parameter(np.array([1.0]), dtype=np.float64)
    optimizer = SGD([param], lr=0.1, momentum=0.9, weight_decay=0.5)
    expected, buffer = 1.0, None
    for _ in range(3):
        quadratic_step(param, np.zeros(1))
        g = 2 * expected + 0.5 * expected
        buffer = g if buffer is None else 0.9 * buffer + g
        expected -= 0.1 * buffer
        optimizer.step()
        assert param.data[0] == pytest.approx(expected)


def test_adam_first_step_moves_by_lr():
    # With bias correction, the first Adam step is lr * g / (|g| + eps) ~ lr * sign(g).
    param = Parameter(np.array([3.0, -3.0]), dtype=np.float64)
    quadratic_step(param, np.zeros(2))
    Adam([param], lr=0.01).step()
    np.testing.assert_allclose(param.data, [2.99, -2.99], rtol=1e-6)


def test_adamw_decays_before_step():
    param = Parameter(np.array([2.0]), dtype=np.float64)
    param.grad = Tensor(np.array([0.0]), dtype=np.float64)
    AdamW([param], lr=0.1, weight_decay=0.5).step()
    assert param.data[0] == pytest.approx(2.0 * (1 - 0.1 * 0.5))


def test_optimizers_skip_params_without_gradient():
    frozen = Parameter(np.ones(2), dtype=np.float64, requires_grad=False)
    for optimizer in (SGD([frozen], lr=1.0), Adam([frozen]), AdamW([frozen])):
        optimizer.step()
    assert frozen.data.tolist() == [1.0, 1.0]


def test_frozen_pretrained_table_unchanged_by_training():
    table = Embedding.from_pretrained(np.ones((5, 3)))
    head = Linear(3, 2, dtype=np.float64)
    optimizer = AdamW([*table.parameters(), *head.parameters()], lr=0.1)
    (head(table([1, 2])) ** 2).sum().backward()
    optimizer.step()
    assert (table.weight.data == 1.0).all()


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: SGD(p, lr=-1), ValueError, "lr must be a finite number >= 0; received -1"),
        (lambda p: SGD(p, lr=float("inf")), ValueError, "received inf"),
        (lambda p: SGD(p, lr=10**400), ValueError, "lr must be a finite number >= 0; received 1000"),
        (lambda p: SGD(p, lr=np.float32("nan")), ValueError, r"lr must be a finite number >= 0; received np.float32\(nan\)"),
        (lambda p: Adam(p, betas=("a", 0.9)), TypeError, "each beta must be a number; received 'a'"),
        (lambda p: SGD(p + p, lr=0.1), ValueError, "contains one Parameter more than once"),
        (lambda p: SGD(Linear(2, 2), lr=0.1), TypeError, r"received Linear\(2, 2\).*Pass model.parameters\(\)"),
        (lambda p: SGD(p, lr="fast"), TypeError, "lr must be a number; received 'fast'"),
        (lambda p: Adam(p, betas=(0.9, 1.0)), ValueError, r"each beta must be in \[0, 1\); received betas=\(0.9, 1.0\)"),
        (lambda p: Adam(p, betas=0.9), TypeError, r"betas must be a pair"),
        (lambda p: SGD([], lr=0.1), ValueError, "empty parameter list"),
        (lambda p: SGD([np.ones(2)], lr=0.1), TypeError, "optimizers take Parameter objects"),
    ],
)
def test_bad_optimizer_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make([Parameter(np.ones(2))])


def test_numpy_scalar_learning_rate_accepted():
    assert SGD([Parameter(np.ones(2))], lr=np.float32(0.5)).lr == 0.5


def test_clip_grad_norm_scales_globally():
    a = Parameter(np.zeros(2), dtype=np.float64)
    b = Parameter(np.zeros(1), dtype=np.float64)
    a.grad = Tensor(np.array([3.0, 0.0]), dtype=np.float64)
    b.grad = Tensor(np.array([4.0]), dtype=np.float64)
    norm = clip_grad_norm([a, b], max_norm=1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.data, [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad.data, [0.8], rtol=1e-5)
    assert clip_grad_norm([a, b], max_norm=10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(b.grad.data, [0.8], rtol=1e-5)


def train_table(sparse, steps=10, optimizer_class=SGD, **options):
    rng = np.random.default_rng(0)
    table = Embedding(200, 8, padding_idx=3, sparse=sparse, rng=np.random.default_rng(1))
    optimizer = optimizer_class(table.parameters(), **options)
    for _ in range(steps):
        ids = rng.integers(0, 200, size=(16, 5))
        target = rng.standard_normal((16, 5, 8)).astype(np.float32)
        optimizer.zero_grad()
        ((table(ids) - Tensor(target)) ** 2).mean().backward()
        optimizer.step()
    return table.weight.data


def test_sparse_and_dense_sgd_give_identical_tables():
    dense = train_table(sparse=False, lr=0.5)
    sparse = train_table(sparse=True, lr=0.5)
    np.testing.assert_array_equal(sparse, dense)
    assert (sparse[3] == 0).all()


def test_sparse_sgd_rejects_momentum():
    with pytest.raises(ValueError, match="row-sparse gradient needs momentum=0 and weight_decay=0; received momentum=0.9"):
        train_table(sparse=True, steps=1, lr=0.1, momentum=0.9)


def test_sparse_adam_updates_only_touched_rows():
    table = Embedding(50, 4, sparse=True, rng=np.random.default_rng(2))
    before = table.weight.data.copy()
    optimizer = SparseAdam(table.parameters(), lr=0.01)
    table([[5, 9, 9]]).sum().backward()
    optimizer.step()
    changed = np.flatnonzero((table.weight.data != before).any(axis=1))
    assert changed.tolist() == [5, 9]
    np.testing.assert_allclose(table.weight.data[[5, 9]], before[[5, 9]] - 0.01, rtol=1e-4)


def test_sparse_adam_rejects_dense_gradient():
    table = Embedding(5, 2)
    table([1]).sum().backward()
    with pytest.raises(ValueError, match="SparseAdam needs row-sparse gradients"):
        SparseAdam(table.parameters()).step()


# ---------------------------------------------------------------- PyTorch references


def run_both(tiny_class, torch_class, options, steps=5, sparse=False):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    initial = rng.standard_normal((20, 4))
    table = Embedding.from_pretrained(initial, freeze=False, sparse=sparse)
    reference = torch.nn.Embedding.from_pretrained(torch.tensor(initial), freeze=False, sparse=sparse)
    tiny_optimizer = tiny_class(table.parameters(), **options)
    torch_optimizer = torch_class(reference.parameters(), **options)
    for _ in range(steps):
        ids = rng.integers(0, 20, size=(3, 6))
        upstream = rng.standard_normal((3, 6, 4))
        tiny_optimizer.zero_grad()
        torch_optimizer.zero_grad()
        (table(ids) * upstream).sum().backward()
        (reference(torch.tensor(ids)) * torch.tensor(upstream)).sum().backward()
        tiny_optimizer.step()
        torch_optimizer.step()
    np.testing.assert_allclose(table.weight.data, reference.weight.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_sgd_momentum_matches_torch():
    torch = pytest.importorskip("torch")
    run_both(SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01})


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    run_both(Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1})


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    run_both(AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1})


def test_sparse_adam_matches_torch():
    torch = pytest.importorskip("torch")
    run_both(SparseAdam, torch.optim.SparseAdam, {"lr": 0.01}, sparse=True)


def test_clip_matches_torch():
    torch = pytest.importorskip("torch")
    grads = [np.random.default_rng(4).standard_normal((3, 2)), np.random.default_rng(5).standard_normal(4)]
    params = [Parameter(np.zeros_like(g), dtype=np.float64) for g in grads]
    for param, grad in zip(params, grads):
        param.grad = Tensor(grad.copy(), dtype=np.float64)
    references = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for reference, grad in zip(references, grads):
        reference.grad = torch.tensor(grad)
    assert clip_grad_norm(params, 0.5) == pytest.approx(torch.nn.utils.clip_grad_norm_(references, 0.5).item())
    for param, reference in zip(params, references):
        np.testing.assert_allclose(param.grad.data, reference.grad.numpy(), rtol=1e-9)


@pytest.mark.parametrize("implementation", ["numpy", "numba"])
def test_sparse_and_dense_sgd_identical_under_each_kernel(implementation):
    from tinytorch.core import kernels

    if implementation == "numba":
        pytest.importorskip("numba")
    previous = kernels.active_implementation()
    kernels.set_implementation(implementation)
    try:
        np.testing.assert_array_equal(train_table(sparse=True, lr=0.3), train_table(sparse=False, lr=0.3))
    finally:
        kernels.set_implementation(previous)
