"""WordNet 3.0's noun hierarchy, read from the data file shipped in the package.

The file (``data/wordnet-nouns.tsv.gz``, made by ``scripts/build_wordnet.py``) is read only when a
tag list needs it: a rich list that names synsets, or tag expansion for a plain list.  It stays one
``bytes`` object of 6.6 MB, searched by bisection over its sorted lines, instead of 200,000 Python
objects (about 50 MB that a long-running daemon would keep or fragment); a lookup costs about 20
string comparisons, and the synsets a tag list touches are remembered.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DATA_NAME = "wordnet-nouns.tsv.gz"
LICENSE_NAME = "WORDNET-LICENSE"
# A sense counts as the word's meaning when the sense-tagged corpus saw it this many times more often
# than all its other senses together (and at least MIN_TAGGED times): "dog" (42 to 0) and "horse"
# (103 to 1) are their animals; "crane" (never seen) and "bat" (club or animal) stay ambiguous.
DOMINANCE = 3.0
MIN_TAGGED = 3
# Regular English plurals (WordNet's own morphy rules for nouns), tried after noun.exc's exceptions
_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
             ("ies", "y"), ("ves", "f"), ("s", ""))
_NAME = re.compile(r"^(?P<lemma>.+)\.n\.(?P<sense>\d{1,3})$", re.IGNORECASE)
_OFFSET = re.compile(r"^n?(?P<offset>\d{1,8})$")  # zero-padded to 8 digits: "2012849" is 02012849
_SYNSET_LINE = re.compile(rb"^S\t(\d{8})\t([^\t\n]*)\t", re.MULTILINE)  # offset, its parents


class WordNetError(ValueError):
    """A synset that does not exist, or a data file that cannot be read."""


@dataclass(frozen=True)
class Synset:
    offset: str  # 8 digits, the synset's offset in WordNet 3.0's data.noun
    lemmas: tuple[str, ...]  # its words, first the one WordNet names it by ("dog", "domestic dog", …)
    hypernyms: tuple[str, ...]  # offsets of the synsets directly above it (instance-of included)

    @property
    def wnid(self) -> str:
        """ImageNet's name for it: ``n02084071``."""
        return "n" + self.offset


@dataclass(frozen=True)
class Match:
    """What a word means in WordNet: the synset it names, or why it names none."""

    word: str
    synset: Synset | None
    senses: int  # how many noun senses the word has
    reason: str = ""  # why no synset: "not in WordNet", "ambiguous: 5 senses, none dominant"


def data_path() -> Path:
    return Path(str(resources.files("tagwatch") / "data" / DATA_NAME))


