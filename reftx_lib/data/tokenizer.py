"""One byte-level BPE tokenizer for every experiment: one vocabulary makes losses and checkpoints comparable,
and byte-level BPE round-trips any UTF-8 text exactly: "<sep>" written in a text is text, never id 3."""

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
from .corpora import CORPORA, load_corpus

logger = logging.getLogger("reftx")

INFO_FILE = "reftx_tokenizer.json"
_FORMAT_VERSION = 1  # bump when the training recipe changes, to invalidate caches
_BATCH = 1000
MAX_RECORD_CHARS = 100_000  # fed to training per record: BPE time grows as the square of a word's length


def _check_vocab_size(vocab_size: int) -> None:
    minimum, why = len(SPECIAL_TOKENS) + 256, f"{len(SPECIAL_TOKENS)} special tokens + 256 byte tokens"
    if vocab_size <= minimum:
        raise ValueError(f"vocab_size={vocab_size} is too small: it must exceed {minimum} ({why}).")


def _training_texts(corpora: Sequence[str], search_path: list[Path] | None) -> Iterator[list[str]]:
    """Batches of training-split texts only, so validation and test text never shapes the vocabulary."""
    for name in corpora:
        train = load_corpus(name, search_path)["train"]
        fields = ("dialogue", "summary") if name == "samsum" else ("text",)
        for start in range(0, len(train), _BATCH):
            batch = train[start : start + _BATCH]
            for field in fields:  # the corpora's longest record has 71k; 1M with no space would take minutes
                yield [text[:MAX_RECORD_CHARS] for text in batch[field]]


def train_bpe(texts: Iterator[list[str]] | Sequence[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """The course's byte-level BPE trained on ``texts`` (strings or batches): one recipe for every size."""
    _check_vocab_size(vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet, special = pre_tokenizers.ByteLevel.alphabet(), list(SPECIAL_TOKENS)  # special: ids 0..3
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != [PAD_ID, BOS_ID, EOS_ID, SEP_ID]:
        raise RuntimeError(f"special token ids are {ids}, expected [0, 1, 2, 3]")
    specials = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "sep_token": "<sep>"}
    options = dict(clean_up_tokenization_spaces=False, split_special_tokens=True)  # decode(encode(t)) == t
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials, **options)


def tokenizer_key(vocab_size: int, corpora: Sequence[str], search_path: list[Path] | None = None) -> str:
    """Short hash of recipe, vocab size, corpora and their texts (not paths): the same on every machine."""
    digest = hashlib.sha256()
    for batch in _training_texts(corpora, search_path):
        for text in batch:
            digest.update(text.encode("utf-8") + b"\0")
    spec = json.dumps([_FORMAT_VERSION, vocab_size, list(corpora), digest.hexdigest()])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def load_tokenizer(
    vocab_size: int = 8192, corpora: Sequence[str] = CORPORA, search_path: list[Path] | None = None
) -> PreTrainedTokenizerFast:
    """The cached tokenizer for these settings, trained once per machine and saved atomically if absent."""
    _check_vocab_size(vocab_size)
    key = tokenizer_key(vocab_size, corpora, search_path)
    final = cache_dir() / f"tokenizer-{key}"
    if not (final / INFO_FILE).is_file():
        start = time.perf_counter()
        tok = train_bpe(_training_texts(corpora, search_path), vocab_size)
        seconds = time.perf_counter() - start
        logger.info("trained tokenizer %s (vocab %d) in %.1f s", key, vocab_size, seconds)
        tmp = Path(tempfile.mkdtemp(prefix=f".tokenizer-{key}-", dir=cache_dir()))
        tok.save_pretrained(tmp)
        info = dict(key=key, vocab_size=vocab_size, corpora=list(corpora), train_seconds=round(seconds, 2))
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp)
    return PreTrainedTokenizerFast.from_pretrained(str(final), split_special_tokens=True)  # older caches too


def cached_tokenizer(key: str) -> PreTrainedTokenizerFast:
    """The cached tokenizer ``key`` (as a checkpoint records it), read without any corpus: works offline."""
    folder = cache_dir() / f"tokenizer-{key}"
    if not (folder / INFO_FILE).is_file():
        raise FileNotFoundError(
            f"tokenizer {key} is not cached in {cache_dir()}: copy its folder tokenizer-{key} there, or "
            "rebuild it with `python -m course prepare` from the corpora it was trained on"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(folder), split_special_tokens=True)
