"""The ``tinytorch`` command run as a subprocess, as users run it."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinytorch
from tinytorch import cli
from tinytorch.core.embeddings import Embedding, PositionalEncoding
from tinytorch.core.tokenization import BPETokenizer, CharTokenizer
from tinytorch.data import builtin_corpus

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tinytorch", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )


def test_console_script_version():
    script = Path(sys.executable).parent / "tinytorch"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"tinytorch {tinytorch.__version__}"


def test_embed_text_prints_ids_and_shapes():
    result = run_cli("embed", "Hello world!", "--dim", "16")
    assert result.returncode == 0, result.stderr
    expected_ids = CharTokenizer().encode("Hello world!")
    assert f"token ids     {expected_ids}" in result.stdout
    assert "embeddings    shape (14, 16), dtype float32" in result.stdout
    assert "output shape (14, 16)" in result.stdout
    assert f"table memory  {99 * 16 * 4 / 2**20:.2f} MB (1,584 parameters" in result.stdout


def test_embed_text_preview_values():
    result = run_cli("embed", "Hi", "--dim", "8", "--seed", "3")
    assert result.returncode == 0, result.stderr
    rng = tinytorch.manual_seed(3)
    expected = Embedding(99, 8, padding_idx=0, rng=rng)(CharTokenizer().encode("Hi")).data + PositionalEncoding(8, 512).pe.data[:4]
    preview_line = next(line for line in result.stdout.splitlines() if "'H'" in line)
    printed = [float(v) for v in preview_line.split("[")[1].split("...")[0].split()]
    np.testing.assert_allclose(printed, expected[1, :6], atol=1e-4)


def test_embed_builtin_corpus_saves_exact_vectors(tmp_path):
    out = tmp_path / "vectors.npy"
    result = run_cli("embed", "--dim", "8", "--max-length", "128", "--seed", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr

    text = builtin_corpus()
    windows = math.ceil(len(text) / 128)
    vectors = np.load(out, mmap_mode="r")
    assert vectors.shape == (windows, 128, 8)
    assert "built-in corpus" in result.stdout
    assert f"{len(text):,}" in result.stdout

    tokenizer = CharTokenizer()
    ids = np.array(tokenizer.encode(text, add_special_tokens=False))
    rng = tinytorch.manual_seed(1)
    table = Embedding(99, 8, padding_idx=0, rng=rng).weight.data
    pe = PositionalEncoding(8, 128).pe.data
    np.testing.assert_allclose(vectors[0], table[ids[:128]] + pe, rtol=1e-6)
    tail = len(ids) - (windows - 1) * 128
    np.testing.assert_allclose(vectors[-1, :tail], table[ids[(windows - 1) * 128 :]] + pe[:tail], rtol=1e-6)
    np.testing.assert_allclose(vectors[-1, tail:], pe[tail:], rtol=1e-6)  # <PAD> rows are zero


def test_embed_user_file_with_bpe_and_saved_vocab(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("tokens become vectors; vectors become meaning.\n" * 40 + "naïve café ☕\n", encoding="utf-8")
    vocab = tmp_path / "bpe.json"
    tokenizer = BPETokenizer(vocab_size=300)
    tokenizer.train(corpus.read_text(encoding="utf-8"))
    tokenizer.save(vocab)

    result = run_cli("embed", "--file", str(corpus), "--tokenizer", "bpe", "--vocab", str(vocab), "--dim", "8", "--max-length", "32", "--positional", "learned")
    assert result.returncode == 0, result.stderr
    tokens = len(tokenizer.encode(corpus.read_text(encoding="utf-8"), add_special_tokens=False))
    assert f"tokens            {tokens:,}" in result.stdout
    assert f"({math.ceil(tokens / 32)}, 32, 8)" in result.stdout
    assert f"bpe (vocab_size={tokenizer.vocab_size})" in result.stdout


def test_embed_trains_bpe_on_the_input(tmp_path):
    corpus = tmp_path / "notes.txt"
    corpus.write_text(builtin_corpus()[:20_000], encoding="utf-8")
    result = run_cli("embed", "--file", str(corpus), "--tokenizer", "bpe", "--bpe-vocab-size", "280", "--dim", "4")
    assert result.returncode == 0, result.stderr
    assert "bpe (vocab_size=280)" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["embed", "--file", "missing.txt"], "cannot read --file 'missing.txt' (No such file or directory); give the path"),
        (["embed", "--bpe-vocab-size", "1"], "argument --bpe-vocab-size: expected an integer >= 260, received '1'"),
        (["embed", "--file", "notes.txt", "--out", "notes.txt/v.npy"], "'notes.txt' is a file, not a directory"),
        (["embed", "--dim", "-3"], "argument --dim: expected a positive integer, received '-3'"),
        (["embed", "--max-length", "zero"], "argument --max-length: expected a positive integer, received 'zero'"),
        (["embed", "--tokenizer", "word"], "argument --tokenizer: invalid choice: 'word'"),
        (["embed", "--positional", "rotary"], "argument --positional: invalid choice: 'rotary'"),
        (["embed", "hi", "--file", "notes.txt"], "give either TEXT or --file, not both"),
        (["embed", "hi", "--out", "x.npy"], "drop TEXT or --out"),
        (["embed", "x" * 20, "--max-length", "10"], "the text is 22 tokens, more than --max-length 10"),
        (["embed", "--file", "."], "is a directory"),
        (["embed", "--file", "latin1.txt"], "is not valid UTF-8 text"),
        (["embed", "hi", "--vocab", "broken.json"], "broken.json"),
        (["embed", "--bogus"], "unrecognized arguments: --bogus"),
        (["profile", "--repeats", "0"], "argument --repeats: expected a positive integer, received '0'"),
        (["profile", "--plot", "notes.txt"], "--plot 'notes.txt' is a file; give a directory"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_print_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_profile_json_reports_bandwidth_fraction(tmp_path):
    result = run_cli(
        "profile", "--json", "--vocab-size", "2000", "--dim", "32", "--batch-sizes", "2", "4", "--seq-lengths", "16", "--repeats", "2", "--plot", str(tmp_path / "figures")
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    machine = report["machine_bandwidth"]["copy_bandwidth_gb_s"]
    assert machine > 0
    assert sorted(report["lookup"]) == ["batch_2_seq_16", "batch_4_seq_16"]
    for entry in report["lookup"].values():
        assert entry["bandwidth_fraction"] == pytest.approx(entry["memory_bandwidth_mb_s"] * 1e6 / (machine * 1e9))
    assert "vocab_2000_dim_32" in report["memory_scaling"]
    assert report["positional"]["sinusoidal"]["extrapolation"] is None
    assert report["table"] == {"vocab_size": 2000, "embedding_dim": 32}
    assert report["kernels"] in ("numpy", "numba")
    forced = run_cli("profile", "--json", "--vocab-size", "100", "--dim", "8", "--batch-sizes", "1", "--seq-lengths", "4", "--repeats", "1", env={"TINYTORCH_KERNELS": "numpy"})
    assert json.loads(forced.stdout)["kernels"] == "numpy"
    for name in ("positional_encoding.png", "memory_scaling.png", "lookup_throughput.png"):
        assert (tmp_path / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)


def test_profile_renders_tables():
    result = run_cli("profile", "--vocab-size", "1000", "--dim", "16", "--batch-sizes", "1", "--seq-lengths", "8", "--repeats", "2")
    assert result.returncode == 0, result.stderr
    assert "Machine copy bandwidth:" in result.stdout
    assert "of bandwidth" in result.stdout
    assert "Memory scaling" in result.stdout
    assert "no limit" in result.stdout


# ---------------------------------------------------------------- train, compare-positional, neighbors, generate

TINY_TRAINING = ["--steps", "4", "--context", "16", "--dim", "16", "--heads", "2", "--hidden", "32", "--batch-size", "4"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_cli("train", *TINY_TRAINING, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_train_writes_report_checkpoint_and_figures(trained_run):
    out, result = trained_run
    report = json.loads((out / "report.json").read_text())
    assert report["steps_done"] == 4
    assert not report["interrupted"]
    assert len(report["losses"]) == 4
    assert report["config"]["context"] == 16
    assert report["config"]["positional"] == "sinusoidal"
    assert report["improvement_over_bigram"] == pytest.approx(1 - report["heldout_bits_per_char"] / report["bigram_bits_per_char"])
    assert 3.0 < report["bigram_bits_per_char"] < report["unigram_bits_per_char"]
    assert f"{report['heldout_bits_per_char']:.3f}" in result.stdout
    for name in ("loss_curve.png", "embeddings_pca.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_train_report_matches_reloaded_checkpoint(trained_run):
    from tinytorch.training import evaluate_bits_per_char, load_trained_model, prepare_text

    out, _ = trained_run
    report = json.loads((out / "report.json").read_text())
    model, tokenizer, config = load_trained_model(out / "checkpoint")
    prepared = prepare_text(config, builtin_corpus())
    bpc = evaluate_bits_per_char(model, prepared.heldout_ids, prepared.heldout_chars, window=config.context)
    assert bpc == pytest.approx(report["heldout_bits_per_char"], rel=1e-6)
    assert prepared.baselines["bigram_bits_per_char"] == pytest.approx(report["bigram_bits_per_char"])


def test_generate_is_reproducible_with_seed(trained_run):
    out, _ = trained_run
    first = run_cli("generate", "--checkpoint", str(out / "checkpoint"), "--prompt", "def ", "--length", "40", "--seed", "7")
    second = run_cli("generate", "--checkpoint", str(out / "checkpoint"), "--prompt", "def ", "--length", "40", "--seed", "7")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout.startswith("def ")
    greedy = run_cli("generate", "--checkpoint", str(out / "checkpoint"), "--temperature", "0", "--length", "5")
    assert greedy.returncode == 0, greedy.stderr


def test_neighbors_lists_k_tokens_by_cosine(trained_run):
    from tinytorch.training import load_trained_model

    out, _ = trained_run
    result = run_cli("neighbors", "--checkpoint", str(out / "checkpoint"), "e", "-k", "5")
    assert result.returncode == 0, result.stderr
    model, tokenizer, _ = load_trained_model(out / "checkpoint")
    expected = model.token_embedding.most_similar(tokenizer.encode("e", add_special_tokens=False)[0], k=5)
    rows = [line.split() for line in result.stdout.splitlines()[3:]]
    assert [int(row[-2]) for row in rows] == [token_id for token_id, _ in expected]


@pytest.mark.parametrize(
    "args, message",
    [
        (["neighbors", "--checkpoint", "CKPT", "ab"], "'ab' is 2 tokens"),
        (["neighbors", "--checkpoint", "missing", "a"], "checkpoint directory not found"),
        (["generate", "--checkpoint", "CKPT", "--temperature", "-1"], "expected a finite number >= 0, received '-1'"),
        (["train", "--steps", "0"], "argument --steps: expected a positive integer, received '0'"),
        (["train", "--positional", "rotary"], "argument --positional: invalid choice: 'rotary'"),
        (["train", "--corpus", "missing.txt"], "cannot read --corpus 'missing.txt' (No such file or directory)"),
        (["train", "--tokenizer", "bpe", "--bpe-vocab-size", "1"], "argument --bpe-vocab-size: expected an integer >= 260"),
        (["train", "--dim", "30", "--heads", "4"], "embedding_dim must be divisible by num_heads"),
        (["train", "--corpus", "short.txt"], "too few"),
        (["train", "--out", "short.txt"], "--out 'short.txt' is a file; give a directory"),
        (["compare-positional", "--out", "."], "is a directory; give a file name"),
        (["compare-positional", "--out", "missing/compare.json"], "directory 'missing' does not exist"),
        (["compare-positional", "--out", "newres/"], "argument --out: expected a file name, received 'newres/', which ends in a separator"),
        (["neighbors", "--checkpoint", "CKPT", "é"], "'é' is not in the checkpoint's vocabulary"),
        (["generate", "--checkpoint", "CKPT", "--seed", "-1"], "argument --seed: expected an integer >= 0, received '-1'"),
        (["profile", "--positional-report", "partial.json"], "is not a complete compare-positional report"),
        (["train", *TINY_TRAINING, "--lr", "1e30", "--out", "nan-run"], "training diverged"),
    ],
)
def test_training_commands_reject_bad_input(trained_run, tmp_path, args, message):
    out, _ = trained_run
    (tmp_path / "short.txt").write_text("a tiny text", encoding="utf-8")
    (tmp_path / "partial.json").write_text('{"results": {"sinusoidal": {"heldout_bits_per_char": 2.0}}}', encoding="utf-8")
    args = [str(out / "checkpoint") if arg == "CKPT" else arg for arg in args]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "nan-run").exists()


def test_truncated_checkpoint_gives_one_line_error(trained_run, tmp_path):
    import shutil

    out, _ = trained_run
    copy = tmp_path / "checkpoint"
    shutil.copytree(out / "checkpoint", copy)
    tensors = copy / "model.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:200])
    result = run_cli("generate", "--checkpoint", str(copy))
    assert result.returncode == 2
    assert "model.safetensors" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_compare_positional_reports_all_three(tmp_path):
    report_path = tmp_path / "compare.json"
    result = run_cli("compare-positional", *TINY_TRAINING, "--out", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())["results"]
    assert list(report) == ["sinusoidal", "learned", "none"]
    assert report["learned"]["heldout_bits_per_char_2x_context"] is None
    for kind in ("sinusoidal", "none"):
        assert report[kind]["heldout_bits_per_char_2x_context"] > 0
    assert "cannot run" in result.stdout
    assert f"{report['none']['heldout_bits_per_char']:.3f}" in result.stdout

    profile = run_cli(
        "profile", "--json", "--vocab-size", "100", "--dim", "8", "--batch-sizes", "1", "--seq-lengths", "4", "--repeats", "1", "--positional-report", str(report_path)
    )
    assert profile.returncode == 0, profile.stderr
    positional = json.loads(profile.stdout)["positional"]
    assert positional["learned"]["heldout_bits_per_char"] == report["learned"]["heldout_bits_per_char"]
    assert positional["sinusoidal"]["heldout_bits_per_char_2x_context"] == report["sinusoidal"]["heldout_bits_per_char_2x_context"]


def test_train_stops_cleanly_on_ctrl_c(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "tinytorch", "train", "--steps", "100000", "--context", "16", "--dim", "16", "--heads", "2", "--hidden", "32", "--batch-size", "4", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    stderr_text = ""
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGINT)
        try:
            stdout_text, stderr_text = process.communicate(timeout=120)
            break
        except subprocess.TimeoutExpired:
            continue
    assert process.returncode == 0, stderr_text
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    assert 0 < report["steps_done"] < 100000
    assert "stopped early" in stdout_text
    from tinytorch.training import load_trained_model

    load_trained_model(out / "checkpoint")


def test_compare_ctrl_c_marks_interrupted(tmp_path):
    import signal

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(builtin_corpus()[:20_000], encoding="utf-8")
    report_path = tmp_path / "compare.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "tinytorch", "compare-positional", *TINY_TRAINING, "--steps", "20000", "--corpus", str(corpus), "--out", str(report_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The first progress line (step 2,000) shows that training has started.
    first_line = process.stderr.readline()
    assert first_line.startswith("sinusoidal: step"), first_line
    process.send_signal(signal.SIGINT)
    stdout_text, stderr_text = process.communicate(timeout=120)

    assert process.returncode == 130, stderr_text
    assert "interrupted during sinusoidal; the comparison is incomplete" in stderr_text
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True
    assert list(report["results"]) == ["sinusoidal"]
    assert 0 < report["results"]["sinusoidal"]["steps_done"] < 20000
    assert "sinusoidal" in stdout_text

    profile = run_cli("profile", "--positional-report", str(report_path))
    assert profile.returncode == 2
    assert "compare-positional was interrupted" in profile.stderr
    assert str(report_path) in profile.stderr


# ---------------------------------------------------------------- errors found before any training, in-process


def run_main(capsys, *args):
    """Run ``tinytorch ARGS`` in this process; return the exit status and stderr."""
    status = cli.main(list(args))
    return status, capsys.readouterr().err


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Work in tmp_path, and fail the test if a command reads its corpus or starts training."""

    def fail(*args, **kwargs):
        pytest.fail("the command started on its corpus before rejecting its output path")

    monkeypatch.setattr(cli, "_load_corpus", fail)
    monkeypatch.setattr(cli, "train_language_model", fail)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fail_write_checks(monkeypatch):
    """Make every write check in the CLI fail as it would on a read-only file system."""
    import errno
    import types

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "hidden-temporary-file")

    monkeypatch.setattr(cli, "tempfile", types.SimpleNamespace(NamedTemporaryFile=read_only), raising=False)


