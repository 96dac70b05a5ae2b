"""Where a tag sits: its parents taken from WordNet (or the photo vocabulary's hand-made ones), named
in words people search for.

WordNet puts a golden retriever under retriever, sporting dog, hunting dog, dog, canine, carnivore,
placental, mammal, vertebrate, chordate, animal, organism, living thing, whole, object, physical
entity and entity.  A photographer searches for "dog" and "animal", and for none of the others.  So a
tag's parent is its most specific WordNet ancestor that is a *concept*: a tag of the list in use, or
else a concept of the shipped photo vocabulary (``photo-tags.toml``), named by that concept's
keyword.  The list itself therefore decides the grain of the hierarchy (add "mammal" to it and
mammal becomes a level); a stop-list drops levels nobody wants even when a list names them (entity,
object, artifact…).  "Most specific" is the deepest (longest path from WordNet's root), not the
nearest: a greyhound is a hound (→ hunting dog → dog) and also a racer (→ animal), and its parent
is dog, not animal.  Where the vocabulary gives a concept its parent by hand (a rose is a shrub in
WordNet and a flower there), any list that places that concept through WordNet takes that parent.

This module only decides parents; ``vocabulary`` builds the paths and the tagger writes ancestors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .casefold import fold, folded
from .config import DEFAULT_EXPAND_STOP
from .wordnet import Synset, WordNet, WordNetError

# WordNet's upper levels (entity, object, artifact, organism…), never used as a level unless the
# config's expand_stop says otherwise
DEFAULT_STOP = DEFAULT_EXPAND_STOP
PHOTO_TAGS_NAME = "photo-tags.toml"


@dataclass
class Concept:
    """One tag of a list as the hierarchy sees it."""

    keyword: str
    synset: str | None  # WordNet offset, or None: no WordNet place
    parent: str | None  # an explicit parent (the list's word) or, after :func:`derive`, WordNet's


@dataclass(frozen=True)
class Reference:
    """The shipped photo vocabulary as the hierarchy of another list sees it."""

    # synset offset → the vocabulary's keyword for it: the names of the levels a list lacks
    names: Mapping[str, str]
    # synset offset → the synset of the parent the vocabulary gives that concept by hand, where
    # WordNet's place is not a photographer's (a rose is a shrub in WordNet, a flower here)
    parents: Mapping[str, str] = field(default_factory=dict)


def derive(concepts: Mapping[str, Concept], wordnet: WordNet, stop: Collection[str],
           reference: Reference) -> dict[str, Concept]:
    """Give each concept with a synset and no explicit parent its WordNet parent, in place.

    ``reference``: the shipped photo vocabulary, whose concepts name the levels a list does not
    name itself, and whose hand-made parents place the same concepts in any list (a user's
    ``pancake`` is food, as the vocabulary's is, not WordNet's cake).  Returns the extra concepts
    that became parents this way (keyword → concept): no tag of the list, they are written only by
    expansion.
    """
    stopped = folded(stop)
    by_synset: dict[str, str] = {}
    for concept in concepts.values():
        if concept.synset is not None:
            by_synset.setdefault(concept.synset, concept.keyword)
    extra: dict[str, Concept] = {}
    # folded keyword → concept: a level the vocabulary names `green` is the list's `Green`, as
    # every other keyword comparison folds (else a photo would get `Green` and `green`)
    spelled: dict[str, Concept] = {fold(k): c for k, c in concepts.items()}

    def name(synset: Synset) -> str | None:
        """The keyword this ancestor is written as (the list's spelling where the list has the word),
        or None when it is no usable level."""
        keyword = by_synset.get(synset.offset) or reference.names.get(synset.offset)
        if keyword is None or fold(keyword) in stopped:
            return None
        same = spelled.get(fold(keyword))
        if same is not None and same.synset not in (None, synset.offset):
            return None  # the list uses this word for another meaning ("crane" the machine)
        return keyword if same is None else same.keyword

    def place(concept: Concept, synset: Synset, chain: frozenset[str] = frozenset()) -> None:
        """Set ``concept``'s parent from ``synset``'s place: the vocabulary's hand-made parent for it,
        else its deepest WordNet ancestor that is a concept (``chain``: the synsets this placement
        passed through, so hand-made parents never loop)."""
        made = reference.parents.get(synset.offset)
        if made is not None and made not in chain:
            above = wordnet.synset(made)
            keyword = name(above)
            if keyword is None or fold(keyword) == fold(concept.keyword):  # no usable level: the next up
                place(concept, above, chain | {synset.offset})
                return
        else:
            own = fold(concept.keyword)
            named = [(above, keyword) for above in wordnet.ancestors(synset)
                     for keyword in [name(above)] if keyword is not None and fold(keyword) != own]
            if not named:
                return
            above, keyword = max(named, key=lambda pair: wordnet.depth(pair[0]))  # the first of the deepest
        concept.parent = keyword
        if fold(keyword) not in spelled:
            level = extra[keyword] = spelled[fold(keyword)] = Concept(keyword, above.offset, None)
            place(level, above, chain | {synset.offset})

    for concept in list(concepts.values()):
        if concept.synset is not None and concept.parent is None:
            place(concept, wordnet.synset(concept.synset))
    return extra


def wordnet_synonyms(keyword: str, synset: Synset, wordnet: WordNet) -> list[str]:
    """The synset's other words in common use for this concept: those the sense-tagged corpus
    shipped with WordNet saw in this sense (``automobile`` for car, ``infant`` for baby), and whose
    meaning is clear (``porcupine`` does not get hedgehog, two senses neither dominant); no slang
    that the corpus never saw (``boob tube``), no capitalised name (``Canis familiaris``).  A rare
    or misleading word would pull the prompt average away from the concept."""
    out = []
    for lemma in synset.lemmas:
        if fold(lemma) == fold(keyword) or lemma != lemma.lower():
            continue
        seen = dict(wordnet.senses(lemma)).get(synset.offset, 0)
        match = wordnet.match(lemma)
        if seen and match.synset is not None and match.synset.offset == synset.offset:
            out.append(lemma)
    return out


def photo_tags_path() -> Path:
    """The shipped photo vocabulary (a copy of ``config/photo-tags.toml`` inside the package)."""
    from importlib import resources

    return Path(str(resources.files("tagwatch") / "data" / PHOTO_TAGS_NAME))


_reference_cache: dict[tuple[str, int], Reference] = {}


def reference_concepts(wordnet: WordNet, read: Callable[[Path], list[tuple[str, str, str | None]]],
                       source: Path | None = None, path: Path | None = None) -> Reference:
    """The shipped photo vocabulary's concepts by synset, and its hand-made parents (``read`` gives
    its (keyword, synset name, parent keyword or None) triples); remembered per file version, as it
    is read for every list.  Empty when ``source``, the list being read, is that file: its concepts
    are its own."""
    path = path or photo_tags_path()
    try:
        key = (str(path), os.stat(path).st_mtime_ns)
    except OSError:
        return Reference({})
    try:
        if source is not None and os.path.samefile(source, path):
            return Reference({})
    except OSError:
        pass  # a list that is no file (a test's text): not the shipped one
    cached = _reference_cache.get(key)
    if cached is None:
        names: dict[str, str] = {}
        offsets: dict[str, str] = {}  # keyword → its synset offset
        made: list[tuple[str, str]] = []  # (offset, parent keyword)
        for keyword, synset_name, parent in read(path):
            try:
                offset = wordnet.resolve(synset_name).offset
            except WordNetError:
                continue  # the shipped list's own load reports it
            names.setdefault(offset, keyword)
            offsets.setdefault(keyword, offset)
            if parent is not None:
                made.append((offset, parent))
        parents = {offset: offsets[parent] for offset, parent in made
                   if parent in offsets and offsets[parent] != offset}
        cached = Reference(names, parents)
        _reference_cache.clear()
        _reference_cache[key] = cached
    return cached
