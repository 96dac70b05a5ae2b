"""The user's tag list: which keywords exist and which prompt texts describe them.

The plain ``.txt`` format is rtag's: one tag per line.  We add ``#`` comments and blank lines, report
duplicates once (keywords that differ only in case are one tag), and reject keywords that IPTC
cannot store (64 bytes) or that hold ``|`` (the hierarchical fields' level separator) with their line
number, so the daemon never writes a keyword that another app would truncate or split.

The rich ``.toml`` format (chosen by the file name) gives each tag its own prompts, synonyms,
threshold and parent, or a WordNet synset that places it in WordNet's hierarchy (``hierarchy``); its
errors name the line of the offending ``[[tag]]`` header.  WordNet is read only for a list that needs
it: one naming synsets, or a plain list whose tags are to be expanded.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hierarchy
from .casefold import fold
from .config import BUILTIN_TAG_LISTS
from .wordnet import WordNet, WordNetError

IPTC_KEYWORD_BYTES = 64
RICH_SUFFIX = ".toml"
_TAG_KEYS = ("keyword", "prompts", "synonyms", "threshold", "parent", "synset")
_LIST_KEYS = ("templates", "wordnet_synonyms", "tag")


class VocabularyError(ValueError):
    """The tag list cannot be used; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class Tag:
    keyword: str  # what is written into the photo
    prompts: tuple[str, ...]  # the texts whose averaged vector describes it
    threshold: float | None = None  # its own cosine threshold; None: [tagging].threshold
    parents: tuple[str, ...] = ()  # ancestor keywords, root first: ("animal", "dog")
    synonyms: tuple[str, ...] = ()  # extra names whose prompts join the average, never written
    synset: str | None = None  # its WordNet 3.0 noun synset (offset), named in the list or matched

    @property
    def path(self) -> str:
        """The hierarchical keyword, ``animal|dog|golden retriever`` (the keyword itself at the top)."""
        return "|".join((*self.parents, self.keyword))


@dataclass(frozen=True)
class Vocabulary:
    tags: tuple[Tag, ...]
    source: Path
    warnings: tuple[str, ...] = ()
    # levels above the tags that are no tag of the list (a WordNet ancestor named by the shipped
    # photo vocabulary): never scored, written only when a tag below them is expanded
    ancestors: tuple[Tag, ...] = ()
    unplaced: tuple[str, ...] = ()  # plain-list tags WordNet could not place, and why (tags check)

    @property
    def keywords(self) -> list[str]:
        return [tag.keyword for tag in self.tags]

    def prompts(self) -> list[str]:
        """Every distinct prompt text, in first-use order (what needs a text vector)."""
        return list(dict.fromkeys(p for tag in self.tags for p in tag.prompts))

    def paths(self) -> dict[str, str]:
        """keyword → hierarchical path, for the tags that have a parent."""
        return {tag.keyword: tag.path for tag in self.tags if tag.parents}

    def hierarchy(self) -> dict[str, str]:
        """keyword → hierarchical path of every keyword the list can write: its tags (a flat one is
        its own path) and the levels above them."""
        return {tag.keyword: tag.path for tag in (*self.ancestors, *self.tags)}

    def fingerprint(self) -> str:
        """Changes whenever a keyword, prompt, threshold, parent or synonym changes, so a retag is due.

        A tag without the rich fields hashes as it always did: upgrading keeps a plain list's
        fingerprint, so it triggers no retag.
        """
        digest = hashlib.sha256()
        for tag in self.tags:
            digest.update(tag.keyword.encode() + b"\0" + "\1".join(tag.prompts).encode() + b"\n")
            if tag.threshold is not None or tag.parents or tag.synonyms:
                rich = (repr(tag.threshold), tag.path, "\1".join(tag.synonyms))
                digest.update(b"\2" + "\0".join(rich).encode() + b"\n")
        return digest.hexdigest()[:16]


def _noncharacter(ch: str) -> bool:
    """One of Unicode's 66 noncharacters (U+FDD0..U+FDEF, and the last two code points of every
    plane), or a surrogate: code points never meant for text that is exchanged."""
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE or 0xD800 <= code <= 0xDFFF