def assert_one_line_error(status, stderr, message):
    assert status == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_train_out_on_read_only_file_system(no_training, monkeypatch, capsys):
    (no_training / "ro" / "run").mkdir(parents=True)
    fail_write_checks(monkeypatch)
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "ro/run")
    assert_one_line_error(status, stderr, "--out 'ro/run': cannot create files in 'ro/run' (Read-only file system)")
    assert "give a path in a writable directory" in stderr
    assert "hidden-temporary-file" not in stderr


def test_compare_out_on_read_only_file_system(no_training, monkeypatch, capsys):
    (no_training / "ro").mkdir()
    fail_write_checks(monkeypatch)
    status, stderr = run_main(capsys, "compare-positional", "--steps", "2", "--out", "ro/c.json")
    assert_one_line_error(status, stderr, "--out 'ro/c.json': cannot create files in 'ro' (Read-only file system)")


def test_embed_out_on_read_only_file_system(no_training, monkeypatch, capsys):
    (no_training / "ro").mkdir()
    (no_training / "notes.txt").write_text("hello", encoding="utf-8")
    fail_write_checks(monkeypatch)
    status, stderr = run_main(capsys, "embed", "--file", "notes.txt", "--dim", "4", "--out", "ro/v.npy")
    assert_one_line_error(status, stderr, "--out 'ro/v.npy': cannot create files in 'ro' (Read-only file system)")
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory regardless of its mode")
@pytest.mark.parametrize("command, out, message", [("train", "ro", "--out 'ro': cannot create files in 'ro'"), ("compare-positional", "ro/c.json", "--out 'ro/c.json': cannot create files in 'ro'")])
def test_out_in_read_only_directory(no_training, capsys, command, out, message):
    (no_training / "ro").mkdir()
    (no_training / "ro").chmod(0o555)
    try:
        status, stderr = run_main(capsys, command, "--steps", "2", "--out", out)
    finally:
        (no_training / "ro").chmod(0o755)
    assert_one_line_error(status, stderr, message)


