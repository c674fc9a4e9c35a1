"""Faults on purpose: moved and mistaken checkpoints, damaged files, empty or diverged evaluations,
bad inputs to the model, generate and the command line. Tiny synthetic data (d_model 32, vocab 40).

Each test names the fault it reproduces; every error must name the problem, the file or field, and
the fix, and nothing on disk may be lost.
"""

import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_trainer import V, cfg, make, synthetic_rows

from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.model.packing import check_batch
from reftx_lib.train import checkpoint as ck
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
            r"val\.jsonl, line 1: field 'dialogue' is null, not text",
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
    weights = Path(load_checkpoint(last)["weights_file"])
    pristine = weights.read_bytes()
    data = bytearray(pristine)
    data[-64:-56] = bytes(b ^ 0xFF for b in data[-64:-56])  # 8 bytes of the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"last\.[0-9a-f]{16}\.safetensors is damaged.*sha256.*best\.pt"):
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
    for weights in tmp_path.glob("last*.safetensors"):
        weights.unlink()
    torch.save(legacy, last)  # the format before: one pickle, read with weights_only=False
    with pytest.raises(ValueError, match=r"no last\.<sha256>\.safetensors beside it.*runs code.*Train again"):
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
    import signal

    torch.set_num_threads(1)
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script])
    last, deadline = tmp_path / "last.pt", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if load_checkpoint(last)["step"] >= 5:
                break
        except FileNotFoundError:  # not written yet
            pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(last)["step"]
    assert 5 <= stopped_at < 400
    again = cfg(checkpoint_dir=str(tmp_path), max_steps=400, checkpoint_every=1, stop_after=stopped_at + 5)
    with pytest.warns(UserWarning, match=f"took over {tmp_path} from process {proc.pid}"):  # its lock
        resumed = fit(make(ReferenceDecoderOnly), TRAIN, VAL, again)
    straight = train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(max_steps=400, stop_after=stopped_at + 5))
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in straight]


