"""Faults on purpose: moved and mistaken checkpoints, damaged files, empty or diverged evaluations,
bad inputs to the model, generate and the command line. Tiny synthetic data (d_model 32, vocab 40).

Each test names the fault it reproduces; every error must name the problem, the file or field, and
the fix, and nothing on disk may be lost.
"""

import hashlib
import math
import shutil
import subprocess
import sys

import pytest
import torch
from test_trainer import V, cfg, make, synthetic_rows

from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.model.packing import check_batch
from reftx_lib.train import trainer as trainer_module
from reftx_lib.train.checkpoint import CheckpointMismatchError, load_checkpoint, load_model
from reftx_lib.train.evaluation import compute_rouge, evaluate_loss, perplexity_of
from reftx_lib.train.trainer import fit, train

ROWS = synthetic_rows(120, packed=False)
TRAIN, VAL = ROWS[:100], ROWS[100:]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ checkpoints
def test_a_moved_folder_is_the_same_run_and_a_stopped_run_continues(tmp_path):
    """Before: a trailing slash, a moved folder or another stop_after retrained from scratch over last.pt."""
    full = train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg())
    first = tmp_path / "a"
    fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(first), stop_after=4))
    assert load_checkpoint(first / "last.pt")["step"] == 4
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    resumed = fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=f"{moved}/"))
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in full]  # continued, bit-exact


def test_another_run_never_overwrites_a_checkpoint(tmp_path):
    """Before: a different config printed a warning and overwrote last.pt and best.pt."""
    fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path)))
    before = digest(tmp_path / "last.pt")
    for run in (
        lambda: fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), lr=1e-3)),
        lambda: train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), seed=8)),
    ):
        with pytest.raises(CheckpointMismatchError, match=r"another run \(.*(lr|seed): .*--overwrite"):
            run()
        assert digest(tmp_path / "last.pt") == before
    fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), lr=1e-3, overwrite=True))
    assert load_checkpoint(tmp_path / "last.pt")["train_config"]["lr"] == 1e-3


def test_resume_refuses_another_run(tmp_path):
    """Before: another data tag trained on silently; another architecture gave a load_state_dict traceback."""
    fit(
        make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), data="samsum", stop_after=4)
    )
    last = tmp_path / "last.pt"
    with pytest.raises(CheckpointMismatchError, match=r"data: 'samsum' there, 'textbooks' here"):
        train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(data="textbooks"), resume=last)
    with pytest.raises(CheckpointMismatchError, match=r"model_class: 'ReferenceDecoderOnly' there"):
        train(
            make(ReferenceTransformer),
            synthetic_rows(50, packed=True),
            synthetic_rows(10, packed=True),
            cfg(data="samsum"),
            resume=last,
        )


def test_a_damaged_checkpoint_names_the_file_and_best_pt(tmp_path):
    fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), max_steps=4, eval_every=2))
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a save cut short
    with pytest.raises(ValueError, match=r"last\.pt is damaged.*best\.pt"):
        load_model(last)