def test_train_out_foreign_checkpoint(no_training, capsys):
    (no_training / "run6" / "checkpoint").mkdir(parents=True)
    (no_training / "run6" / "checkpoint" / "notes.txt").write_text("mine", encoding="utf-8")
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "run6")
    assert_one_line_error(status, stderr, "cannot save the checkpoint in --out 'run6'")
    assert "a non-empty directory without a config.json" in stderr
    assert "empty or remove 'run6/checkpoint', or give another --out" in stderr
    assert (no_training / "run6" / "checkpoint" / "notes.txt").read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize("name", ["report.json", "loss_curve.png", "embeddings_pca.png"])
def test_train_out_file_is_directory(no_training, capsys, name):
    (no_training / "run7" / name).mkdir(parents=True)
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "run7")
    assert_one_line_error(status, stderr, f"cannot write 'run7/{name}': it is a directory; remove it or give another --out")


def test_train_out_that_cannot_be_created(no_training, capsys):
    (no_training / "notes.txt").write_text("hello", encoding="utf-8")
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "notes.txt/run")
    assert_one_line_error(status, stderr, "cannot create --out directory 'notes.txt/run' (Not a directory)")
    assert "give another --out" in stderr


def test_train_out_dangling_symlink(no_training, capsys):
    (no_training / "run9").symlink_to("missing-target")
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "run9")
    assert_one_line_error(status, stderr, "--out 'run9' is a symbolic link to 'missing-target', which does not resolve")
    assert "fix the link or give another --out" in stderr


