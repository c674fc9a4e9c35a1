"""Token-level formats: chunking, midpoint split, per-document rows, packing, SAMSum rows."""

import pytest
from datasets import Dataset, DatasetDict

from reftx_lib.constants import BOS_ID, EOS_ID, SEP_ID
from reftx_lib.data.preprocessing import (
    chunk_document,
    encode_blocks,
    encode_documents,
    encode_midpoint,
    encode_samsum,
    midpoint_split,
)
from reftx_lib.data.tokenizer import train_bpe

WORDS = "the quick brown fox jumps over a lazy dog while Lily bakes cookies for Jerry".split()


def _doc(n_words: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n_words))


@pytest.fixture(scope="module")
def tok():
    return train_bpe([_doc(40, k) for k in range(len(WORDS))], vocab_size=300)  # tiny vocab for speed


@pytest.fixture(scope="module")
def docs():
    sizes = [3, 10, 60, 130, 400, 1]  # words: short, medium and long documents
    return Dataset.from_dict(
        {"id": [f"d{i}" for i in range(len(sizes))], "text": [_doc(n, i) for i, n in enumerate(sizes)]}
    )


@pytest.mark.parametrize("n, max_tokens", [(0, 5), (1, 5), (5, 5), (6, 5), (11, 5), (520, 510), (1021, 510)])
def test_chunking_is_exact_and_bounded(n, max_tokens):
    ids = list(range(n))
    chunks = chunk_document(ids, max_tokens)
    assert sum(chunks, []) == ids
    assert all(1 <= len(c) <= max_tokens for c in chunks)
    assert len(chunks) == -(-n // max_tokens)
    if chunks:
        assert max(map(len, chunks)) - min(map(len, chunks)) <= 1  # balanced: no tiny tail


@pytest.mark.parametrize("n, half", [(2, 1), (3, 1), (4, 2), (7, 3), (8, 4)])
def test_midpoint_split_lengths(n, half):
    ids = list(range(10, 10 + n))
    row = midpoint_split(ids)
    assert row == ids[:half] + [SEP_ID] + ids[half:] + [EOS_ID]


@pytest.mark.parametrize("n", [0, 1])
def test_midpoint_split_too_short_raises(n):
    with pytest.raises(ValueError, match="at least 2"):
        midpoint_split(list(range(n)))


def test_midpoint_and_documents_supervise_identical_targets(tok, docs):
    mid, mid_stats = encode_midpoint(docs, tok, max_doc_tokens=64, min_doc_tokens=8)
    per_doc, doc_stats = encode_documents(docs, tok, max_doc_tokens=64, min_doc_tokens=8)
    assert len(mid) == len(per_doc) == mid_stats["chunks"] == doc_stats["chunks"]
    assert mid["doc_id"][:] == per_doc["doc_id"][:]
    for m, d in zip(mid, per_doc):
        h = m["source_len"]
        assert d["source_len"] == h and d["target_len"] == m["target_len"]
        assert m["input_ids"][h] == SEP_ID and d["input_ids"][0] == BOS_ID
        targets = m["input_ids"][h + 1 :]  # second half + eos
        assert targets == d["input_ids"][1 + h :]
        assert len(targets) == m["target_len"]
    assert doc_stats["supervised_tokens"] == sum(len(r) - 1 for r in per_doc["input_ids"][:])
    assert mid_stats["supervised_tokens"] == sum(mid["target_len"][:])


def test_prefix_rows_are_the_midpoint_rows_after_a_bos(tok, docs):
    mid, mid_stats = encode_midpoint(docs, tok, max_doc_tokens=64, min_doc_tokens=8)
    pre, pre_stats = encode_midpoint(docs, tok, max_doc_tokens=64, min_doc_tokens=8, bos=True)
    assert [[BOS_ID] + r for r in mid["input_ids"][:]] == pre["input_ids"][:]
    assert pre["source_len"][:] == mid["source_len"][:] and pre["target_len"][:] == mid["target_len"][:]
    assert pre_stats["supervised_tokens"] == mid_stats["supervised_tokens"]


def test_chunks_cover_documents_and_short_ones_are_counted(tok, docs):
    mid, stats = encode_midpoint(docs, tok, max_doc_tokens=64, min_doc_tokens=8)
    encoded = {i: tok.encode(t) for i, t in zip(docs["id"][:], docs["text"][:])}
    short = [i for i, ids in encoded.items() if len(ids) < 8]
    assert stats["dropped_short"] == len(short) == 2  # the 1- and 3-word documents
    assert stats["dropped_short_tokens"] == sum(len(encoded[i]) for i in short)
    for doc_id, ids in encoded.items():
        rows = [r for r, d in zip(mid["input_ids"][:], mid["doc_id"][:]) if d == doc_id]
        rebuilt = [t for r in rows for t in r if t not in (SEP_ID, EOS_ID)]
        assert rebuilt == ([] if doc_id in short else ids)
    assert stats["input_tokens"] == sum(len(r) for r in mid["input_ids"][:])
    assert stats["token_utilization"] == pytest.approx(stats["supervised_tokens"] / stats["input_tokens"])


def test_blocks_are_exact_and_lose_only_the_tail(tok, docs):
    blocks, stats = encode_blocks(docs, tok, block_size=32)
    stream = [t for text in docs["text"][:] for t in [BOS_ID] + tok.encode(text) + [EOS_ID]]
    rows = blocks["input_ids"][:]
    assert all(len(r) == 32 for r in rows)
    assert sum(rows, []) == stream[: len(rows) * 32]
    assert stats["dropped_tail_tokens"] == len(stream) - len(rows) * 32 < 32
    assert stats["input_tokens"] == len(stream) and stats["blocks"] == len(rows)


def test_dataset_dict_gives_per_split_stats(tok, docs):
    out, stats = encode_midpoint(
        DatasetDict({"train": docs, "test": docs}), tok, max_doc_tokens=64, min_doc_tokens=8
    )
    assert isinstance(out, DatasetDict) and set(stats) == {"train", "test"}
    assert stats["train"] == stats["test"]


def test_samsum_rows_and_truncation_counts(tok):
    ds = Dataset.from_dict(
        {"id": ["1", "2"], "dialogue": [_doc(5), _doc(200)], "summary": [_doc(3), _doc(100)]}
    )
    out, stats = encode_samsum(ds, tok, max_source_len=50, max_target_len=20)
    assert stats["source_truncated"] == 1 and stats["target_truncated"] == 1
    assert {"id", "dialogue", "summary", "input_ids", "source_len", "target_len"} <= set(out.column_names)
    first = out[0]
    src, tgt = tok.encode(_doc(5)), tok.encode(_doc(3))
    assert first["input_ids"] == src + [SEP_ID] + tgt + [EOS_ID]
    assert (first["source_len"], first["target_len"]) == (len(src), len(tgt) + 1)
    second = out[1]
    assert second["source_len"] == 50 and second["target_len"] == 20 and len(second["input_ids"]) == 71