def unwritable(keyword: str) -> str | None:
    """Why ``keyword`` cannot be written into a photo exactly as it is, or None if it can.

    The one rule for every keyword tagwatch writes (tag lists, overrides, and any other source):
    IPTC holds 64 bytes; a control character breaks XMP (XML) and exiftool's argument lines; and
    exiftool cannot write U+FFFE or U+FFFF (measured: both come back missing from IPTC and XMP, so
    the read-back check failed every photo predicted with such a tag).  The other noncharacters
    came back exact through exiftool and exiv2, but Unicode reserves them for a program's internal
    use, so they are refused with their two siblings rather than left to each reader.
    """
    size = len(keyword.encode("utf-8", "surrogatepass"))
    if size > IPTC_KEYWORD_BYTES:
        return f"is {size} bytes in UTF-8; IPTC keywords hold at most {IPTC_KEYWORD_BYTES}"
    if any(ord(ch) < 32 for ch in keyword):
        return "contains a control character"
    odd = next((ch for ch in keyword if _noncharacter(ch)), None)
    if odd is not None:
        return f"contains U+{ord(odd):04X}, a Unicode noncharacter that photo metadata cannot hold"
    return None


def not_one_level(keyword: str) -> str | None:
    """Why ``keyword`` cannot be given as one keyword of its own, or None if it can.

    ``|`` separates the levels of a hierarchical keyword (lr:hierarchicalSubject), so a keyword
    holding one would be read there as a path of keywords nobody named.  The rule for a tag of a rich
    list and for a keyword added on the review page; each caller says how to give the levels.
    """
    if "|" in keyword:
        return "contains '|', which separates the levels of a hierarchical keyword"
    return None


def check_keyword(raw: str, where: str) -> str:
    """A keyword with white space folded, or a :class:`VocabularyError` naming ``where``."""
    keyword = " ".join(raw.split())  # trims and folds runs of whitespace/tabs to one space
    if not keyword:
        raise VocabularyError(f"{where}: empty keyword")
    reason = unwritable(keyword)
    if reason is not None:
        shown = f"{keyword[:40]!r}…" if len(keyword.encode("utf-8", "surrogatepass")) > 40 else repr(keyword)
        raise VocabularyError(f"{where}: keyword {shown} {reason}")
    return keyword


def _one_level(keyword: str, where: str) -> None:
    """Refuse a plain list's ``Animals|dog`` (as typed from a Lightroom or digiKam export): written
    as it is, the flat fields would get a pipe and the hierarchical ones a level that is no tag."""
    nested = not_one_level(keyword)
    if nested is None:
        return
    last = [part.strip() for part in keyword.split("|") if part.strip()]
    write = f"write {last[-1]!r} alone (expansion finds its WordNet levels), or " if last else ""
    raise VocabularyError(f"{where}: keyword {keyword!r} {nested}; a plain list holds one keyword per "
                          f"line: {write}use a .toml list and name the level above it with parent")


def _not_rich(line: str, where: str) -> None:
    """Refuse a rich list read as plain text (named ``newsroom.tags``, or ``tags.toml.txt`` behind a
    hidden extension): its lines would be written into the photos as keywords (``[[tag]]``,
    ``keyword = "Polizei"``).  The rich format's ``[[tag]]`` header is the sure sign; no one tags a
    photo with it."""
    if line.replace(" ", "") == "[[tag]]":
        raise VocabularyError(f"{where}: '[[tag]]' begins a tag of the rich format, but this list is read "
                              "as plain text (one keyword per line) as its name does not end in "
                              f"{RICH_SUFFIX}: give it a {RICH_SUFFIX} name")