# ------------------------------------------------------------------ issue 34: runs left overnight
def fork(run) -> int:
    """Start ``run()`` in a forked process, a second process that costs no import; its pid. It exits 0 if
    ``run`` returns; ``os._exit`` inside ``run`` dies as ``kill -9`` does: no cleanup, no ``finally``."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)  # as DataLoader workers do: no OpenMP pool is shared across a fork
            run()
            code = 0
        finally:
            os._exit(code)
    return pid


def exit_status(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _save_killed_before_write(k: int, path: Path, model) -> None:
    """Save ``model`` as ``path``, dying (exit 9) just before the k-th write, rename, flush or delete."""
    count = itertools.count()

    def killed(write):
        def before(*args, **kwargs):
            if next(count) == k:
                os._exit(9)
            return write(*args, **kwargs)

        return before

    ck.save_weights, os.replace, os.fsync = killed(ck.save_weights), killed(os.replace), killed(os.fsync)
    Path.write_bytes, Path.unlink = killed(Path.write_bytes), killed(Path.unlink)
    ck.save_checkpoint(path, model, step=2)


def test_a_kill_at_every_write_of_a_save_leaves_a_checkpoint_that_loads(tmp_path):
    """Before: a kill between the two renames left last.pt of the new save beside last.safetensors of the
    old one, and the error sent the user to best.pt, which was as broken."""
    model = make(ReferenceDecoderOnly)
    ck.save_checkpoint(tmp_path / "base" / "last.pt", model, step=1)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the next save holds other weights
    outcomes = []
    for k in itertools.count():
        folder = shutil.copytree(tmp_path / "base", tmp_path / f"killed-{k}")
        code = exit_status(fork(functools.partial(_save_killed_before_write, k, folder / "last.pt", model)))
        outcomes.append(load_checkpoint(folder / "last.pt")["step"])  # the old save or the new, whole
        assert torch.equal(next(load_model(folder / "last.pt").parameters()), next(model.parameters())) == (
            outcomes[-1] == 2
        )
        ck.save_checkpoint(folder / "last.pt", model, step=3)  # the next save clears what the kill left
        assert sorted(p.suffix for p in folder.iterdir()) == [".pt", ".safetensors"]  # nothing left over
        if code == 0:  # the save met no k-th write: every point of it was killed once
            break
    assert code == 0 and k >= 5 and outcomes[0] == 1 and outcomes[-1] == 2, outcomes


def test_a_second_run_in_a_folder_is_refused_and_a_dead_runs_lock_taken_over(tmp_path, monkeypatch):
    """Before: two runs wrote one folder, and one crashed on a temporary file the other had deleted."""
    (ready_r, ready_w), (go_r, go_w) = os.pipe(), os.pipe()
    real_step = trainer_module.training_step

    def blocked_step(*args, **kwargs):  # the first run, in another process, stops inside its first step
        os.write(ready_w, b"x")
        os.read(go_r, 1)  # b"" too once this test's process ends: the child never outlives it
        os._exit(9)  # then it is killed: its lock stays behind

    def first_run():
        os.close(go_w)
        trainer_module.training_step = blocked_step
        train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path)))

    pid = fork(first_run)
    os.close(go_r)
    try:
        assert os.read(ready_r, 1) == b"x"
        steps = []
        counted = lambda *a, **k: steps.append(1) or real_step(*a, **k)  # noqa: E731
        monkeypatch.setattr(trainer_module, "training_step", counted)
        busy = rf"cannot write checkpoints to {tmp_path} \(another run, process {pid}, writes there\)"
        with pytest.raises(ValueError, match=busy):
            train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path)))
        assert steps == []
    finally:
        os.close(go_w)  # the first run reads end-of-file and is killed
        assert exit_status(pid) == 9
    with pytest.warns(UserWarning, match=f"took over {tmp_path} from process {pid}, which is no longer"):
        train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), max_steps=4))
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4 and not list(tmp_path.glob(".*lock*"))


def _poisoned_at(step: int, monkeypatch) -> None:
    """Training steps whose ``step``-th update turns a weight into NaN; the loss it returns is finite."""
    real, calls = trainer_module.training_step, itertools.count(1)

    def diverging(model, *args, **kwargs):
        loss = real(model, *args, **kwargs)
        if next(calls) == step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(trainer_module, "training_step", diverging)


def test_a_diverged_model_is_never_saved_and_the_message_names_a_checkpoint_that_loads(tmp_path, monkeypatch):
    """Before: last.pt held NaN weights and the message called it the last good checkpoint."""
    _poisoned_at(3, monkeypatch)
    with pytest.raises(FloatingPointError, match="NaN or inf at step 3; the last good checkpoint is") as info:
        train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), checkpoint_every=1))
    named = re.search(r"the last good checkpoint is (\S+)\. ", str(info.value)).group(1)
    assert load_checkpoint(named)["step"] == 2 and load_model(named)
    for path in tmp_path.glob("*.pt"):
        load_model(path)  # finite, every one


def test_a_run_that_diverges_before_its_first_save_says_none_was_saved(tmp_path, monkeypatch):
    """Before: with the default settings the message named a last.pt that did not exist."""
    _poisoned_at(1, monkeypatch)
    with pytest.raises(FloatingPointError, match=r"at step 2; no checkpoint was saved before it\. Lower"):
        train(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path)))
    assert not list(tmp_path.glob("*.pt"))


def test_nan_weights_are_refused_by_load_evaluate_and_generate(tmp_path):
    """Before: evaluate printed "loss": NaN (not JSON), greedy generate printed "", and sampling failed
    with a RuntimeError about the probability tensor."""
    model = make(ReferenceDecoderOnly)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    ck.save_checkpoint(tmp_path / "last.pt", model, step=1)  # as the trainer before issue 34 saved it
    with pytest.raises(
        ValueError, match=r"last\.\w+\.safetensors is not finite.*no checkpoint beside it loads"
    ):
        load_model(tmp_path / "last.pt")  # what evaluate and generate load
    for options in ({}, {"do_sample": True}, {"num_beams": 2}):
        with pytest.raises(FloatingPointError, match="weights hold NaN or inf, as a diverged run's do"):
            model.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=3, **options)
    from course.__main__ import _json

    with pytest.raises(ValueError, match="not finite .* lower learning rate"):
        _json({"perplexity": {"loss": float("nan"), "ppl": math.inf}})
    assert json.loads(_json({"perplexity": {"loss": 2.0}}))


@pytest.mark.parametrize("literal", ["<pad>", "<bos>", "<eos>", "<sep>"])
def test_control_token_strings_in_a_dialogue_or_a_prompt_are_text(literal, tmp_path, monkeypatch):
    """Before: <sep> in a dialogue started the target mid-dialogue; "<pad> hello" as a prompt was refused
    as padding."""
    from datasets import Dataset

    from reftx_lib.constants import BOS_ID, EOS_ID, PAD_ID, SEP_ID
    from reftx_lib.data import tokenizer as tok_module
    from reftx_lib.data.preprocessing import encode_samsum

    tok = tok_module.train_bpe([["Amanda: I baked <b>cookies</b>.", "Jerry: Sure!"]] * 20, vocab_size=300)
    dialogue = f"Amanda: see {literal} here\nJerry: {literal}"
    data = Dataset.from_dict({"id": ["1"], "dialogue": [dialogue], "summary": [f"a {literal} b"]})
    row = encode_samsum(data, tok)[0][0]
    ids = row["input_ids"]
    assert [i for i in ids if i < 4] == [SEP_ID, EOS_ID] and ids.index(SEP_ID) == row["source_len"]
    assert tok.decode(ids[: row["source_len"]]) == dialogue
    tok.save_pretrained(tmp_path / "tokenizer-old")  # a cache written before issue 34: without the option
    config = tmp_path / "tokenizer-old" / "tokenizer_config.json"
    config.write_text(
        json.dumps({k: v for k, v in json.loads(config.read_text()).items() if "split" not in k})
    )
    (tmp_path / "tokenizer-old" / tok_module.INFO_FILE).write_text("{}")
    monkeypatch.setattr(tok_module, "cache_dir", lambda: tmp_path)
    prompt = tok_module.cached_tokenizer("old").encode(f"{literal} hello")
    assert not {PAD_ID, BOS_ID, EOS_ID, SEP_ID} & set(prompt)
    make(ReferenceDecoderOnly).generate(torch.tensor([[t % V for t in prompt]]), max_new_tokens=2)


def test_a_checkpoint_of_another_class_or_shape_is_refused_by_name_not_called_damaged(tmp_path):
    """Before: restoring it into another model called an intact file "damaged"; from_pretrained of another
    class's folder left 14 of 16 tensors at their random values; a missing folder gave "Repo id must be
    in the form"; a checkpoint's weights file given as the checkpoint was called damaged."""
    from reftx_lib.train.checkpoint import from_pretrained, save_pretrained

    last = _saved(tmp_path / "run")
    ckpt = load_checkpoint(last)
    with pytest.raises(
        ValueError, match="holds a ReferenceDecoderOnly, which does not fit this ReferenceTransformer"
    ):
        ck.restore_weights(make(ReferenceTransformer), ckpt)
    with pytest.raises(ValueError, match=r"safetensors is no checkpoint's \.pt file: pass a run's last\.pt"):
        load_model(ckpt["weights_file"])
    save_pretrained(make(ReferenceTransformer), tmp_path / "encdec")
    config = tmp_path / "encdec" / "config.json"
    config.write_text(config.read_text().replace("ReferenceTransformer", "ReferenceDecoderOnly"))
    with pytest.raises(RuntimeError, match=r"(?s)for ReferenceDecoderOnly.*Unexpected key.*encoder_layers"):
        from_pretrained(tmp_path / "encdec")
    with pytest.raises(FileNotFoundError, match=r"no-such-folder/config\.json"):
        from_pretrained(tmp_path / "no-such-folder")