@pytest.mark.parametrize("command", [["train"], ["compare-positional"], ["embed", "--file", "notes.txt"]])
def test_out_symlink_loop(no_training, capsys, command):
    (no_training / "notes.txt").write_text("some text", encoding="utf-8")
    (no_training / "loop1").symlink_to("loop2")
    (no_training / "loop2").symlink_to("loop1")
    status, stderr = run_main(capsys, *command, "--out", "loop1")
    assert_one_line_error(status, stderr, "--out 'loop1' is a symbolic link to 'loop2', which does not resolve")
    assert "the links form a loop" in stderr


def test_train_dangling_link_as_report(no_training, capsys):
    (no_training / "run").mkdir()
    (no_training / "run" / "report.json").symlink_to("nowhere/report.json")
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "run")
    assert_one_line_error(status, stderr, "'run/report.json' is a symbolic link to 'nowhere/report.json', which does not resolve")
    assert (no_training / "run").is_dir()


def test_failed_train_removes_dotdot_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, stderr = run_main(capsys, "train", "--steps", "2", "--corpus", "missing.txt", "--out", "made/../run")
    assert status == 2, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_failed_train_keeps_existing_dotdot_target(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old").mkdir()
    status, stderr = run_main(capsys, "train", "--steps", "2", "--corpus", "missing.txt", "--out", "new/../old")
    assert status == 2, stderr
    assert (tmp_path / "old").is_dir()
    assert not (tmp_path / "new").exists()


def test_uncreatable_out_removes_created_parents(no_training, capsys):
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "made/" + "x" * 300)
    assert_one_line_error(status, stderr, "cannot create --out directory")
    assert not (no_training / "made").exists()


