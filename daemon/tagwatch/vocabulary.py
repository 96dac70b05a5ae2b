"""The user's tag list: which keywords exist and which prompt texts describe them.

The plain ``.txt`` format is rtag's: one tag per line.  We add ``#`` comments and blank lines, report
duplicates once, and reject keywords that IPTC cannot store (64 bytes) with their line number, so the
daemon never writes a keyword that another app would truncate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

IPTC_KEYWORD_BYTES = 64


class VocabularyError(ValueError):
    """The tag list cannot be used; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class Tag:
    keyword: str  # what is written into the photo
    prompts: tuple[str, ...]  # the texts whose averaged vector describes it


@dataclass(frozen=True)
class Vocabulary:
    tags: tuple[Tag, ...]
    source: Path
    warnings: tuple[str, ...] = ()

    @property
    def keywords(self) -> list[str]:
        return [tag.keyword for tag in self.tags]

    def prompts(self) -> list[str]:
        """Every distinct prompt text, in first-use order (what needs a text vector)."""
        return list(dict.fromkeys(p for tag in self.tags for p in tag.prompts))

    def fingerprint(self) -> str:
        """Changes whenever a keyword or a prompt changes, so a retag is due."""
        digest = hashlib.sha256()
        for tag in self.tags:
            digest.update(tag.keyword.encode() + b"\0" + "\1".join(tag.prompts).encode() + b"\n")
        return digest.hexdigest()[:16]


def parse_tag_list(text: str, templates: tuple[str, ...], source: Path) -> Vocabulary:
    """Parse the plain text format; ``templates`` turn each keyword into its prompts."""
    tags: list[Tag] = []
    first_line: dict[str, int] = {}
    duplicates: dict[str, list[int]] = {}
    text = text.removeprefix("\ufeff")  # a byte-order mark from Windows editors is not part of a tag
    for number, raw in enumerate(text.splitlines(), start=1):
        keyword = " ".join(raw.split())  # trims and folds runs of whitespace/tabs to one space
        if not keyword or keyword.startswith("#"):
            continue
        size = len(keyword.encode("utf-8"))
        if size > IPTC_KEYWORD_BYTES:
            raise VocabularyError(
                f"{source}:{number}: keyword {keyword[:40]!r}… is {size} bytes in UTF-8; "
                f"IPTC keywords hold at most {IPTC_KEYWORD_BYTES}")
        if any(ord(ch) < 32 for ch in keyword):
            raise VocabularyError(f"{source}:{number}: keyword {keyword!r} contains a control character")
        if keyword in first_line:
            duplicates.setdefault(keyword, []).append(number)
            continue
        first_line[keyword] = number
        tags.append(Tag(keyword, tuple(t.format(keyword) for t in templates)))
    if not tags:
        raise VocabularyError(f"{source}: the tag list holds no tags")
    warnings = tuple(
        f"{source}:{lines[0]}: duplicate tag {keyword!r} (first on line {first_line[keyword]}"
        + (f", again on {len(lines)} lines" if len(lines) > 1 else "") + "); used once"
        for keyword, lines in duplicates.items())
    return Vocabulary(tuple(tags), source, warnings)


def load_vocabulary(path: Path, templates: tuple[str, ...]) -> Vocabulary:
    """Read and parse the tag list at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VocabularyError(f"{path}: tag list does not exist") from None
    except UnicodeDecodeError as exc:
        raise VocabularyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise VocabularyError(f"{path}: cannot read tag list: {exc.strerror}") from None
    return parse_tag_list(text, templates, path)
