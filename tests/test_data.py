"""Corpus loading: split sizes, cleaning, determinism and the missing-data error."""

import logging
import time

import pytest
from datasets import DatasetDict

from course.data_stats import corpus_stats
from reftx_lib.data.corpora import CORPORA, load_corpus, split_of, split_sections
from reftx_lib.paths import data_search_path


def _has_local(rel: str) -> bool:
    return any((folder / rel).is_file() for folder in data_search_path())


needs_samsum = pytest.mark.skipif(not _has_local("samsum/train.jsonl"), reason="SAMSum data not found")
needs_textbooks = pytest.mark.skipif(
    not _has_local("library_of_phi/gpt4_textbook_chapters.jsonl"), reason="Library of Phi data not found"
)
needs_tinystories = pytest.mark.skipif(
    not _has_local("tinystories/tinystories_sample.jsonl"), reason="TinyStories data not found"
)


@needs_samsum
def test_samsum_counts_and_logged_drop(caplog):
    from reftx_lib.data import corpora

    corpora._warned.clear()  # each drop is logged once per process; another test may have loaded SAMSum first
    with caplog.at_level(logging.WARNING, logger="reftx"):
        dsd = load_corpus("samsum")
    assert {split: len(ds) for split, ds in dsd.items()} == {"train": 14731, "validation": 818, "test": 819}
    assert "13828807" in caplog.text and "dropped 1 record" in caplog.text
    assert "13828807" not in set(dsd["train"]["id"][:])
    assert not any("\r" in d for d in dsd["train"]["dialogue"][:200])
    assert dsd["train"][0]["dialogue"].startswith("Amanda: I baked  cookies. Do you want some?\nJerry")


@needs_textbooks
def test_textbooks_sections_and_split_determinism():
    dsd = load_corpus("textbooks")
    total = sum(len(ds) for ds in dsd.values())
    assert 5500 <= total <= 6000  # ~5.7K sections
    assert set(dsd["train"].column_names) == {"id", "text", "chapter_id"}
    chapters = {split: set(ds["chapter_id"][:]) for split, ds in dsd.items()}
    assert not (chapters["train"] & chapters["validation"] or chapters["train"] & chapters["test"])
    for split, ids in chapters.items():
        assert all(split_of(c) == split for c in ids)
    again = load_corpus("textbooks")
    assert all(again[s]["id"][:] == dsd[s]["id"][:] for s in dsd)


@needs_tinystories
def test_tinystories_ids_and_stats():
    dsd = load_corpus("tinystories")
    assert sum(len(ds) for ds in dsd.values()) == 2316
    row = dsd["train"][0]
    assert row["id"].startswith("ts-") and row["text"] == row["text"].strip()
    stats = corpus_stats(dsd)
    assert stats["train"]["documents"] == len(dsd["train"])
    assert stats["train"]["text_chars_total"] == sum(len(t) for t in dsd["train"]["text"][:])


def test_split_sections_keeps_all_text():
    text = "## Chapter 1\nintro\n### A\nalpha\n#### sub\n### B\nbeta\n"
    pieces = split_sections(text)
    assert pieces == ["## Chapter 1\nintro\n", "### A\nalpha\n#### sub\n", "### B\nbeta\n"]
    assert "".join(pieces) == text


def test_split_of_is_roughly_90_5_5():
    splits = [split_of(f"key-{i}") for i in range(4000)]
    assert 0.87 < splits.count("train") / 4000 < 0.93
    assert split_of("abc") == split_of("abc")


def test_unknown_corpus_names_allowed_values():
    with pytest.raises(ValueError, match="tinystories"):
        load_corpus("wikitext")


@pytest.mark.parametrize("name", CORPORA)
def test_missing_data_fails_fast_with_paths_and_fix(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = [tmp_path / "a", tmp_path / "b"]
    for folder in empty:
        folder.mkdir()
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        load_corpus(name, search_path=empty)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert all(str(folder) in message for folder in empty)
    assert "REFTX_DATA_DIR" in message and "HF_HUB_OFFLINE" in message


def test_corpus_stats_with_tokenizer_counts_tokens():
    from datasets import Dataset

    from reftx_lib.data.tokenizer import train_bpe

    tok = train_bpe(["hello world", "the cat sat"] * 5, vocab_size=300)
    dsd = DatasetDict({"train": Dataset.from_dict({"text": ["hello world", "the cat sat on the mat"]})})
    stats = corpus_stats(dsd, tok)["train"]
    lengths = [len(tok.encode(t)) for t in ["hello world", "the cat sat on the mat"]]
    assert stats["text_tokens_total"] == sum(lengths) and stats["text_tokens_max"] == max(lengths)