def test_train_linked_report_in_unwritable_directory(no_training, monkeypatch, capsys):
    (no_training / "run").mkdir()
    (no_training / "target").mkdir()
    (no_training / "run" / "report.json").symlink_to(no_training / "target" / "report.json")
    (no_training / "target" / "report.json").write_text("{}")
    real_check = cli._check_writable

    def target_read_only(directory, described):
        if Path(directory) == no_training / "target":
            raise ValueError(f"{described}: cannot create files in {str(directory)!r}")
        real_check(directory, described)

    monkeypatch.setattr(cli, "_check_writable", target_read_only)
    status, stderr = run_main(capsys, "train", "--steps", "2", "--out", "run")
    assert_one_line_error(status, stderr, "--out 'run/report.json': cannot create files in")


def test_out_file_name_too_long(no_training, capsys):
    name = "c" * 300 + ".json"
    status, stderr = run_main(capsys, "compare-positional", "--steps", "2", "--out", name)
    assert_one_line_error(status, stderr, "cannot be used (File name too long); give another --out")


def test_positional_report_directory_names_option(tmp_path, capsys):
    (tmp_path / "rep").mkdir()
    status, stderr = run_main(capsys, "profile", "--positional-report", str(tmp_path / "rep"))
    assert_one_line_error(status, stderr, "--positional-report: expected a text file")


