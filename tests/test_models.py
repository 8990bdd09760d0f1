"""The reference language model: attention gradients, causality, configuration checks, generation."""

import numpy as np
import pytest

from tinytorch.core.gradcheck import compare_gradients
from tinytorch.core.losses import cross_entropy
from tinytorch.core.optimizers import AdamW
from tinytorch.core.tensor import Tensor
from tinytorch.models import CausalSelfAttention, ModelConfig, TransformerBlock, TransformerLM, generate


def to_float64(module):
    for parameter in module.parameters:
        parameter.data = parameter.data.astype(np.float64)
    return module


def assert_gradients_match(fn, inputs):
    analytic, numeric = compare_gradients(fn, inputs)
    for index, (a, n) in enumerate(zip(analytic, numeric)):
        np.testing.assert_allclose(a, n, rtol=1e-4, atol=1e-6, err_msg=f"input {index}")


def test_attention_gradients_match_finite_differences():
    attention = to_float64(CausalSelfAttention(8, 2, rng=np.random.default_rng(0)))
    x = Tensor(np.random.default_rng(1).standard_normal((2, 5, 8)), dtype=np.float64, requires_grad=True)
    assert_gradients_match(lambda x, *params: attention(x), [x, *attention.parameters])


def test_block_gradients_match_finite_differences():
    block = to_float64(TransformerBlock(8, 2, 12, rng=np.random.default_rng(2)))
    x = Tensor(np.random.default_rng(3).standard_normal((1, 4, 8)), dtype=np.float64, requires_grad=True)
    assert_gradients_match(lambda x, *params: block(x), [x, *block.parameters])


def test_attention_matches_explicit_loop():
    attention = to_float64(CausalSelfAttention(4, 2, rng=np.random.default_rng(4)))
    x = np.random.default_rng(5).standard_normal((1, 3, 4))
    out = attention(Tensor(x, dtype=np.float64)).data[0]

    def project(layer, rows):
        return rows @ layer.weight.data.T + layer.bias.data

    q, k, v = (project(layer, x[0]) for layer in (attention.query, attention.key, attention.value))
    mixed = np.zeros((3, 4))
    for head in range(2):
        columns = slice(2 * head, 2 * head + 2)
        for t in range(3):
            scores = np.array([q[t, columns] @ k[s, columns] / np.sqrt(2) for s in range(t + 1)])
            weights = np.exp(scores - scores.max())
            weights /= weights.sum()
            mixed[t, columns] = sum(weights[s] * v[s, columns] for s in range(t + 1))
    np.testing.assert_allclose(out, project(attention.output, mixed), rtol=1e-10)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "none"])
def test_model_is_causal(positional):
    model = TransformerLM(ModelConfig(vocab_size=30, context=8, embedding_dim=8, num_heads=2, hidden_dim=16, positional=positional), rng=np.random.default_rng(6))
    ids = np.random.default_rng(7).integers(0, 30, size=(2, 8))
    changed = ids.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % 30
    before, after = model(ids).data, model(changed).data
    assert before.shape == (2, 8, 30)
    np.testing.assert_array_equal(before[:, :5], after[:, :5])
    assert not np.allclose(before[:, 5:], after[:, 5:])


def test_positions_matter_only_with_an_encoding():
    ids = np.array([[4, 9, 4, 9]])
    for positional, same in (("none", True), ("sinusoidal", False)):
        model = TransformerLM(ModelConfig(vocab_size=12, context=4, embedding_dim=8, num_heads=2, hidden_dim=16, positional=positional), rng=np.random.default_rng(8))
        logits = model(np.array([[4, 4, 4, 4]])).data[0]
        # Identical tokens: without positions every position attends to the same set of values.
        assert np.allclose(logits[0], logits[3], atol=1e-5) is same
    assert model(ids).shape == (1, 4, 12)


def test_tied_weights_share_the_table():
    config = ModelConfig(vocab_size=20, context=4, embedding_dim=8, num_heads=2, hidden_dim=16, tie_weights=True)
    model = TransformerLM(config, rng=np.random.default_rng(9))
    assert model.head is None
    assert "head.weight" not in model.state_dict()
    cross_entropy(model(np.array([[1, 2, 3]])), np.array([[2, 3, 4]])).backward()
    assert model.token_embedding.weight.grad.data[5].any()  # reached only through the output layer


def test_learned_model_rejects_longer_windows():
    model = TransformerLM(ModelConfig(vocab_size=10, context=4, embedding_dim=4, num_heads=1, hidden_dim=8, positional="learned"))
    assert model.max_seq_length == 4
    with pytest.raises(ValueError, match="sequence length 5 exceeds max_seq_length=4"):
        model(np.zeros((1, 5), dtype=np.int64))


def test_small_model_learns_a_pattern():
    config = ModelConfig(vocab_size=10, context=8, embedding_dim=16, num_heads=2, hidden_dim=32)
    model = TransformerLM(config, rng=np.random.default_rng(10))
    sequence = np.tile(np.arange(10), 3)
    inputs, targets = sequence[np.newaxis, :8], sequence[np.newaxis, 1:9]
    optimizer = AdamW(model.parameters(), lr=0.01)
    first = None
    for _ in range(80):
        loss = cross_entropy(model(inputs), targets)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first
    assert generate(model, [0], 7, temperature=0, rng=np.random.default_rng(0)) == list(range(8))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"embedding_dim": 10, "num_heads": 3}, ValueError, "embedding_dim must be divisible by num_heads"),
        ({"positional": "rotary"}, ValueError, "positional must be one of 'sinusoidal', 'learned', 'none'; received 'rotary'"),
        ({"context": 0}, ValueError, "context must be a positive integer; received 0"),
        ({"tie_weights": "yes"}, TypeError, "tie_weights must be True or False; received 'yes'"),
    ],
)
def test_bad_model_config(kwargs, error, message):
    with pytest.raises(error, match=message):
        ModelConfig(vocab_size=10, **kwargs)


def test_generate_checks_and_seed():
    model = TransformerLM(ModelConfig(vocab_size=10, context=4, embedding_dim=4, num_heads=1, hidden_dim=8), rng=np.random.default_rng(11))
    first = generate(model, [1], 12, rng=np.random.default_rng(5))
    assert first == generate(model, [1], 12, rng=np.random.default_rng(5))
    assert len(first) == 13
    assert first[0] == 1
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0; received -1"):
        generate(model, [1], 3, temperature=-1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="prompt_ids must hold at least one id"):
        generate(model, [], 3, rng=np.random.default_rng(0))
