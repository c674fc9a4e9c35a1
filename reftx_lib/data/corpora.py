"""The course corpora as ``DatasetDict``s (train/validation/test), from local folders, else the Hub. Cleaning
is cached (``datasets.map``/``filter``) and every dropped record is logged: nothing disappears silently."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset

from ..paths import cache_dir, data_search_path

logger = logging.getLogger("reftx")
_warned: set[str] = set()

CORPORA = ("samsum", "textbooks", "tinystories")
SPLITS = ("train", "validation", "test")
LOCAL_FILES: dict[str, tuple[str, ...]] = {  # relative to a data folder; SAMSum's in SPLITS order
    "samsum": ("samsum/train.jsonl", "samsum/val.jsonl", "samsum/test.jsonl"),
    "textbooks": ("library_of_phi/gpt4_textbook_chapters.jsonl",),
    "tinystories": ("tinystories/tinystories_sample.jsonl",),
}
REQUIRED_FIELDS = {  # what every record of a local file must hold as non-null strings
    "samsum": ("id", "dialogue", "summary"),
    "textbooks": ("id", "text", "piece_type"),
    "tinystories": ("text",),
}
_SECTION_START = re.compile(r"(?m)^(?=### )")  # zero-width: split *before* each "### " line


def _warn_once(message: str) -> None:
    """Log a data warning once per process: every notebook loads SAMSum twice (tokenizer and data)."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def check_jsonl(path: Path, fields: Sequence[str]) -> None:
    """Fail naming file, line and field, not deep in ``datasets``; a passed file is rechecked once changed."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    record_file = cache_dir() / "checked-data-files.json"
    passed = set(json.loads(record_file.read_text())) if record_file.is_file() else set()
    if key in passed:
        return
    fix = f"fix or remove that line of {path}, or set REFTX_DATA_DIR to good data (shared/data/SOURCES.md)"
    records = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}, line {number}:"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.start + 4]
                raise ValueError(f"{where} not UTF-8 (byte {exc.start}: {bad!r}); {fix}") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} not valid JSON ({exc.msg} at column {exc.colno}); {fix}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where} a JSON {type(record).__name__}, not an object; {fix}")
            for name in fields:  # a lone surrogate escape such as \ud800 decodes to no character: not text
                if not isinstance(record.get(name), str) or re.search("[\ud800-\udfff]", record[name]):
                    got = "missing" if name not in record else f"{json.dumps(record[name])}, not text"
                    raise ValueError(f"{where} field {name!r} is {got}; {fix}")
            records += 1
    if records == 0:
        raise ValueError(f"{path} holds no records, so its split would be empty; {fix}")
    record_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = record_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sorted(passed | {key})))
    os.replace(tmp, record_file)


def split_of(key: str) -> str:
    """90/5/5 split by a key's sha256: identical on every machine, stable when records are added or moved."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < 90 else "validation" if bucket < 95 else "test"


def _hash_split(ds: Dataset, key_column: str) -> DatasetDict:
    with_split = ds.map(lambda batch: {"_split": [split_of(k) for k in batch[key_column]]}, batched=True)
    keep = lambda name: lambda batch: [s == name for s in batch["_split"]]  # noqa: E731
    return DatasetDict({n: with_split.filter(keep(n), batched=True).remove_columns("_split") for n in SPLITS})


def _json(path: Path) -> Dataset:  # one file, one split: a field found in one file only breaks no schema
    return load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache_dir() / "datasets"))


def _clean_samsum(raw: DatasetDict) -> DatasetDict:
    """Normalise line endings and drop empty dialogues (logged by id)."""
    raw = raw.select_columns(["id", "summary", "dialogue"]).map(
        lambda batch: {"dialogue": [d.replace("\r\n", "\n") for d in batch["dialogue"]]}, batched=True
    )
    out = {}
    for split, ds in raw.items():
        empty = ds.filter(lambda batch: [not d.strip() for d in batch["dialogue"]], batched=True)
        if len(empty):
            ids = ", ".join(empty["id"])
            _warn_once(f"samsum/{split}: dropped {len(empty)} record(s) with an empty dialogue, id(s) {ids}")
        out[split] = ds.filter(lambda batch: [bool(d.strip()) for d in batch["dialogue"]], batched=True)
        if not len(out[split]):
            raise ValueError(f"samsum/{split}: every dialogue is empty, so no record is left; fix its file")
    return DatasetDict(out)