def test_positional_report_with_too_many_digits(tmp_path, capsys):
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(COMPLETE_REPORT).replace("3.3", "1" + "0" * 5000), encoding="utf-8")
    status, stderr = run_main(capsys, "profile", "--positional-report", str(path))
    assert_one_line_error(status, stderr, f"--positional-report {str(path)!r} is not valid JSON")


def test_out_link_then_dotdot_checks_where_os_writes(no_training):
    # "link/../run" is a sibling of the link's target. A foreign checkpoint/
    # beside the link must not matter, and a read-only target parent must.
    (no_training / "elsewhere" / "sub").mkdir(parents=True)
    (no_training / "link").symlink_to("elsewhere/sub")
    (no_training / "run" / "checkpoint").mkdir(parents=True)
    (no_training / "run" / "checkpoint" / "notes.txt").write_text("mine")
    cli._check_checkpoint_target(Path("link/../run"))
    with pytest.raises(ValueError, match="non-empty directory without a config.json"):
        cli._check_checkpoint_target(Path("run"))

    checked = []
    real_check = cli._check_writable

    def record_check(directory, described):
        checked.append(Path(directory).resolve())
        real_check(directory, described)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_check_writable", record_check)
        cli._check_output_file(Path("link/../v.npy"))
    assert checked == [no_training / "elsewhere"]