def parse_tag_list(text: str, templates: tuple[str, ...], source: Path, *, place: bool = False,
                   stop: Collection[str] = hierarchy.DEFAULT_STOP) -> Vocabulary:
    """Parse the plain text format; ``templates`` turn each keyword into its prompts.

    ``place`` (tag expansion is on): a tag that names one WordNet noun clearly (``golden
    retriever``, ``dog``) gets its WordNet parents; the others stay flat and are listed in
    ``unplaced`` with the reason (``crane``: five senses, none dominant).
    """
    tags: list[Tag] = []
    seen = _Seen(source)
    text = text.removeprefix("\ufeff")  # a byte-order mark from Windows editors is not part of a tag
    for number, raw in enumerate(text.splitlines(), start=1):
        folded = " ".join(raw.split())
        if not folded or folded.startswith("#"):
            continue
        _not_rich(folded, f"{source}:{number}")
        keyword = check_keyword(folded, f"{source}:{number}")
        _one_level(keyword, f"{source}:{number}")
        if seen.again(keyword, number):
            continue
        tags.append(Tag(keyword, tuple(t.format(keyword) for t in templates)))
    if not tags:
        raise VocabularyError(f"{source}: the tag list holds no tags")
    warnings = seen.warnings()
    first_line = seen.first_line
    if not place:
        return Vocabulary(tuple(tags), source, warnings)
    wordnet = WordNet()
    entries: dict[str, _Entry] = {}
    unplaced: list[str] = []
    for tag in tags:
        where = f"{source}:{first_line[tag.keyword]}"
        match = wordnet.match(tag.keyword)
        if match.synset is None:
            unplaced.append(f"{where}: {tag.keyword!r}: {match.reason}")
        entries[tag.keyword] = _Entry(tag.keyword, where, first_line[tag.keyword], (), (), None, None,
                                      match.synset.offset if match.synset else None)
    extra = _derive(entries, wordnet, stop, source)
    placed = tuple(Tag(t.keyword, t.prompts, parents=_parents(entries[t.keyword], entries | extra),
                       synset=entries[t.keyword].synset) for t in tags)
    return Vocabulary(placed, source, warnings, _levels(extra, entries), tuple(unplaced))


@dataclass(frozen=True)
class _Again:
    """A tag given again: where, as spelled there, and the settings it gave that are not used."""

    line: int
    spelling: str
    ignored: tuple[str, ...] = ()