def _samsum_hub() -> DatasetDict:
    raw = load_dataset("knkarthick/samsum")
    renames = {"val": "validation", "valid": "validation"}
    raw = DatasetDict({renames.get(split, split): ds for split, ds in raw.items()})
    return _clean_samsum(raw)


def split_sections(text: str) -> list[str]:
    """Split a chapter before every ``### `` line: sections fit a small model's context, chapters do not."""
    return [piece for piece in _SECTION_START.split(text) if piece]


def _explode_sections(batch: dict[str, list]) -> dict[str, list]:
    ids, texts, chapter_ids = [], [], []
    for chapter_id, chapter in zip(batch["id"], batch["text"]):
        for k, section in enumerate(split_sections(chapter)):
            ids.append(f"{chapter_id}-s{k}")
            texts.append(section)
            chapter_ids.append(chapter_id)
    return {"id": ids, "text": texts, "chapter_id": chapter_ids}


def _textbooks(chapters: Dataset) -> DatasetDict:
    n_all = len(chapters)
    chapters = chapters.filter(lambda batch: [t != "front_matter" for t in batch["piece_type"]], batched=True)
    logger.info("textbooks: dropped %d front-matter record(s) of %d", n_all - len(chapters), n_all)
    sections = chapters.map(_explode_sections, batched=True, remove_columns=chapters.column_names)
    n_sections = len(sections)
    sections = sections.filter(lambda batch: [bool(t.strip()) for t in batch["text"]], batched=True)
    message = "textbooks: %d chapters -> %d sections (dropped %d whitespace-only piece(s))"
    logger.info(message, len(chapters), len(sections), n_sections - len(sections))
    return _hash_split(sections, "chapter_id")  # by chapter: no chapter straddles train and test


def _textbooks_hub() -> DatasetDict:
    raw = load_dataset("nampdn-ai/tiny-textbooks", split="train")
    rows = lambda batch, idx: {"text": batch["textbook"], "id": [f"tt-{i}" for i in idx]}  # noqa: E731
    raw = raw.map(rows, batched=True, with_indices=True, remove_columns=raw.column_names)
    return _hash_split(raw.add_column("chapter_id", raw["id"]), "text")


def _stories(raw: Dataset) -> DatasetDict:
    def rows(batch: dict[str, list], idx: list[int]) -> dict[str, list]:
        return {"id": [f"ts-{i}" for i in idx], "text": [t.strip() for t in batch["text"]]}

    raw = raw.map(rows, batched=True, with_indices=True, remove_columns=raw.column_names)
    return _hash_split(raw, "text")


_LOADERS = {  # name -> (load from the local files LOCAL_FILES[name], load from the Hub)
    "samsum": (lambda files: _clean_samsum(DatasetDict(zip(SPLITS, map(_json, files)))), _samsum_hub),
    "textbooks": (lambda files: _textbooks(_json(files[0])), _textbooks_hub),
    "tinystories": (
        lambda files: _stories(_json(files[0])),
        lambda: _stories(load_dataset("roneneldan/TinyStories", split="train")),
    ),
}


def load_corpus(name: str, search_path: list[Path] | None = None) -> DatasetDict:
    """Corpus ``name`` (train/validation/test), local folders first: the course must run offline."""
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
            return local_loader(needed)
        looked_for += needed
    listing = "\n".join(f"  - {p}" for p in looked_for)
    fix = (
        f"Fix: set REFTX_DATA_DIR to a folder holding {', '.join(LOCAL_FILES[name])} "
        "(see shared/data/SOURCES.md), or unset HF_HUB_OFFLINE and connect to the internet."
    )
    if os.environ.get("HF_HUB_OFFLINE", "0").strip().upper() in {"1", "ON", "YES", "TRUE"}:
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