def test_failed_profile_removes_created_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def fail(args, measured):
        raise ValueError("measuring failed")

    monkeypatch.setattr(cli, "_profile_and_report", fail)
    status, stderr = run_main(capsys, "profile", "--plot", "figures/a/b")
    assert_one_line_error(status, stderr, "measuring failed")
    assert not (tmp_path / "figures").exists()


def test_failed_train_removes_created_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    status, stderr = run_main(capsys, "train", "--steps", "2", "--corpus", "empty.txt", "--out", "new/run")
    assert status == 2, stderr
    assert not (tmp_path / "new").exists()

    (tmp_path / "existing").mkdir()
    status, stderr = run_main(capsys, "train", "--steps", "2", "--corpus", "empty.txt", "--out", "existing")
    assert status == 2, stderr
    assert (tmp_path / "existing").is_dir()


@pytest.mark.parametrize(
    "argv, named, not_named",
    [
        (["train", "--context", "100000"], "not enough memory for train; use smaller values of --context, --dim, --hidden", "vocabulary"),
        (["compare-positional", "--hidden", "1000000000"], "not enough memory for compare-positional; use smaller values of --context", "vocabulary"),
        (["embed", "--max-length", "200000000"], "not enough memory for embed; use smaller values of --dim, --max-length", "vocabulary"),
        (["profile"], "not enough memory for profile; use smaller values of --vocab-size, --dim", "--hidden"),
    ],
)
def test_memory_error_names_size_options(monkeypatch, capsys, argv, named, not_named):
    def out_of_memory(args):
        raise MemoryError

    handler = {"train": "_run_train", "compare-positional": "_run_compare_positional", "embed": "_run_embed", "profile": "_run_profile"}[argv[0]]
    monkeypatch.setattr(cli, handler, out_of_memory)
    status, stderr = run_main(capsys, *argv)
    assert_one_line_error(status, stderr, named)
    assert not_named not in stderr


COMPLETE_REPORT = {
    "config": {"steps": 4, "context": 16, "embedding_dim": 16, "num_heads": 2, "hidden_dim": 32, "batch_size": 4},
    "bigram_bits_per_char": 3.3,
    "interrupted": False,
    "results": {
        "sinusoidal": {"steps_done": 4, "tokens_per_second": 900.0, "heldout_bits_per_char": 2.1, "heldout_bits_per_char_2x_context": 3.4},
        "learned": {"steps_done": 4, "tokens_per_second": 900.0, "heldout_bits_per_char": 2.2, "heldout_bits_per_char_2x_context": None},
        "none": {"steps_done": 4, "tokens_per_second": 900.0, "heldout_bits_per_char": 2.9, "heldout_bits_per_char_2x_context": 3.0},
    },
}


