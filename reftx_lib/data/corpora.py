"""The course corpora as Hugging Face ``DatasetDict``s with train/validation/test splits.

Every corpus is looked up in local folders first (``paths.data_search_path``), then on
the Hugging Face Hub unless ``HF_HUB_OFFLINE=1``. All cleaning goes through
``datasets.map``/``filter`` so results are cached, and every dropped record is logged
with a count: nothing disappears silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset

from ..paths import cache_dir, data_search_path

logger = logging.getLogger("reftx")
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log a data warning once per process: every notebook loads SAMSum twice (tokenizer and data)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


CORPORA = ("samsum", "textbooks", "tinystories")
SPLITS = ("train", "validation", "test")

# Files each corpus needs, relative to a data folder.
LOCAL_FILES: dict[str, tuple[str, ...]] = {
    "samsum": ("samsum/train.jsonl", "samsum/val.jsonl", "samsum/test.jsonl"),
    "textbooks": ("library_of_phi/gpt4_textbook_chapters.jsonl",),
    "tinystories": ("tinystories/tinystories_sample.jsonl",),
}

# The text fields every record of a local file must hold (as non-null strings).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "samsum": ("id", "dialogue", "summary"),
    "textbooks": ("id", "text", "piece_type"),
    "tinystories": ("text",),
}


def _checked_file() -> Path:
    return cache_dir() / "checked-data-files.json"  # "path|size|mtime" of every file that passed


def check_jsonl(path: Path, fields: Sequence[str]) -> None:
    """Fail with the file, the line and the field when a local JSONL file cannot be used as it is.

    ``datasets`` would report a malformed line as a ``DatasetGenerationError`` (the row only in a
    log), a missing or null field as a ``TypeError`` deep inside the tokenizer, and an empty
    file as an empty split. A file that passed is not read again until it changes (its size and
    time are recorded in the cache folder).
    """
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    record_file = _checked_file()
    passed = set(json.loads(record_file.read_text())) if record_file.is_file() else set()
    if key in passed:
        return
    fix = (
        f"fix or remove that line of {path}, or point REFTX_DATA_DIR at a good copy (shared/data/SOURCES.md)"
    )
    records = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path}, line {number}: not UTF-8 (byte {exc.start}: "
                    f"{raw[exc.start : exc.start + 4]!r}); {fix}"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno}); {fix}"
                ) from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}, line {number}: a JSON {type(record).__name__}, not an object; {fix}"
                )
            for name in fields:
                if not isinstance(record.get(name), str):
                    problem = (
                        "is missing" if name not in record else f"is {json.dumps(record[name])}, not a string"
                    )
                    raise ValueError(f"{path}, line {number}: field {name!r} {problem}; {fix}")
            records += 1
    if records == 0:
        raise ValueError(f"{path} holds no records, so its split would be empty; {fix}")
    record_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = record_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sorted(passed | {key})))
    os.replace(tmp, record_file)


_SECTION_START = re.compile(r"(?m)^(?=### )")  # zero-width: split *before* each "### " line


def _datasets_cache() -> str:
    return str(cache_dir() / "datasets")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hash_bucket(key: str) -> int:
    """Map a key to a bucket in [0, 100) with sha256.

    A content hash (not a random permutation) keeps splits identical on every machine
    and stable when records are added or reordered.
    """
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % 100


def split_of(key: str) -> str:
    """Return the split (90/5/5 train/validation/test) a key's hash bucket falls in."""
    bucket = hash_bucket(key)
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def _hash_split(ds: Dataset, key_column: str) -> DatasetDict:
    """Split ``ds`` 90/5/5 by the hash of ``key_column`` (see ``split_of``)."""
    with_split = ds.map(lambda batch: {"_split": [split_of(k) for k in batch[key_column]]}, batched=True)
    return DatasetDict(
        {
            name: with_split.filter(
                lambda batch, name=name: [s == name for s in batch["_split"]], batched=True
            ).remove_columns("_split")
            for name in SPLITS
        }
    )


# ----------------------------------------------------------------------------- samsum