def test_an_unwritable_folder_fails_before_the_first_step(tmp_path, monkeypatch):
    """Before: a bad --out was found at the first checkpoint, after 15 to 500 steps."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    steps = []
    monkeypatch.setattr(trainer_module, "training_step", lambda *a, **k: steps.append(1))
    with pytest.raises(ValueError, match=r"cannot write checkpoints to .*a-file/ckpt.*--out"):
        train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(blocker / "ckpt")))
    assert steps == []


# ------------------------------------------------------------------ evaluation
def test_empty_evaluations_raise_instead_of_perfect_scores():
    """Before: evaluate --limit 0 reported perplexity 1.0 and ROUGE 0 with exit code 0."""
    model = make(ReferenceDecoderOnly)
    with pytest.raises(ValueError, match="no tokens to score"):
        evaluate_loss(model, [], batch_tokens=256)
    with pytest.raises(ValueError, match="no predictions to score"):
        compute_rouge([], [])


def test_a_diverged_run_stops_with_infinite_perplexity_and_its_step(monkeypatch):
    """Before: math.exp of a validation loss above 709 raised OverflowError."""
    assert perplexity_of(800.0) == math.inf and perplexity_of(2.0) == pytest.approx(math.exp(2.0))
    monkeypatch.setattr(trainer_module, "evaluate_loss", lambda *a, **k: {"loss": 800.0, "ppl": math.inf})
    with pytest.raises(FloatingPointError, match="validation loss 800 at step 4: the run has diverged"):
        train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(eval_every=4))


# ------------------------------------------------------------------ model and generate
@pytest.mark.parametrize(
    "ids,message",
    [
        (torch.zeros(0, 5, dtype=torch.long), "input_ids is empty"),
        (torch.zeros(2, 0, dtype=torch.long), "input_ids is empty"),
        (torch.full((1, 4), 5.0), "integer token ids.*float32"),
        (torch.ones(1, 4, dtype=torch.bool), "integer token ids.*bool"),
    ],
)
def test_bad_ids_are_named(ids, message):
    with pytest.raises(ValueError, match=message):
        check_batch(make(ReferenceDecoderOnly), ids)


def test_bad_labels_are_named():
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    model = make(ReferenceDecoderOnly)
    with pytest.raises(ValueError, match=f"labels hold {V + 3}, outside"):
        check_batch(model, ids, labels=torch.tensor([[1, 5, V + 3, 7, 2]]))
    with pytest.raises(ValueError, match="every label is padding or -100.*nan"):
        check_batch(model, ids, labels=torch.full_like(ids, -100))
    packed = torch.tensor([[5, 6, 3, 7, 2]])
    with pytest.raises(ValueError, match="every label is padding or -100"):
        check_batch(make(ReferenceTransformer), packed, labels=torch.tensor([[5, 6, 3, -100, -100]]))


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(do_sample=True, top_k=0), "top_k must be an integer >= 1"),
        (dict(do_sample=True, top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(do_sample=True, temperature=float("nan")), "temperature must be a finite number > 0"),
        (dict(do_sample=True, temperature=0.0), "temperature must be a finite number > 0"),
        (dict(top_p=0.9), "top_p only act when sampling, and greedy decoding would ignore them"),
        (
            dict(num_beams=2, temperature=0.7),
            "temperature only act when sampling, and beam search would ignore",
        ),
    ],
)
def test_generate_rejects_options_it_would_misuse_or_ignore(options, message):
    with pytest.raises(ValueError, match=message):
        make(ReferenceDecoderOnly).generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, **options)


@pytest.mark.parametrize(
    "args,message",
    [
        (["evaluate", "--checkpoint", "x.pt", "--limit", "0"], "0 is not >= 1"),
        (["generate", "--checkpoint", "x.pt", "--text", "  "], "--text is empty"),
    ],
)
def test_cli_rejects_empty_work(args, message):
    out = subprocess.run([sys.executable, "-m", "course", *args], capture_output=True, text=True)
    assert out.returncode in (1, 2) and message in out.stderr, out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_a_gpu_is_an_error():
    """Before: generate --device cuda ran on the CPU without a word."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "course",
            "generate",
            "--device",
            "cuda",
            "--checkpoint",
            "x.pt",
            "--text",
            "hi",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "no CUDA GPU is visible" in out.stderr, out.stderr


# ------------------------------------------------------------------ data
def test_a_mistyped_data_dir_warns(monkeypatch, tmp_path):
    from reftx_lib.paths import data_search_path

    monkeypatch.setenv("REFTX_DATA_DIR", str(tmp_path / "no-such-folder"))
    with pytest.warns(UserWarning, match="REFTX_DATA_DIR=.*no-such-folder is not a folder"):
        paths = data_search_path()
    assert paths[0] == tmp_path / "no-such-folder" and len(paths) == 3


def test_a_dropped_record_is_reported_once(caplog):
    from datasets import Dataset, DatasetDict

    from reftx_lib.data import corpora

    dsd = DatasetDict(
        train=Dataset.from_dict({"id": ["a", "b"], "dialogue": ["A: hi", "  "], "summary": ["x", "y"]})
    )
    with caplog.at_level("WARNING", logger="reftx"):
        for _ in range(2):  # as a notebook does: once for the tokenizer, once for its data
            assert len(corpora._clean_samsum(dsd)["train"]) == 1
    assert [r.getMessage() for r in caplog.records].count(
        "samsum/train: dropped 1 record(s) with an empty dialogue, id(s) b"
    ) == 1


def test_a_checkpoint_finds_its_tokenizer_without_the_corpora(tmp_path, monkeypatch):
    """Before: generate and evaluate hashed all three corpora just to find the cached tokenizer."""
    from reftx_lib.data import tokenizer as tok_module

    monkeypatch.setattr(tok_module, "cache_dir", lambda: tmp_path)
    tok = tok_module.train_bpe([["Amanda: I baked cookies.", "Jerry: Sure!"]] * 20, vocab_size=300)
    tok.save_pretrained(tmp_path / "tokenizer-abc")
    (tmp_path / "tokenizer-abc" / tok_module.INFO_FILE).write_text('{"key": "abc"}')
    monkeypatch.setattr(tok_module, "load_corpus", lambda *a, **k: pytest.fail("a corpus was read"))
    assert tok_module.cached_tokenizer("abc").encode("Amanda") == tok.encode("Amanda")
    with pytest.raises(FileNotFoundError, match="tokenizer zzz is not cached in .*tokenizer-zzz.*prepare"):
        tok_module.cached_tokenizer("zzz")