@pytest.mark.parametrize(
    "kind, key, value, message",
    [
        ("sinusoidal", "heldout_bits_per_char_2x_context", "abc", "results['sinusoidal']['heldout_bits_per_char_2x_context'] must be a number; received 'abc' (str)"),
        ("learned", "heldout_bits_per_char", None, "results['learned']['heldout_bits_per_char'] must be a number; received None"),
        ("none", "heldout_bits_per_char", -1.0, "results['none']['heldout_bits_per_char'] must be a finite number >= 0; received -1.0"),
        ("none", "tokens_per_second", True, "results['none']['tokens_per_second'] must be a number; received True (bool)"),
        ("sinusoidal", "steps_done", 2.5, "results['sinusoidal']['steps_done'] must equal the config's steps (4); received 2.5 (float)"),
        ("learned", "steps_done", 3, "results['learned']['steps_done'] must equal the config's steps (4); received 3 (int)"),
        ("learned", "steps_done", 4.0, "results['learned']['steps_done'] must equal the config's steps (4); received 4.0 (float)"),
        ("none", "heldout_bits_per_char", 10**400, "results['none']['heldout_bits_per_char'] must be a finite number >= 0"),
        (None, "bigram_bits_per_char", float("inf"), "'bigram_bits_per_char' must be a finite number >= 0; received inf"),
        (None, "config", {"lr": 10**400}, "'config' is not a valid training configuration"),
        (None, "bigram_bits_per_char", "3.3", "'bigram_bits_per_char' must be a number; received '3.3' (str)"),
        (None, "interrupted", True, "compare-positional was interrupted"),
        (None, "interrupted", "no", "'interrupted' must be true or false; received 'no' (str)"),
        (None, "config", None, "'config' must be an object; received None"),
        (None, "config", {"context": "abc"}, "'config' is not a valid training configuration: context must be an integer; received 'abc' (str)"),
    ],
)
def test_positional_report_rejects_bad_figures(tmp_path, monkeypatch, capsys, kind, key, value, message):
    report = json.loads(json.dumps(COMPLETE_REPORT))
    (report if kind is None else report["results"][kind])[key] = value
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    monkeypatch.setattr("tinytorch.profiling.EmbeddingProfiler", None)  # measuring would fail the test
    status, stderr = run_main(capsys, "profile", "--positional-report", str(path))
    assert_one_line_error(status, stderr, f"--positional-report {str(path)!r} is not a complete compare-positional report")
    assert message in stderr


def test_positional_report_needs_2x_key(tmp_path, capsys):
    report = json.loads(json.dumps(COMPLETE_REPORT))
    del report["results"]["learned"]["heldout_bits_per_char_2x_context"]
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    status, stderr = run_main(capsys, "profile", "--positional-report", str(path))
    assert_one_line_error(status, stderr, "results['learned'] has no 'heldout_bits_per_char_2x_context'")


def test_positional_report_rejects_deep_nesting(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    status, stderr = run_main(capsys, "profile", "--positional-report", str(path))
    assert_one_line_error(status, stderr, f"--positional-report {str(path)!r} is not valid JSON: its arrays or objects are nested too deeply")


def test_positional_report_shows_valid_figures(tmp_path, capsys):
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(COMPLETE_REPORT), encoding="utf-8")
    status = cli.main(["profile", "--json", "--vocab-size", "100", "--dim", "8", "--batch-sizes", "1", "--seq-lengths", "4", "--repeats", "1", "--positional-report", str(path)])
    assert status == 0
    positional = json.loads(capsys.readouterr().out)["positional"]
    assert positional["sinusoidal"]["heldout_bits_per_char_2x_context"] == 3.4
    assert positional["learned"]["heldout_bits_per_char_2x_context"] is None