def _clean_samsum(dsd: DatasetDict) -> DatasetDict:
    """Normalise line endings and drop empty dialogues (logged by id)."""
    dsd = dsd.map(
        lambda batch: {"dialogue": [d.replace("\r\n", "\n") for d in batch["dialogue"]]}, batched=True
    )
    out = {}
    for split, ds in dsd.items():
        empty = ds.filter(lambda batch: [not d.strip() for d in batch["dialogue"]], batched=True)
        if len(empty):
            _warn_once(
                f"samsum/{split}: dropped {len(empty)} record(s) with an empty dialogue, "
                f"id(s) {', '.join(empty['id'])}"
            )
        out[split] = ds.filter(lambda batch: [bool(d.strip()) for d in batch["dialogue"]], batched=True)
    return DatasetDict(out)


def _samsum_local(folder: Path) -> DatasetDict:
    files = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
    raw = load_dataset(
        "json",
        data_files={split: str(folder / "samsum" / f) for split, f in files.items()},
        cache_dir=_datasets_cache(),
    )
    return _clean_samsum(raw)


def _samsum_hub() -> DatasetDict:
    raw = load_dataset("knkarthick/samsum")
    renames = {"val": "validation", "valid": "validation"}
    raw = DatasetDict({renames.get(split, split): ds for split, ds in raw.items()})
    return _clean_samsum(raw.select_columns(["id", "summary", "dialogue"]))


# -------------------------------------------------------------------------- textbooks


def split_sections(text: str) -> list[str]:
    """Split a Markdown chapter before every line that starts with ``### ``.

    Library of Phi chapters are ~27K characters, far longer than a small model's
    context, while its sections are a natural, self-contained document length. The text
    before the first ``### `` is its own piece. Joining the pieces gives back ``text``.
    """
    return [piece for piece in _SECTION_START.split(text) if piece]


def _explode_sections(batch: dict[str, list]) -> dict[str, list]:
    ids, texts, chapter_ids = [], [], []
    for chapter_id, chapter in zip(batch["id"], batch["text"]):
        for k, section in enumerate(split_sections(chapter)):
            ids.append(f"{chapter_id}-s{k}")
            texts.append(section)
            chapter_ids.append(chapter_id)
    return {"id": ids, "text": texts, "chapter_id": chapter_ids}


def _textbooks_local(folder: Path) -> DatasetDict:
    path = folder / LOCAL_FILES["textbooks"][0]
    chapters = load_dataset("json", data_files=str(path), split="train", cache_dir=_datasets_cache())
    n_all = len(chapters)
    chapters = chapters.filter(lambda batch: [t != "front_matter" for t in batch["piece_type"]], batched=True)
    logger.info("textbooks: dropped %d front-matter record(s) of %d", n_all - len(chapters), n_all)
    sections = chapters.map(_explode_sections, batched=True, remove_columns=chapters.column_names)
    n_sections = len(sections)
    sections = sections.filter(lambda batch: [bool(t.strip()) for t in batch["text"]], batched=True)
    logger.info(
        "textbooks: %d chapters -> %d sections (dropped %d whitespace-only piece(s))",
        len(chapters),
        len(sections),
        n_sections - len(sections),
    )
    # Split by chapter so sections of one chapter never straddle train and test.
    return _hash_split(sections, "chapter_id")


def _textbooks_hub() -> DatasetDict:
    raw = load_dataset("nampdn-ai/tiny-textbooks", split="train")
    raw = raw.map(
        lambda batch, idx: {"text": batch["textbook"], "id": [f"tt-{i}" for i in idx]},
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
    )
    raw = raw.add_column("chapter_id", raw["id"])
    return _hash_split(raw, "text")


# ------------------------------------------------------------------------ tinystories


def _stories_to_dsd(raw: Dataset) -> DatasetDict:
    raw = raw.map(
        lambda batch, idx: {"id": [f"ts-{i}" for i in idx], "text": [t.strip() for t in batch["text"]]},
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
    )
    return _hash_split(raw, "text")


def _tinystories_local(folder: Path) -> DatasetDict:
    path = folder / LOCAL_FILES["tinystories"][0]
    return _stories_to_dsd(
        load_dataset("json", data_files=str(path), split="train", cache_dir=_datasets_cache())
    )


def _tinystories_hub() -> DatasetDict:
    return _stories_to_dsd(load_dataset("roneneldan/TinyStories", split="train"))


