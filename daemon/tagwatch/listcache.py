"""The parsed tag list kept in the data folder between starts.

Placing the shipped photo vocabulary in WordNet (1,171 tags, their synsets, levels and synonyms)
takes 0.2-0.27 s of one core on every start, before a scan decodes its first photo or the daemon
says it is running; read back from here it takes ~0.004 s.  The kept copy is used only when
everything that made it is unchanged: the list's bytes and path, the ``[tagging]`` settings that
shape it (templates, expansion, stop-list), the WordNet data file and the shipped photo vocabulary
(whose concepts name the levels of any list), and the code that parses it (the
source of :mod:`tagwatch.vocabulary`, :mod:`tagwatch.hierarchy` and :mod:`tagwatch.wordnet`, so an
upgrade or a local edit never reads a copy made by other code).  Anything else (no copy, another
list, a damaged or unreadable file, a data folder that cannot be written) parses the list as before;
the copy is only ever a shortcut.  One copy is kept, the last list loaded; JSON, not pickle, so
reading it can only ever give data.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from . import __version__, hierarchy, vocabulary, wordnet
from .atomic import write_atomic
from .vocabulary import Tag, Vocabulary, load_configured

log = logging.getLogger(__name__)

NAME = "tag-list.json"  # in the data folder, beside precision.json
FORMAT = 1


@functools.cache
def _code() -> bytes:
    """The source of the modules that turn a list into a :class:`Vocabulary` (their version, if a
    build ships no source), read once: the code this process runs, even if an upgrade replaced the
    files since."""
    parts = [__version__.encode()]
    for module in (vocabulary, hierarchy, wordnet):
        with contextlib.suppress(OSError):
            parts.append(Path(module.__file__ or "").read_bytes())
    return b"\0".join(parts)


def _key(path: Path, tagging: Any) -> str:
    """What the parsed list depends on, as one digest; raises OSError where the list or the shipped
    data cannot be read (the parse then says why, as it always has)."""
    data = [(st.st_size, st.st_mtime_ns) for st in (wordnet.data_path().stat(),
                                                    os.stat(hierarchy.photo_tags_path()))]
    digest = hashlib.sha256(_code())
    digest.update(json.dumps([FORMAT, str(path), list(tagging.templates), tagging.expand,
                              list(tagging.expand_stop), data]).encode())
    digest.update(path.read_bytes())
    return digest.hexdigest()


def _tag(row: dict[str, Any]) -> Tag:
    return Tag(row["keyword"], tuple(row["prompts"]), row["threshold"], tuple(row["parents"]),
               tuple(row["synonyms"]), row["synset"])


def _row(tag: Tag) -> dict[str, Any]:
    return {"keyword": tag.keyword, "prompts": tag.prompts, "threshold": tag.threshold,
            "parents": tag.parents, "synonyms": tag.synonyms, "synset": tag.synset}


def _read(file: Path, key: str) -> Vocabulary | None:
    try:
        kept = json.loads(file.read_text(encoding="utf-8"))
        if kept.get("key") != key:
            return None
        return Vocabulary(tuple(_tag(t) for t in kept["tags"]), Path(kept["source"]), tuple(kept["warnings"]),
                          tuple(_tag(t) for t in kept["ancestors"]), tuple(kept["unplaced"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("%s: not using the kept tag list (%s: %s)", file, type(exc).__name__, exc)
        return None


def _write(file: Path, key: str, parsed: Vocabulary) -> None:
    kept = {"key": key, "source": str(parsed.source), "tags": [_row(t) for t in parsed.tags],
            "warnings": parsed.warnings, "ancestors": [_row(t) for t in parsed.ancestors],
            "unplaced": parsed.unplaced}
    try:
        write_atomic(file, json.dumps(kept, ensure_ascii=False), durable=False)  # lost: parsed again
    except OSError as exc:
        log.debug("%s: cannot keep the parsed tag list: %s", file, exc)


def load(path: Path, tagging: Any, folder: Path | None) -> Vocabulary:
    """:func:`~tagwatch.vocabulary.load_configured`, through the copy kept in ``folder`` (None:
    nothing kept).  Raises what the parse raises."""
    if folder is None or not folder.is_dir():
        return load_configured(path, tagging)
    try:
        key = _key(path, tagging)
    except OSError:
        return load_configured(path, tagging)  # it says which file and why
    file = folder / NAME
    kept = _read(file, key)
    if kept is not None:
        return kept
    parsed = load_configured(path, tagging)
    _write(file, key, parsed)
    return parsed