class _Seen:
    """The tags of a list so far, to find one given twice.  Keywords that differ only in case
    (``red``, ``Red``) are one tag: writing both would give a photo the same keyword twice, which
    apps that match keywords without case (Lightroom, Windows) show as one and digiKam as two.
    The first spelling is the one written."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.first_line: dict[str, int] = {}  # keyword as first spelled → its line (or position)
        self._folded: dict[str, str] = {}  # casefolded → keyword as first spelled
        self._again: dict[str, list[_Again]] = {}

    def again(self, keyword: str, line: int, ignored: tuple[str, ...] = ()) -> bool:
        """Record ``keyword`` at ``line``; True if the list already has it (in any case)."""
        first = self._folded.get(fold(keyword))
        if first is None:
            self._folded[fold(keyword)] = keyword
            self.first_line[keyword] = line
            return False
        self._again.setdefault(first, []).append(_Again(line, keyword, ignored))
        return True

    def warnings(self) -> tuple[str, ...]:
        """One line per tag given more than once, naming its first line and the first repeat."""
        return tuple(self._warning(keyword, repeats) for keyword, repeats in self._again.items())

    def _warning(self, keyword: str, repeats: list[_Again]) -> str:
        head = repeats[0]
        spelled = f" as {keyword!r}" if head.spelling != keyword else ""
        more = f", again on {len(repeats)} lines" if len(repeats) > 1 else ""
        text = (f"{self.source}:{head.line}: duplicate tag {head.spelling!r} (first on line "
                f"{self.first_line[keyword]}{spelled}{more}); used once")
        if any(r.spelling != keyword for r in repeats):
            text += f", written {keyword!r} (tags that differ only in case are one tag)"
        ignored = [item for r in repeats for item in r.ignored]
        if ignored:
            text += f"; the first one's settings apply, ignored: {', '.join(ignored)}"
        return text


# -- the rich format -------------------------------------------------------------------------------

def read_toml(text: str, source: Path, error: type[ValueError]) -> dict[str, Any]:
    """Parse TOML; a syntax error becomes ``FILE:LINE: not valid TOML: reason`` like any other."""
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)$", message)
        if match:
            reason = message[:match.start()].strip()
            raise error(f"{source}:{match.group(1)}: not valid TOML: {reason} "
                        f"(column {match.group(2)})") from None
        if message.endswith("(at end of document)"):
            last = max(1, len(text.splitlines()))
            reason = message.removesuffix("(at end of document)").strip()
            raise error(f"{source}:{last}: not valid TOML: {reason} (at the end of the file)") from None
        raise error(f"{source}: not valid TOML: {message}") from None


def table_lines(text: str, name: str) -> list[int]:
    """Line numbers of the ``[[name]]`` headers, in order (tomllib reports no positions)."""
    header = re.compile(r"^[ \t]*\[\[[ \t]*(?:" + re.escape(name) + r"|\"" + re.escape(name) + r"\"|'"
                        + re.escape(name) + r"')[ \t]*\]\][ \t]*(?:#.*)?$")
    return [n for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1)
            if header.match(line)]


def key_line(text: str, key: str) -> int | None:
    """The line of a top-level ``key =`` (for errors about it), if it is written that way."""
    pattern = re.compile(r"^[ \t]*" + re.escape(key) + r"[ \t]*=")
    for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if pattern.match(line):
            return n
    return None


def string_list(value: Any, where: str, what: str, error: type[ValueError]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise error(f"{where}: {what} must be a list of strings, got {value!r}")
    return value


def _templates(value: Any, where: str) -> tuple[str, ...]:
    templates = string_list(value, where, "templates", VocabularyError)
    if not templates:
        raise VocabularyError(f"{where}: templates must hold at least one template")
    for template in templates:
        if template.count("{}") != 1:
            raise VocabularyError(f"{where}: templates entry {template!r} must contain '{{}}' exactly once")
    return tuple(templates)


@dataclass
class _Entry:
    keyword: str
    where: str
    line: int | None
    prompts: tuple[str, ...]
    synonyms: tuple[str, ...]
    threshold: float | None
    parent: str | None
    synset: str | None = None  # the WordNet offset, once resolved
    reference: str | None = None  # the synset as the list names it ("dog.n.01")


def _entry(raw: Any, where: str, line: int | None) -> _Entry:
    if not isinstance(raw, dict):
        raise VocabularyError(f"{where}: a tag must be a table with a keyword, got {raw!r}")
    unknown = sorted(set(raw) - set(_TAG_KEYS))
    if unknown:
        raise VocabularyError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(_TAG_KEYS)})")
    if "keyword" not in raw:
        raise VocabularyError(f"{where}: the tag has no keyword")
    if not isinstance(raw["keyword"], str):
        raise VocabularyError(f"{where}: keyword must be a string, got {raw['keyword']!r}")
    keyword = check_keyword(raw["keyword"], where)
    nested = not_one_level(keyword)
    if nested is not None:
        raise VocabularyError(f"{where}: keyword {keyword!r} {nested}; write the levels above it as tags of "
                              "their own and name them with parent")
    prompts: tuple[str, ...] = ()
    if "prompts" in raw:
        values = string_list(raw["prompts"], where, "prompts", VocabularyError)
        if not values:
            raise VocabularyError(f"{where}: prompts must hold at least one prompt (or leave it out to "
                                  "use the templates)")
        folded = [" ".join(p.split()) for p in values]
        for prompt in folded:
            if not prompt:
                raise VocabularyError(f"{where}: empty prompt")
            if "{}" in prompt:
                raise VocabularyError(f"{where}: prompt {prompt!r} contains '{{}}'; prompts are whole "
                                      "texts (templates are where the keyword is filled in)")
        prompts = tuple(folded)
    synonyms: tuple[str, ...] = ()
    if "synonyms" in raw:
        values = string_list(raw["synonyms"], where, "synonyms", VocabularyError)
        synonyms = tuple(dict.fromkeys(" ".join(s.split()) for s in values))
        if "" in synonyms:
            raise VocabularyError(f"{where}: empty synonym")
    threshold = raw.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise VocabularyError(f"{where}: threshold must be a number in [-1, 1], got {threshold!r}")
        if not -1.0 <= threshold <= 1.0:
            raise VocabularyError(f"{where}: threshold must be a cosine similarity in [-1, 1], "
                                  f"got {threshold}")
        threshold = float(threshold)
    parent = raw.get("parent")
    if parent is not None:
        if not isinstance(parent, str):
            raise VocabularyError(f"{where}: parent must be a string (another tag's keyword), got {parent!r}")
        parent = " ".join(parent.split())
    reference = raw.get("synset")
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        raise VocabularyError(f"{where}: synset must be a WordNet noun synset like 'dog.n.01' or "
                              f"'n02084071', got {reference!r}")
    return _Entry(keyword, where, line, prompts, synonyms, threshold, parent, reference=reference)


def parse_rich_tag_list(text: str, templates: tuple[str, ...], source: Path, *,
                        stop: Collection[str] = hierarchy.DEFAULT_STOP) -> Vocabulary:
    """Parse the ``.toml`` format; ``templates`` (unless the file sets its own) make the prompts of
    tags without their own and of every synonym.

    A tag naming a ``synset`` and no ``parent`` gets its most specific WordNet ancestor that is a
    concept (see :mod:`hierarchy`) as its parent; ``stop`` names the levels never used.  With
    ``wordnet_synonyms = true`` the synset's other words join each tag's synonyms.
    """
    document = read_toml(text, source, VocabularyError)
    unknown = sorted(set(document) - set(_LIST_KEYS))
    if unknown:
        line = key_line(text, unknown[0])
        raise VocabularyError(f"{source}{f':{line}' if line else ''}: unknown key '{unknown[0]}' "
                              f"(known: {', '.join(_LIST_KEYS)})")
    if "templates" in document:
        line = key_line(text, "templates")
        templates = _templates(document["templates"], f"{source}{f':{line}' if line else ''}")
    lemma_synonyms = document.get("wordnet_synonyms", False)
    if not isinstance(lemma_synonyms, bool):
        line = key_line(text, "wordnet_synonyms")
        raise VocabularyError(f"{source}{f':{line}' if line else ''}: wordnet_synonyms must be true or "
                              f"false, got {lemma_synonyms!r}")
    raw_tags = document.get("tag", [])
    if not isinstance(raw_tags, list):
        raise VocabularyError(f"{source}: 'tag' must be a list of [[tag]] tables")
    lines = table_lines(text, "tag")
    if len(lines) != len(raw_tags):  # written as an inline array: no header to point at
        lines = []
    entries: dict[str, _Entry] = {}
    seen = _Seen(source)
    for index, raw in enumerate(raw_tags):
        line = lines[index] if lines else None
        where = f"{source}:{line}" if line else f"{source}: tag #{index + 1}"
        entry = _entry(raw, where, line)
        if seen.again(entry.keyword, line or index + 1, _settings(raw, line or index + 1)):
            continue
        entries[entry.keyword] = entry
    if not entries:
        raise VocabularyError(f"{source}: the tag list holds no tags")
    spelled = {fold(keyword): keyword for keyword in entries}  # one tag whatever the case
    for entry in entries.values():  # `parent = "Colour"` is the list's `colour`, as RED is red
        if entry.parent is not None:
            entry.parent = spelled.get(fold(entry.parent), entry.parent)
    extra: dict[str, _Entry] = {}
    if any(e.reference is not None for e in entries.values()):
        wordnet = WordNet()
        for entry in entries.values():
            if entry.reference is None:
                continue
            try:
                synset = wordnet.resolve(entry.reference)
            except WordNetError as exc:
                raise VocabularyError(f"{entry.where}: synset {exc}") from None
            entry.synset = synset.offset
            if lemma_synonyms:
                entry.synonyms = tuple(dict.fromkeys(
                    (*entry.synonyms, *hierarchy.wordnet_synonyms(entry.keyword, synset, wordnet))))
        extra = _derive(entries, wordnet, stop, source)
    tags = []
    for entry in entries.values():
        prompts = entry.prompts or tuple(t.format(entry.keyword) for t in templates)
        prompts += tuple(t.format(s) for s in entry.synonyms for t in templates)
        tags.append(Tag(entry.keyword, tuple(dict.fromkeys(prompts)), entry.threshold,
                        _parents(entry, entries | extra), entry.synonyms, entry.synset))
    return Vocabulary(tuple(tags), source, seen.warnings(), _levels(extra, entries))


def _settings(raw: dict[str, Any], line: int) -> tuple[str, ...]:
    """What a ``[[tag]]`` sets besides its keyword, as written (``threshold = 0.5 (line 4)``): for
    the warning about a repeated tag, whose settings are not used."""
    return tuple(f"{key} = {json.dumps(value, ensure_ascii=False)} (line {line})"
                 for key, value in raw.items() if key != "keyword")


def _derive(entries: dict[str, _Entry], wordnet: WordNet, stop: Collection[str],
            source: Path) -> dict[str, _Entry]:
    """WordNet parents for the entries with a synset and no ``parent`` (set in place); returns the
    levels above them that are no entry of the list, as entries of their own."""
    concepts = {k: hierarchy.Concept(k, e.synset, e.parent) for k, e in entries.items()}
    reference = hierarchy.reference_concepts(wordnet, _synset_names, source)
    levels = hierarchy.derive(concepts, wordnet, stop, reference)
    for keyword, entry in entries.items():
        entry.parent = concepts[keyword].parent
    return {k: _Entry(k, f"WordNet {c.synset} (a level above a tag)", None, (), (), None, c.parent, c.synset)
            for k, c in levels.items()}


def _levels(extra: dict[str, _Entry], entries: dict[str, _Entry]) -> tuple[Tag, ...]:
    """The levels that are no tag, as :class:`Tag` without prompts (their paths)."""
    every = entries | extra
    return tuple(Tag(e.keyword, (), parents=_parents(e, every), synset=e.synset) for e in extra.values())


def _synset_names(path: Path) -> list[tuple[str, str, str | None]]:
    """(keyword, synset, parent or None) of each tag of a rich list that names a synset, without
    resolving anything: the shipped vocabulary's concepts and hand-made parents, for other lists."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    return [(" ".join(t["keyword"].split()), t["synset"],
             " ".join(t["parent"].split()) if isinstance(t.get("parent"), str) else None)
            for t in document.get("tag", [])
            if isinstance(t, dict) and isinstance(t.get("keyword"), str) and isinstance(t.get("synset"), str)]