class WordNet:
    """Synsets by offset or name, words to synsets, ancestors; loaded from the data file."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or data_path()
        try:
            self._data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise WordNetError(f"{path}: cannot read the WordNet data file: {exc}") from None
        self._sections: dict[bytes, tuple[int, int]] = {}
        start = self._data.find(b"\nS\t") + 1
        for kind, following in ((b"S", b"L"), (b"L", b"X"), (b"X", None)):
            end = len(self._data) if following is None else self._data.find(b"\n" + following + b"\t") + 1
            if start <= 0 or end <= start:
                raise WordNetError(f"{path}: not a WordNet data file made by scripts/build_wordnet.py")
            self._sections[kind] = (start, end)
            start = end
        self._synsets: dict[str, Synset] = {}
        self._depths: dict[str, int] = {}
        self._senses: dict[str, list[tuple[str, int]]] = {}

    # -- the sorted sections -----------------------------------------------------------------------

    def _find(self, kind: bytes, key: str) -> list[str] | None:
        """The fields after the key of ``kind``'s line for ``key``, by bisection, or None."""
        target = key.encode("utf-8")
        lo, hi = self._sections[kind]
        data = self._data
        while lo < hi:
            mid = (lo + hi) // 2
            start = data.rfind(b"\n", lo - 1, mid) + 1 if mid > lo else lo
            end = data.find(b"\n", start)
            line = data[start:end]
            probe = line[2:line.find(b"\t", 2)] if line.count(b"\t") > 1 else line[2:]
            if probe == target:
                return line.decode("utf-8").split("\t")[2:]
            if probe < target:
                lo = end + 1
            else:
                hi = start
        return None

    # -- synsets -----------------------------------------------------------------------------------

    def synset(self, offset: str) -> Synset:
        """The synset at ``offset`` (8 digits)."""
        found = self._synsets.get(offset)
        if found is None:
            fields = self._find(b"S", offset)
            if fields is None:
                raise WordNetError(f"no WordNet 3.0 noun synset with offset {offset}")
            hypernyms, lemmas = fields
            found = self._synsets[offset] = Synset(offset, tuple(lemmas.split("|")),
                                                   tuple(hypernyms.split()))
        return found

    def senses(self, lemma: str) -> list[tuple[str, int]]:
        """(offset, tagged count) of each noun sense of ``lemma`` exactly as written (any case), in
        WordNet's order; empty if it is no noun lemma."""
        key = " ".join(lemma.lower().split())
        found = self._senses.get(key)
        if found is None:
            fields = self._find(b"L", key)
            found = self._senses[key] = [] if fields is None else [
                (offset, int(count or 0)) for offset, _, count in
                (item.partition(":") for item in fields[0].split())]
        return found

    def resolve(self, reference: str) -> Synset:
        """A synset named as WordNet tools name it: ``dog.n.01`` (lemma, noun, sense number; the
        NLTK form), ``n02084071`` (ImageNet's wnid) or the bare offset ``02084071`` (its leading zeros
        may be left out, as a number: ``2084071``).  An error starts with ``reference`` as given."""
        text = reference.strip()
        offset = _OFFSET.match(text)
        if offset:
            digits = offset.group("offset").zfill(8)
            try:
                return self.synset(digits)
            except WordNetError:
                raise WordNetError(f"{reference!r}: no WordNet 3.0 noun synset has the offset "
                                   f"{digits}") from None
        name = _NAME.match(text)
        if not name:
            raise WordNetError(f"{reference!r} is not a noun synset name like 'dog.n.01', 'n02084071' "
                               "or '02084071'")
        lemma, number = name.group("lemma").replace("_", " "), int(name.group("sense"))
        senses = self.senses(lemma)
        if not senses:
            raise WordNetError(f"{reference!r}: {lemma!r} is not a noun in WordNet 3.0")
        if not 1 <= number <= len(senses):
            raise WordNetError(f"{reference!r}: {lemma!r} has {len(senses)} noun sense"
                               f"{'s' if len(senses) > 1 else ''} in WordNet 3.0")
        return self.synset(senses[number - 1][0])

    def name(self, synset: Synset) -> str:
        """The ``dog.n.01`` name of a synset: its first lemma and that lemma's sense number."""
        lemma = synset.lemmas[0]
        offsets = [o for o, _ in self.senses(lemma)]
        return f"{lemma.lower().replace(' ', '_')}.n.{offsets.index(synset.offset) + 1:02d}"

    # -- words -------------------------------------------------------------------------------------

    def base_forms(self, word: str) -> list[str]:
        """``word`` and the singular forms WordNet's noun rules give it, those that are lemmas; for a
        phrase the last word is inflected (``golden retrievers`` → ``golden retriever``).  An
        underscore is a space, as WordNet spells its lemmas (``golden_retriever``)."""
        word = " ".join(word.lower().replace("_", " ").split())
        variants = list(dict.fromkeys([word, word.replace("-", " "), word.replace(" ", "-")]))
        found = [v for v in variants if self.senses(v)]
        if found:
            return found
        head, _, last = word.rpartition(" ")
        prefix = head + " " if head else ""
        bases: list[str] = []
        exception = self._find(b"X", last)
        if exception is not None:
            bases += exception[0].split("|")
        bases += [last[:-len(suffix)] + ending for suffix, ending in _SUFFIXES
                  if last.endswith(suffix) and len(last) > len(suffix) + 1]
        return [prefix + b for b in dict.fromkeys(bases) if self.senses(prefix + b)]

    def match(self, word: str) -> Match:
        """The synset a plain tag names, when it names one clearly: a word with one noun sense, or
        whose first sense the sense-tagged corpus saw ``DOMINANCE`` times more than all others."""
        forms = self.base_forms(word)
        if not forms:
            return Match(word, None, 0, "not a noun in WordNet 3.0")
        senses = list(dict.fromkeys(s for form in forms for s in self.senses(form)))
        offsets = list(dict.fromkeys(o for o, _ in senses))
        if len(offsets) == 1:
            return Match(word, self.synset(offsets[0]), 1)
        first, rest = senses[0][1], sum(c for o, c in senses[1:] if o != senses[0][0])
        if first >= MIN_TAGGED and first >= DOMINANCE * rest:
            return Match(word, self.synset(senses[0][0]), len(offsets))
        return Match(word, None, len(offsets), f"ambiguous: {len(offsets)} noun senses, none dominant")

    # -- the hierarchy -----------------------------------------------------------------------------

    def ancestors(self, synset: Synset) -> Iterator[Synset]:
        """Every synset above ``synset``, nearest first (breadth first, WordNet's order within a
        level), each once."""
        seen = {synset.offset}
        level = list(synset.hypernyms)
        while level:
            following: list[str] = []
            for offset in level:
                if offset in seen:
                    continue
                seen.add(offset)
                above = self.synset(offset)
                yield above
                following += above.hypernyms
            level = following

    def depth(self, synset: Synset) -> int:
        """How specific a synset is: the length of its longest hypernym path (``entity``: 0)."""
        found = self._depths.get(synset.offset)
        if found is None:
            found = 1 + max((self.depth(self.synset(h)) for h in synset.hypernyms), default=-1)
            self._depths[synset.offset] = found
        return found

    def path(self, synset: Synset) -> list[Synset]:
        """The first hypernym path, root (``entity``) first, ``synset`` last: at each step the first
        hypernym WordNet lists."""
        chain = [synset]
        while chain[-1].hypernyms and len(chain) < 64:
            chain.append(self.synset(chain[-1].hypernyms[0]))
        return chain[::-1]

    def children(self, offsets: Collection[str]) -> dict[str, list[str]]:
        """offset → the offsets of the synsets directly below it (kinds and instances), in the file's
        order, for each of ``offsets``.  The file stores parents only, so this is one scan of its
        82,000 synset lines (about 0.1 s): for a one-off command (``tags suggest``), never the daemon."""
        wanted = set(offsets)
        found: dict[str, list[str]] = {offset: [] for offset in wanted}
        start, end = self._sections[b"S"]
        for line in _SYNSET_LINE.finditer(self._data, start, end):
            for parent in line.group(2).split():
                key = parent.decode("ascii")
                if key in wanted:
                    found[key].append(line.group(1).decode("ascii"))
        return found
