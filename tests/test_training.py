"""Training pieces: data split, batches, schedule, baselines, evaluation, checkpoints of trained models."""

import hashlib
import json
import math
import re

import numpy as np
import pytest
import safetensors.numpy

from tinytorch.core.losses import cross_entropy
from tinytorch.core.tensor import no_grad
from tinytorch.core.tokenization import CharTokenizer
from tinytorch.models import ModelConfig, TransformerLM, generate
from tinytorch.training import (
    TrainConfig,
    encode_ids,
    evaluate_bits_per_char,
    learning_rate,
    load_trained_model,
    ngram_baselines,
    prepare_text,
    sample_batch,
    save_trained_model,
    split_text,
    train_language_model,
)

TEXT = "the quick brown fox jumps over the lazy dog. " * 40

TINY = TrainConfig(context=8, embedding_dim=16, num_heads=2, hidden_dim=32, batch_size=8, steps=40, lr=0.01, warmup_steps=5)


def test_split_is_ninety_ten_by_characters():
    train, heldout = split_text("abcdefghij" * 10)
    assert len(train) == 90
    assert len(heldout) == 10
    assert train + heldout == "abcdefghij" * 10


def test_encode_ids_prepends_bos():
    tokenizer = CharTokenizer()
    assert encode_ids(tokenizer, "ab").tolist() == [2, *tokenizer.encode("ab", add_special_tokens=False)]


def test_sample_batch_targets_are_shifted_inputs():
    ids = np.arange(100)
    inputs, targets = sample_batch(ids, 5, 7, np.random.default_rng(0))
    assert inputs.shape == targets.shape == (5, 7)
    np.testing.assert_array_equal(targets, inputs + 1)
    assert targets.max() <= 99