@pytest.mark.parametrize(
    "content,message",
    [
        (
            b'{"id": "1", "dialogue": "A: hi", "summary": "x"}\n{"id": "2", "dialogue": "B: yo",\n',
            r"val\.jsonl, line 2: not valid JSON",
        ),
        (b"", r"val\.jsonl holds no records, so its split would be empty"),
        (b'{"id": "1", "dialogue": "A: hi"}\n', r"val\.jsonl, line 1: field 'summary' is missing"),
        (
            b'{"id": "1", "dialogue": null, "summary": "x"}\n',
            r"val\.jsonl, line 1: field 'dialogue' is null, not a string",
        ),
        (
            b'{"id": "1", "dialogue": "A: caf\xe9", "summary": "x"}\n',
            r"val\.jsonl, line 1: not UTF-8 \(byte 31",
        ),
    ],
)
def test_bad_data_names_the_file_the_line_and_the_field(tmp_path, monkeypatch, content, message):
    """Before: a DatasetGenerationError, 'corresponds to no data', a TypeError in tokenizers, an
    AttributeError, or a decoding error that named no file."""
    from reftx_lib.data import corpora

    monkeypatch.setenv("REFTX_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "data" / "samsum"
    folder.mkdir(parents=True)
    good = b'{"id": "1", "dialogue": "A: hi", "summary": "x"}\n'
    for name in ("train.jsonl", "test.jsonl"):
        (folder / name).write_bytes(good)
    (folder / "val.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        corpora.load_corpus("samsum", search_path=[tmp_path / "data"])
    assert "REFTX_DATA_DIR" in str(info.value)


def _saved(tmp_path):
    fit(
        make(ReferenceDecoderOnly),
        TRAIN,
        VAL,
        cfg(checkpoint_dir=str(tmp_path), max_steps=6, stop_after=4, eval_every=2),
    )
    return tmp_path / "last.pt"


def test_flipped_bytes_in_either_file_are_caught(tmp_path):
    """Before: 8 flipped bytes in a checkpoint loaded silently, with 2 weights changed."""
    last = _saved(tmp_path)
    weights = last.with_suffix(".safetensors")
    pristine = weights.read_bytes()
    data = bytearray(pristine)
    data[-64:-56] = bytes(b ^ 0xFF for b in data[-64:-56])  # 8 bytes of the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"last\.safetensors is damaged.*sha256.*best\.pt"):
        load_model(last)
    weights.write_bytes(pristine)
    state = bytearray(last.read_bytes())
    state[len(state) // 2] ^= 0xFF
    last.write_bytes(bytes(state))
    with pytest.raises(ValueError, match=r"last\.pt is damaged.*sha256"):
        load_checkpoint(last)


def test_checkpoints_hold_no_code_and_a_killed_save_leaves_nothing_behind(tmp_path):
    last = _saved(tmp_path)
    assert torch.load(last, weights_only=True)["step"] == 4  # plain containers and tensors only
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a save")  # what a kill during a save leaves
    fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), max_steps=6, eval_every=2))
    assert not list(tmp_path.glob("*.tmp")) and load_checkpoint(last)["step"] == 6


def test_an_old_single_file_checkpoint_is_refused_with_a_message_to_train_again(tmp_path):
    last = _saved(tmp_path)
    ckpt, model = load_checkpoint(last), load_model(last)
    legacy = {k: v for k, v in ckpt.items() if k not in ("path", "weights_sha256", "format")}
    legacy["model"] = model.state_dict()
    name, keys, *rest = legacy["rng"]["numpy"]
    legacy["rng"]["numpy"] = (name, keys.numpy().astype("uint32"), *rest)
    last.with_suffix(".safetensors").unlink()
    torch.save(legacy, last)  # the format before: one pickle, read with weights_only=False
    with pytest.raises(ValueError, match=r"no last\.safetensors beside it.*runs code.*Train again"):
        load_model(last)


KILLED_RUN = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_faults import TRAIN, VAL, cfg, make
from reftx_lib import ReferenceDecoderOnly
from reftx_lib.train.trainer import fit
fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir={folder!r}, max_steps=400, checkpoint_every=1))
"""


def test_kill_9_mid_run_then_resume_is_bit_exact(tmp_path):
    """A run killed with SIGKILL while it saves every step continues exactly where its last checkpoint was."""
    import os
    import signal
    import time
    from pathlib import Path

    torch.set_num_threads(1)
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script])
    last, deadline = tmp_path / "last.pt", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if load_checkpoint(last)["step"] >= 5:
                break
        except (FileNotFoundError, ValueError):  # not written yet, or caught between its two renames
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(last)["step"]
    assert 5 <= stopped_at < 400
    resumed = fit(
        make(ReferenceDecoderOnly),
        TRAIN,
        VAL,
        cfg(checkpoint_dir=str(tmp_path), max_steps=400, checkpoint_every=1, stop_after=stopped_at + 5),
    )
    straight = train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(max_steps=400, stop_after=stopped_at + 5))
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]