def _parents(entry: _Entry, entries: dict[str, _Entry]) -> tuple[str, ...]:
    """The chain of ancestors above ``entry``, root first; a missing parent or a cycle is an error."""
    chain: list[str] = []
    seen = {entry.keyword}
    current = entry
    while current.parent is not None:
        parent = entries.get(current.parent)
        if parent is None:
            raise VocabularyError(f"{current.where}: parent {current.parent!r} of {current.keyword!r} is "
                                  "not a keyword in this list")
        if parent.keyword in seen:
            loop = " → ".join([entry.keyword, *chain, parent.keyword])
            raise VocabularyError(f"{entry.where}: parent cycle: {loop}")
        seen.add(parent.keyword)
        chain.append(parent.keyword)
        current = parent
    return tuple(reversed(chain))


def read_list_file(path: Path, what: str, error: type[ValueError] = VocabularyError) -> str:
    """The UTF-8 text of a file the user edits (tag list, overrides), or ``error`` in one line."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} does not exist") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror}") from None


def _builtin_hint(path: Path) -> str:
    """For a tag list that does not exist: the built-in lists' names (``--tags photo_tags`` was a
    path beside the working folder), the nearest first."""
    names = list(BUILTIN_TAG_LISTS)
    close = difflib.get_close_matches(fold(path.stem).replace("_", "-"), names, n=1, cutoff=0.6)
    if close:
        return f" (did you mean the built-in list {close[0]!r}? the built-in lists are {' and '.join(names)})"
    return f" (the built-in lists, named without a path, are {' and '.join(names)})"


def load_vocabulary(path: Path, templates: tuple[str, ...], *, expand: bool = False,
                    stop: Collection[str] = hierarchy.DEFAULT_STOP) -> Vocabulary:
    """Read and parse the tag list at ``path``: ``.toml`` is the rich format, anything else plain.

    ``expand``: tags will be expanded to their parents, so a plain list is placed in WordNet too
    (a rich list names its synsets itself); ``stop``: levels never used as a parent from WordNet.
    """
    try:
        text = read_list_file(path, "tag list")
    except VocabularyError as exc:
        if path.exists() or path.is_symlink():
            raise
        raise VocabularyError(f"{exc}{_builtin_hint(path)}") from None
    if path.suffix.lower() == RICH_SUFFIX:
        return parse_rich_tag_list(text, templates, path, stop=stop)
    return parse_tag_list(text, templates, path, place=expand, stop=stop)


def load_configured(path: Path, tagging: Any) -> Vocabulary:
    """:func:`load_vocabulary` with a ``[tagging]`` config's templates, expansion and stop-list."""
    return load_vocabulary(path, tagging.templates, expand=tagging.expand != "none", stop=tagging.expand_stop)