def test_learning_rate_schedule_points():
    config = TrainConfig(lr=1.0, steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(60, config) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(110, config) == pytest.approx(0.1)


def test_ngram_baselines_match_direct_counting():
    train_ids = np.array([0, 1, 1, 2, 1, 0])
    heldout_ids = np.array([1, 2, 2, 0])
    result = ngram_baselines(train_ids, heldout_ids, vocab_size=3, num_chars=5)

    counts = {0: 2, 1: 3, 2: 1}
    unigram_bits = -sum(math.log2((counts[t] + 1) / (6 + 3)) for t in heldout_ids[1:])
    pairs = list(zip(train_ids[:-1], train_ids[1:]))
    bigram_bits = 0.0
    for s, t in zip(heldout_ids[:-1], heldout_ids[1:]):
        pair_count = pairs.count((s, t))
        left_count = sum(1 for a, _ in pairs if a == s)
        bigram_bits -= math.log2((pair_count + 1) / (left_count + 3))
    assert result["unigram_bits_per_char"] == pytest.approx(unigram_bits / 5)
    assert result["bigram_bits_per_char"] == pytest.approx(bigram_bits / 5)


@pytest.mark.parametrize("window", [3, 5, 100])
def test_evaluation_scores_every_token_once(window):
    model = TransformerLM(ModelConfig(vocab_size=12, context=8, embedding_dim=8, num_heads=2, hidden_dim=16), rng=np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 12, size=23)
    with no_grad():
        # Direct computation: each window predicts the tokens after its first.
        total = 0.0
        for start in range(0, ids.size - 1, window):
            inputs, targets = ids[start : min(start + window, ids.size - 1)], ids[start + 1 : start + window + 1]
            total += cross_entropy(model(inputs[np.newaxis]), targets[np.newaxis], reduction="sum").item()
    if window > 8:
        return  # longer than the sinusoidal evaluation needs; covered below
    expected = total / math.log(2) / 40
    assert evaluate_bits_per_char(model, ids, 40, window=window, batch_size=2) == pytest.approx(expected, rel=1e-5)


def test_evaluation_of_uniform_model():
    model = TransformerLM(ModelConfig(vocab_size=16, context=4, embedding_dim=4, num_heads=1, hidden_dim=8), rng=np.random.default_rng(0))
    model.head.weight.data[...] = 0
    model.head.bias.data[...] = 0
    ids = np.arange(11) % 16
    assert evaluate_bits_per_char(model, ids, 10, window=4) == pytest.approx(4.0, rel=1e-6)


def test_prepare_text_and_tiny_training_beats_bigram():
    prepared = prepare_text(TINY, TEXT)
    assert prepared.train_chars + prepared.heldout_chars == len(TEXT)
    assert prepared.train_ids[0] == prepared.tokenizer.bos_token_id
    seen = []
    result = train_language_model(TINY, prepared.train_ids, prepared.tokenizer, on_step=lambda s, l, t: seen.append((s, l, t)))
    assert result.steps_done == 40
    assert not result.interrupted
    assert [step for step, _, _ in seen] == list(range(1, 41))
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.tokens_per_second > 0
    bpc = evaluate_bits_per_char(result.model, prepared.heldout_ids, prepared.heldout_chars, window=TINY.context)
    assert bpc < prepared.baselines["bigram_bits_per_char"]


def test_training_is_reproducible_and_stoppable():
    prepared = prepare_text(TINY, TEXT)
    short = TrainConfig(**{**TINY.to_dict(), "steps": 5})
    first = train_language_model(short, prepared.train_ids, prepared.tokenizer)
    second = train_language_model(short, prepared.train_ids, prepared.tokenizer)
    assert first.losses == second.losses
    calls = iter([False, False, True])
    stopped = train_language_model(short, prepared.train_ids, prepared.tokenizer, should_stop=lambda: next(calls))
    assert stopped.interrupted and stopped.steps_done == 2
    assert stopped.losses == first.losses[:2]


def test_numpy_float_learning_rate_is_accepted_and_saved(tmp_path):
    config = TrainConfig(**{**TINY.to_dict(), "lr": np.float32(1e-3), "steps": 1})
    assert type(config.lr) is float
    assert config.lr == np.float32(1e-3)
    prepared = prepare_text(config, TEXT)
    result = train_language_model(config, prepared.train_ids, prepared.tokenizer)
    directory = save_trained_model(tmp_path / "checkpoint", result.model, prepared.tokenizer, config)
    assert load_trained_model(directory)[2] == config


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize(
    "grad_clip, advice",
    [
        (0.0, "set TrainConfig.grad_clip to a positive value such as 1.0 to clip gradients"),
        (1.0, "lower TrainConfig.grad_clip (now 1.0) to clip gradients harder"),
    ],
)
def test_divergence_raises_instead_of_saving_nan(grad_clip, advice):
    prepared = prepare_text(TINY, TEXT)
    config = TrainConfig(**{**TINY.to_dict(), "lr": 1e30, "grad_clip": grad_clip, "warmup_steps": 0, "steps": 20})
    with pytest.raises(FloatingPointError, match=r"training diverged at step \d+: the loss is nan; lower the learning rate \(lr=1e\+30\)") as caught:
        train_language_model(config, prepared.train_ids, prepared.tokenizer)
    assert str(caught.value).endswith(f"or, when calling the library, {advice}")
    assert "raise grad_clip" not in str(caught.value)


def test_bigram_baseline_with_large_vocabulary_counts_sparsely():
    train_ids = np.array([5, 70_000, 5, 70_000, 3])
    heldout_ids = np.array([5, 70_000, 9])
    result = ngram_baselines(train_ids, heldout_ids, vocab_size=100_000, num_chars=2)
    expected = -(math.log2((2 + 1) / (2 + 100_000)) + math.log2((0 + 1) / (2 + 100_000))) / 2
    assert result["bigram_bits_per_char"] == pytest.approx(expected)


def test_training_rejects_text_shorter_than_context():
    config = TrainConfig(context=64)
    tokenizer = CharTokenizer()
    with pytest.raises(ValueError, match="too few for context=64"):
        train_language_model(config, encode_ids(tokenizer, "short"), tokenizer)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tokenizer": "word"}, ValueError, "tokenizer must be one of 'char', 'bpe'; received 'word'"),
        ({"steps": 0}, ValueError, "steps must be a positive integer; received 0"),
        ({"lr": -0.1}, ValueError, r"lr must be a finite number >= 0; received -0\.1"),
        ({"lr": "1e-3"}, TypeError, r"lr must be a number; received '1e-3'"),
        ({"lr": float("inf")}, ValueError, r"received inf"),
        ({"min_lr_ratio": None}, TypeError, r"min_lr_ratio must be a number; received None"),
        ({"num_heads": 3}, ValueError, r"embedding_dim must be divisible by num_heads"),
        ({"tie_weights": "no"}, TypeError, r"tie_weights must be True or False"),
        ({"tokenizer": "bpe", "bpe_vocab_size": 5}, ValueError, r"bpe_vocab_size must be an integer >= 260; received 5"),
        ({"min_lr_ratio": 2}, ValueError, r"min_lr_ratio must be in \[0, 1\]; received 2"),
    ],
)
def test_bad_train_config(kwargs, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**kwargs)


