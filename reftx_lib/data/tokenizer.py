"""One byte-level BPE tokenizer shared by every experiment in the course.

Training it on the union of the training splits (SAMSum dialogues and summaries,
textbooks, TinyStories) gives all models the same vocabulary, so their losses and
checkpoints are comparable. Byte-level BPE never emits an unknown token: any UTF-8
text, emoji included, round-trips exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..constants import BOS_ID, EOS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS
from ..paths import cache_dir
from .corpora import load_corpus

logger = logging.getLogger("reftx")

DEFAULT_CORPORA = ("samsum", "textbooks", "tinystories")
INFO_FILE = "reftx_tokenizer.json"
_FORMAT_VERSION = 1  # bump when the training recipe changes, to invalidate caches
_BATCH = 1000


def _check_vocab_size(vocab_size: int) -> None:
    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size <= minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must exceed {minimum} "
            f"({len(SPECIAL_TOKENS)} special tokens + 256 byte tokens)."
        )


def _training_texts(corpora: Sequence[str], search_path: list[Path] | None) -> Iterator[list[str]]:
    """Yield batches of training-split texts (SAMSum gives dialogues and summaries)."""
    for name in corpora:
        train = load_corpus(name, search_path)["train"]
        fields = ("dialogue", "summary") if name == "samsum" else ("text",)
        for start in range(0, len(train), _BATCH):
            batch = train[start : start + _BATCH]
            for field in fields:
                yield batch[field]


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        sep_token="<sep>",
        clean_up_tokenization_spaces=False,  # keep decode(encode(text)) == text
    )


def train_bpe(texts: Iterator[list[str]] | Sequence[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Train the course's byte-level BPE on ``texts`` (strings or batches of strings).

    Split out from ``train_tokenizer`` so tests and notebooks can train a tiny tokenizer
    on a few sentences with exactly the same recipe as the real one.
    """
    _check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..3 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != [PAD_ID, BOS_ID, EOS_ID, SEP_ID]:
        raise RuntimeError(f"special token ids are {ids}, expected [0, 1, 2, 3]")
    return _wrap(tok)


def train_tokenizer(
    vocab_size: int = 8192, corpora: Sequence[str] = DEFAULT_CORPORA, search_path: list[Path] | None = None
) -> PreTrainedTokenizerFast:
    """Train a fresh tokenizer on the training splits of ``corpora`` (no caching).

    Only training splits are used so validation and test text never shapes the
    vocabulary. Prefer ``load_tokenizer``, which caches the result.
    """
    return train_bpe(_training_texts(corpora, search_path), vocab_size)


def data_fingerprint(corpora: Sequence[str], search_path: list[Path] | None = None) -> str:
    """Return a sha256 over the training texts of ``corpora``.

    Hashing content (not paths, mtimes or ``datasets`` fingerprints) gives the same key
    on every machine for the same data, and a new key as soon as the data changes.
    """
    digest = hashlib.sha256()
    for batch in _training_texts(corpora, search_path):
        for text in batch:
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()


def tokenizer_key(vocab_size: int, corpora: Sequence[str], fingerprint: str) -> str:
    """Short hash naming a cached tokenizer: recipe version, vocab size, corpora and data."""
    spec = json.dumps([_FORMAT_VERSION, vocab_size, list(corpora), fingerprint])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def load_tokenizer(
    vocab_size: int = 8192, corpora: Sequence[str] = DEFAULT_CORPORA, search_path: list[Path] | None = None
) -> PreTrainedTokenizerFast:
    """Return the cached tokenizer for these settings, training and saving it if absent.

    Training takes about a minute on the full data, so it happens once per machine;
    the save is atomic (temporary folder, then rename) so an interrupted run never
    leaves a half-written tokenizer that later runs would trust.
    """
    _check_vocab_size(vocab_size)
    key = tokenizer_key(vocab_size, corpora, data_fingerprint(corpora, search_path))
    final = cache_dir() / f"tokenizer-{key}"
    if not (final / INFO_FILE).is_file():
        start = time.perf_counter()
        tok = train_tokenizer(vocab_size, corpora, search_path)
        seconds = time.perf_counter() - start
        logger.info("trained tokenizer %s (vocab %d) in %.1f s", key, vocab_size, seconds)
        tmp = Path(tempfile.mkdtemp(prefix=f".tokenizer-{key}-", dir=cache_dir()))
        tok.save_pretrained(tmp)
        info = {
            "key": key,
            "vocab_size": vocab_size,
            "corpora": list(corpora),
            "train_seconds": round(seconds, 2),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp)
    return PreTrainedTokenizerFast.from_pretrained(str(final))


def cached_tokenizer(key: str) -> PreTrainedTokenizerFast:
    """The cached tokenizer named ``key`` (as a checkpoint records it), read from its own folder.

    No corpus is read: a trained model can be evaluated or sampled offline, with only its
    tokenizer's folder on disk.
    """
    folder = cache_dir() / f"tokenizer-{key}"
    if not (folder / INFO_FILE).is_file():
        raise FileNotFoundError(
            f"tokenizer {key} is not cached in {cache_dir()}: copy its folder tokenizer-{key} there, or "
            "rebuild it with `python -m course prepare` from the corpora it was trained on"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def tokenizer_info(tok: PreTrainedTokenizerFast) -> dict[str, object]:
    """Describe a tokenizer for checkpoints: vocab size, cache path, key, training time.

    A checkpoint that stores this can name the exact tokenizer it was trained with.
    Tokenizers not loaded through ``load_tokenizer`` have ``None`` for path, key and time.
    """
    info: dict[str, object] = {"vocab_size": len(tok), "path": None, "key": None, "train_seconds": None}
    info_file = Path(tok.name_or_path) / INFO_FILE if tok.name_or_path else None
    if info_file is not None and info_file.is_file():
        saved = json.loads(info_file.read_text())
        info |= {"path": str(info_file.parent), "key": saved["key"], "train_seconds": saved["train_seconds"]}
    return info