_LOADERS: dict[str, tuple[Callable[[Path], DatasetDict], Callable[[], DatasetDict]]] = {
    "samsum": (_samsum_local, _samsum_hub),
    "textbooks": (_textbooks_local, _textbooks_hub),
    "tinystories": (_tinystories_local, _tinystories_hub),
}


def load_corpus(name: str, search_path: list[Path] | None = None) -> DatasetDict:
    """Load corpus ``name`` with splits train/validation/test, from disk or the Hub.

    Local folders come first because the course must run offline and the Hub copies
    of some corpora have disappeared; the Hub is a fallback for users with internet.
    """
    if name not in CORPORA:
        raise ValueError(f"Unknown corpus {name!r}; choose one of {CORPORA}.")
    folders = data_search_path() if search_path is None else [Path(p) for p in search_path]
    local_loader, hub_loader = _LOADERS[name]
    looked_for: list[Path] = []
    for folder in folders:
        needed = [folder / rel for rel in LOCAL_FILES[name]]
        if all(p.is_file() for p in needed):
            logger.info("%s: loading from %s", name, folder)
            for path in needed:
                check_jsonl(path, REQUIRED_FIELDS[name])
            return local_loader(folder)
        looked_for += needed

    listing = "\n".join(f"  - {p}" for p in looked_for)
    fix = (
        f"Fix: set REFTX_DATA_DIR to a folder holding {', '.join(LOCAL_FILES[name])} "
        "(see shared/data/SOURCES.md), or unset HF_HUB_OFFLINE and connect to the internet."
    )
    if _hub_offline():
        logger.warning("%s: no local copy found and HF_HUB_OFFLINE=1, so the Hub is skipped", name)
        raise FileNotFoundError(f"Corpus {name!r} not found. Looked for:\n{listing}\n{fix}")
    logger.warning("%s: no local copy found; trying the Hugging Face Hub", name)
    try:
        return hub_loader()
    except Exception as err:  # noqa: BLE001 - any Hub failure becomes one clear error
        raise FileNotFoundError(
            f"Corpus {name!r} not found locally and the Hub failed ({type(err).__name__}: {err}). "
            f"Looked for:\n{listing}\n{fix}"
        ) from err


# ------------------------------------------------------------------------------ stats


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def _summary(values: np.ndarray, prefix: str) -> dict[str, float | int]:
    return {
        f"{prefix}_total": int(values.sum()),
        f"{prefix}_mean": float(values.mean()) if len(values) else 0.0,
        f"{prefix}_median": float(np.median(values)) if len(values) else 0.0,
        f"{prefix}_max": int(values.max()) if len(values) else 0,
    }


def token_lengths(ds: Dataset, tokenizer, field: str = "text") -> np.ndarray:
    """Tokens per document of ``ds[field]``, through a cached ``map`` (histograms and statistics share it)."""
    counts = ds.map(
        lambda batch: {"n_tokens": [len(ids) for ids in _encode(tokenizer, batch[field])]},
        batched=True,
        remove_columns=ds.column_names,
    )
    return np.asarray(counts["n_tokens"][:], dtype=np.int64)


def corpus_stats(
    dsd: DatasetDict, tokenizer=None, text_fields: Sequence[str] | None = None
) -> dict[str, dict[str, float | int]]:
    """Return per-split sizes: documents, characters and (with a tokenizer) tokens.

    Model and batch sizes should follow from how much text there is, so notebooks print
    these numbers before training. ``text_fields`` defaults to ``("text",)`` or, for
    SAMSum, ``("dialogue", "summary")``; each field gets its own ``<field>_chars_*``
    and ``<field>_tokens_*`` entries (total, mean, median, max per document).
    """
    stats: dict[str, dict[str, float | int]] = {}
    for split, ds in dsd.items():
        fields = text_fields or (("text",) if "text" in ds.column_names else ("dialogue", "summary"))
        row: dict[str, float | int] = {"documents": len(ds)}
        for field in fields:
            texts = ds[field][:]
            row |= _summary(np.array([len(t) for t in texts], dtype=np.int64), f"{field}_chars")
            if tokenizer is not None:
                row |= _summary(token_lengths(ds, tokenizer, field), f"{field}_tokens")
        stats[split] = row
    return stats
