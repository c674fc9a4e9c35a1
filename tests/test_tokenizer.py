"""Byte-level BPE: special ids, exact round trips, validation and caching."""

import json

import pytest

from course.data_stats import tokenizer_info
from reftx_lib.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SEP_ID, load_tokenizer, train_bpe

TEXTS = [
    "Amanda: I baked cookies. Do you want some?\nJerry: Sure!",
    "One day, a little girl named Lily found a needle in her room.",
    "### Section 1.1\nThe equation $E = mc^2$ relates energy and mass.",
] * 20


@pytest.fixture(scope="module")
def tiny_tok():
    return train_bpe(TEXTS, vocab_size=320)  # tiny vocab: trains in milliseconds


def test_special_ids(tiny_tok):
    assert (PAD_ID, BOS_ID, EOS_ID, SEP_ID) == (0, 1, 2, 3)
    assert tiny_tok.convert_tokens_to_ids(["<pad>", "<bos>", "<eos>", "<sep>"]) == [0, 1, 2, 3]
    assert (tiny_tok.pad_token_id, tiny_tok.bos_token_id, tiny_tok.eos_token_id, tiny_tok.sep_token_id) == (
        0,
        1,
        2,
        3,
    )


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "Ünïcödé — “quotes” 日本語",
        "emoji 😀👍🏽 ok",
        "lines\nand\r\n  spaces  \n\n",
        " lead",
        "",
    ],
)
def test_round_trip_is_exact(tiny_tok, text):
    ids = tiny_tok.encode(text)
    assert tiny_tok.decode(ids) == text


def test_no_automatic_bos_eos(tiny_tok):
    ids = tiny_tok.encode("hello")
    assert BOS_ID not in ids and EOS_ID not in ids
    assert tiny_tok("hello")["input_ids"] == ids


def test_vocab_size_validated():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(TEXTS, vocab_size=260)


def test_load_tokenizer_caches_and_reports_info(tmp_path, monkeypatch):
    monkeypatch.setenv("REFTX_CACHE_DIR", str(tmp_path))
    try:
        tok = load_tokenizer(vocab_size=400, corpora=("tinystories",))
    except FileNotFoundError:
        pytest.skip("TinyStories data not found")
    info = tokenizer_info(tok)
    assert info["vocab_size"] == 400 and info["train_seconds"] >= 0
    assert info["path"] == str(tmp_path / f"tokenizer-{info['key']}")
    saved = json.loads((tmp_path / f"tokenizer-{info['key']}" / "reftx_tokenizer.json").read_text())
    assert saved["key"] == info["key"]
    again = load_tokenizer(vocab_size=400, corpora=("tinystories",))  # cache hit: same key and vocab
    assert tokenizer_info(again)["key"] == info["key"] and again.get_vocab() == tok.get_vocab()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tokenizer-")] == [
        f"tokenizer-{info['key']}"
    ]


def test_info_of_untracked_tokenizer(tiny_tok):
    assert tokenizer_info(tiny_tok)["key"] is None