def test_overwrite_removes_every_file_of_the_old_run(tmp_path):
    """Before: the old run's step-*.pt stayed beside the new run's, and rouge_along_training mixed them."""
    from course.evaluation import kept_steps

    fit(make(ReferenceDecoderOnly), TRAIN, VAL, cfg(checkpoint_dir=str(tmp_path), max_steps=8, keep_every=2))
    new = cfg(checkpoint_dir=str(tmp_path), max_steps=6, keep_every=3, lr=1e-3, overwrite=True)
    fit(make(ReferenceDecoderOnly), TRAIN, VAL, new)
    assert list(kept_steps(tmp_path)) == [3, 6]
    assert {load_checkpoint(p)["train_config"]["lr"] for p in tmp_path.glob("*.pt")} == {1e-3}
    assert len(list(tmp_path.glob("*.safetensors"))) == len(list(tmp_path.glob("*.pt")))


def test_one_record_of_a_million_characters_costs_the_tokenizer_seconds(tmp_path, monkeypatch):
    """Before: one 1M-character record with no space stalled tokenizer training for over 300 s."""
    from reftx_lib.data import tokenizer as tok_module

    monkeypatch.setenv("REFTX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tok_module, "MAX_RECORD_CHARS", 20_000)  # the cap (100_000) at a test's size
    folder = tmp_path / "data" / "samsum"
    folder.mkdir(parents=True)
    record = {"id": "1", "dialogue": "A: " + "x" * 1_000_000, "summary": "long"}
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        (folder / name).write_text(json.dumps(record) + "\n")
    start = time.perf_counter()
    texts = list(tok_module._training_texts(["samsum"], [tmp_path / "data"]))
    tok_module.train_bpe(iter(texts), vocab_size=300)
    assert time.perf_counter() - start < 30 and max(len(t) for batch in texts for t in batch) == 20_000


def _samsum_folder(tmp_path, val: str) -> Path:
    folder = tmp_path / "data" / "samsum"
    folder.mkdir(parents=True)
    good = '{"id": "1", "dialogue": "A: hi", "summary": "x"}\n'
    for name, text in (("train.jsonl", good), ("val.jsonl", val), ("test.jsonl", good)):
        (folder / name).write_text(text)
    return tmp_path / "data"


def test_a_lone_surrogate_is_named_and_a_field_only_in_val_is_ignored(tmp_path, monkeypatch):
    """Before: both failed as a DatasetGenerationError that named no file or line."""
    from reftx_lib.data import corpora

    monkeypatch.setenv("REFTX_CACHE_DIR", str(tmp_path / "cache"))
    data = _samsum_folder(tmp_path / "a", '{"id": "1", "dialogue": "A: hi \\ud800", "summary": "x"}\n')
    with pytest.raises(
        ValueError, match=r"val\.jsonl, line 1: field 'dialogue' is \"A: hi \\ud800\", not text"
    ):
        corpora.load_corpus("samsum", search_path=[data])
    data = _samsum_folder(tmp_path / "b", '{"id": "1", "dialogue": "A: hi", "summary": "x", "extra": 1}\n')
    assert corpora.load_corpus("samsum", search_path=[data])["validation"].column_names == [
        "id",
        "summary",
        "dialogue",
    ]


def test_a_split_left_empty_by_the_empty_dialogue_filter_is_named():
    """Before: encode_samsum failed with "Column '_source_cut' doesn't exist"."""
    from datasets import Dataset, DatasetDict

    from reftx_lib.data import corpora

    raw = DatasetDict(
        train=Dataset.from_dict({"id": ["a"], "dialogue": ["A: hi"], "summary": ["x"]}),
        validation=Dataset.from_dict({"id": ["b"], "dialogue": ["  "], "summary": ["y"]}),
    )
    with pytest.raises(ValueError, match="samsum/validation: every dialogue is empty.*fix its file"):
        corpora._clean_samsum(raw)


def test_a_flipped_bit_in_a_header_key_and_a_full_disk_are_named(tmp_path, monkeypatch):
    """Before: a raw KeyError: 'state_sha256'; a raw OSError that left a 2.4 MB .tmp behind."""
    last = _saved(tmp_path)
    weights = next(tmp_path.glob("last*.safetensors"))
    pristine = weights.read_bytes()
    weights.write_bytes(pristine.replace(b'"state_sha256"', b'"state_sha257"', 1))
    with pytest.raises(
        ValueError, match=r"last\.pt is damaged \(its sha256 differs.*load .*best\.pt instead"
    ):
        load_checkpoint(last)
    weights.write_bytes(pristine)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "save_weights", full_disk)
    with pytest.raises(
        OSError, match=r"cannot save .*last\.pt \(\[Errno 28\] No space left on device\): free space"
    ):
        ck.save_checkpoint(last, make(ReferenceDecoderOnly), step=5)
    assert not list(tmp_path.glob(".*tmp")) and load_checkpoint(last)["step"] == 4


@pytest.mark.parametrize(
    "option,value", [("lr", 1e39), ("lr", float("nan")), ("stop_after", 0), ("eval_batches", 0)]
)
def test_settings_that_cannot_work_fail_before_training(option, value):
    """Before: lr 1e39 gave a raw overflow RuntimeError; stop_after=0 trained the whole run; eval_batches=0
    failed only after training, with a misleading message."""
    with pytest.raises(ValueError, match=f"TrainConfig.{option} must be positive"):
        cfg(**{option: value})


@pytest.mark.parametrize("only", [[""], ["0"]])
def test_run_only_selects_notebooks_exactly(only):
    """Before: run --only '' and run --only 0 selected all seven notebooks."""
    from course.runner import notebooks

    with pytest.raises(ValueError, match="no notebook matches"):
        notebooks(only)
    assert [p.name[:2] for p in notebooks(["03", "05"])] == ["03", "05"]


def test_generate_summaries_refuses_a_batch_of_zero_dialogues():
    """Before: "range() arg 3 must not be zero" from deep in the loop; now the argument is named."""
    from reftx_lib.train.evaluation import generate_summaries

    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        generate_summaries(make(ReferenceTransformer), {"input_ids": synthetic_rows(2, packed=True)}, None, 0)