def test_checkpoint_round_trip_is_exact(tmp_path):
    prepared = prepare_text(TINY, TEXT)
    config = TrainConfig(**{**TINY.to_dict(), "steps": 10})
    result = train_language_model(config, prepared.train_ids, prepared.tokenizer)
    save_trained_model(tmp_path / "checkpoint", result.model, prepared.tokenizer, config)

    model, tokenizer, loaded_config = load_trained_model(tmp_path / "checkpoint")
    assert loaded_config == config
    assert tokenizer.encode(TEXT[:50]) == prepared.tokenizer.encode(TEXT[:50])
    for name, array in result.model.state_dict().items():
        assert model.state_dict()[name].dtype == array.dtype
        assert model.state_dict()[name].tobytes() == array.tobytes()
    prompt = [tokenizer.bos_token_id, *tokenizer.encode("the", add_special_tokens=False)]
    assert generate(model, prompt, 30, rng=np.random.default_rng(3)) == generate(result.model, prompt, 30, rng=np.random.default_rng(3))


def test_truncated_checkpoint_is_rejected(tmp_path):
    prepared = prepare_text(TINY, TEXT)
    model = TransformerLM(TINY.model_config(prepared.tokenizer.vocab_size))
    directory = save_trained_model(tmp_path / "checkpoint", model, prepared.tokenizer, TINY)
    tensors = directory / "model.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-100])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_trained_model(directory)


def test_checkpoint_with_mismatched_config_is_rejected(tmp_path):
    prepared = prepare_text(TINY, TEXT)
    model = TransformerLM(TINY.model_config(prepared.tokenizer.vocab_size))
    directory = save_trained_model(tmp_path / "checkpoint", model, prepared.tokenizer, TINY)
    config_path = directory / "config.json"
    document = json.loads(config_path.read_text())
    document["config"]["model"]["hidden_dim"] = 64
    config_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"config.json' does not match the stored tensors: its hidden_dim=64 and embedding_dim=16 give tensor 'block.mlp_in.weight' the shape \(64, 16\), but .*model.safetensors' stores shape \(32, 16\)"):
        load_trained_model(directory)

    document["config"]["model"]["positional"] = "rotary"
    config_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"config.json' does not describe a TransformerLM.*rotary"):
        load_trained_model(directory)


def save_untrained(tmp_path, config=TINY):
    """Save a freshly initialised model of ``config`` as a checkpoint and return its directory."""
    tokenizer = CharTokenizer()
    model = TransformerLM(config.model_config(tokenizer.vocab_size), rng=np.random.default_rng(0))
    return save_trained_model(tmp_path / "checkpoint", model, tokenizer, config)


def update_checksum(directory):
    """Record the current SHA-256 of model.safetensors in config.json, as a forged checkpoint would."""
    config_path = directory / "config.json"
    document = json.loads(config_path.read_text())
    document["sha256"]["model.safetensors"] = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    config_path.write_text(json.dumps(document))


def replace_tensor(directory, name, array):
    tensors_path = directory / "model.safetensors"
    state = safetensors.numpy.load_file(tensors_path)
    state[name] = array
    safetensors.numpy.save_file(state, tensors_path)
    update_checksum(directory)


def edit_model_config(directory, **changes):
    config_path = directory / "config.json"
    document = json.loads(config_path.read_text())
    document["config"]["model"].update(changes)
    config_path.write_text(json.dumps(document))


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.uint8, np.complex64])
def test_load_rejects_non_float_tensor(tmp_path, dtype):
    directory = save_untrained(tmp_path)
    replace_tensor(directory, "block.attention.key.bias", np.zeros(16, dtype=dtype))

    with pytest.raises(ValueError, match=re.escape(repr(str(directory / "model.safetensors")))) as caught:
        load_trained_model(directory)

    message = str(caught.value)
    assert f"tensor 'block.attention.key.bias' has dtype {np.dtype(dtype)}" in message
    assert "is not a tinytorch checkpoint of a TransformerLM" in message
    assert message.endswith("re-save the model with save_trained_model")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_load_rejects_non_finite_weights(tmp_path, value):
    directory = save_untrained(tmp_path)
    weight = safetensors.numpy.load_file(directory / "model.safetensors")["block.mlp_out.weight"]
    weight[3, 5] = value
    replace_tensor(directory, "block.mlp_out.weight", weight)

    with pytest.raises(ValueError, match=re.escape(repr(str(directory / "model.safetensors")))) as caught:
        load_trained_model(directory)

    message = str(caught.value)
    assert "contains NaN or infinite values in tensor 'block.mlp_out.weight'" in message
    assert message.endswith("load an earlier checkpoint")


@pytest.mark.parametrize(
    "positional, changes, message",
    [
        ("sinusoidal", {"embedding_dim": 2**40}, r"its vocab_size=\d+ and embedding_dim=1099511627776 give tensor 'token_embedding.weight'"),
        ("sinusoidal", {"hidden_dim": 10**12}, r"its hidden_dim=1000000000000 and embedding_dim=16 give tensor 'block.mlp_in.weight'"),
        ("learned", {"context": 10**12}, r"its context=1000000000000 and embedding_dim=16 give tensor 'position.position_embedding.weight'"),
        ("sinusoidal", {"positional": "learned", "context": 10**12}, r"'position.position_embedding.weight' the shape \(1000000000000, 16\), but .* has no such tensor"),
        ("sinusoidal", {"vocab_size": 10**12}, r"gives vocab_size=1000000000000, but the tokenizer has \d+ ids"),
        ("sinusoidal", {"context": 10**12}, r"describes a model too large to build \(context=1000000000000, embedding_dim=16\)"),
        ("sinusoidal", {"context": 10**18}, r"describes a model too large to build \(context=1000000000000000000, embedding_dim=16\)"),
        ("sinusoidal", {"context": 10**400}, r"describes a model too large to build \(context=10{400}, embedding_dim=16\)"),
    ],
)
def test_load_rejects_absurd_config_sizes(tmp_path, positional, changes, message):
    directory = save_untrained(tmp_path, TrainConfig(**{**TINY.to_dict(), "positional": positional}))
    edit_model_config(directory, **changes)

    with pytest.raises(ValueError, match=re.escape(repr(str(directory / "config.json")))) as caught:
        load_trained_model(directory)

    assert re.search(message, str(caught.value))


def test_load_rejects_config_without_train_section(tmp_path):
    directory = save_untrained(tmp_path)
    config_path = directory / "config.json"
    document = json.loads(config_path.read_text())
    del document["config"]["train"]
    config_path.write_text(json.dumps(document))

    with pytest.raises(ValueError, match=r"config.json' does not describe a TransformerLM: it has no 'train' section"):
        load_trained_model(directory)
