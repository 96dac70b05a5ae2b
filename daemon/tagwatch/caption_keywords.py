"""A caption turned into keywords: candidate phrases, each kept only if CLIP confirms it in the photo.

Pure functions, no I/O: the caption, the photo's image vector and the candidates' text vectors come
in, the choice comes out, with every candidate's score and why it was kept or not (``explain``).

The design is KeyBERT's (candidate n-grams of a text, ranked by the similarity of their embedding to
the document's) with CLIP's text tower in place of a sentence model and the *photo* in place of the
document: a candidate's score is the cosine of its prompt's text vector ("a photo of a {}.") with the
photo's image vector, the same number a tag of the list gets.  That makes the ranking and the CLIP
filter of caption-then-verify designs one step, and a caption's mistake (a "dog" the decoder made up)
is dropped unless the image tower sees it too.

Candidates are the caption's content words and phrases of 1-3 words: runs of words between
stop-words (articles, prepositions, pronouns, spatial words, common caption verbs, counting words).
Nouns are preferred: in an English noun phrase the head noun comes last ("red *dress*", "golden
retriever *puppy*"), so the phrases that end a run are taken as nouns, and so is any word a noun
lexicon (``nouns``) knows; a lone modifier ("red") is a candidate too, ranked after every noun.  A
colour word alone in its run ("a purple", "a white and black dog") is a modifier too: a caption that
names only a colour names no thing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Function words, and words that describe the picture rather than what is in it.  Hand-written
# (about 200 words) rather than taken from a library: NLTK's list would cost a 10 MB dependency and a
# corpus download, and it lacks what captions need (spatial words, "photo", common caption verbs).
STOP_WORDS: frozenset[str] = frozenset("""
a an the this that these those some any each every no another other such
and or but nor so yet than then as if while when where which who whom whose what why how
of in on at to from by with without for into onto upon over under above below beneath beside besides
between behind before after during through across along around near towards toward against about
among amid inside outside within off out up down away together apart
left right top bottom front back middle center centre side sides next edge corner foreground
background distance closeup close-up
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
one two three four five six seven eight nine ten several many few lots lot much more most less
is are was were be been being am has have had having do does did done can could will would
shall should may might must
there here very also just only too not really quite all both
photo photograph photos picture pictures image images shot view scene close
shows showing shown depicts depicting features featuring
sitting standing holding looking laying lying riding walking playing posing wearing using
eating drinking watching waiting flying running hanging parked sits stands holds looks lays
rides walks plays poses wears uses eats made taken seen filled covered topped
""".split())  # noqa: SIM905 (a block of words reads better than a list of 200 strings)

# Colour words: alone in a run ("a purple", "white" in "a white and black dog") they are a modifier
# whose noun the caption left out, not a head noun.  The price: "an orange" (the fruit) alone counts
# as a modifier too; it stays a candidate, only ranked after the nouns.
COLOURS: frozenset[str] = frozenset("""
red orange yellow green blue purple pink brown black white grey gray violet beige turquoise maroon
navy teal cyan magenta crimson scarlet golden silver colorful colourful multicolored multicoloured
""".split())  # noqa: SIM905

MAX_WORDS = 3
MAX_BYTES = 64  # IPTC IIM's limit for one keyword: exiftool would cut a longer one, and untag miss it
_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)


@dataclass(frozen=True)
class Candidate:
    """A keyword the caption offers; ``noun``: it is (or ends in) the head noun of its phrase."""

    text: str
    noun: bool


@dataclass(frozen=True)
class Scored:
    """A candidate with its score and the decision: ``kept``, or ``reason`` it was not."""

    text: str
    score: float
    noun: bool
    kept: bool
    reason: str = ""


def words(caption: str) -> list[str]:
    """The caption's words, lower case, apostrophes and hyphens kept inside a word."""
    return [w.strip("'-") for w in _WORD.findall(caption.lower()) if w.strip("'-")]


def candidates(caption: str, nouns: Collection[str] | None = None,
               max_words: int = MAX_WORDS) -> list[Candidate]:
    """Content phrases of 1 to ``max_words`` words, nouns first, each once, in caption order.

    With a noun lexicon, a phrase counts as a noun when its last word is a noun; without one, when it
    ends where its run of content words ends (the head of an English noun phrase comes last), unless
    it is a lone colour word (:data:`COLOURS`).
    """
    runs: list[list[str]] = [[]]
    for word in words(caption):
        if word in STOP_WORDS or len(word) < 2:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(word)
    found: dict[str, bool] = {}
    for run in (r for r in runs if r):
        for end in range(len(run), 0, -1):
            for start in range(max(0, end - max_words), end):
                phrase = run[start:end]
                head = ((phrase[-1] in nouns) if nouns is not None
                        else end == len(run) and not (len(run) == 1 and run[0] in COLOURS))
                if len(phrase) > 1 and not head:
                    continue  # "red horizontal": a phrase that is no noun is no keyword
                text = " ".join(phrase)
                if len(text.encode("utf-8")) > MAX_BYTES:
                    continue
                found[text] = found.get(text, False) or head
    nouns_first = sorted(found.items(), key=lambda kv: not kv[1])
    return [Candidate(text, noun) for text, noun in nouns_first]


def singular(word: str) -> str:
    """A rough singular for comparing keywords ("dogs" duplicates "dog"); English only, on purpose
    simple: a wrong guess only makes two keywords count as one."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _norm(text: str) -> str:
    return " ".join(singular(w) for w in text.lower().split())


def choose(found: Sequence[Candidate], scores: Sequence[float], threshold: float, top_k: int,
           taken: Iterable[str] = ()) -> list[Scored]:
    """Every candidate with its decision; the kept ones are the photo's open-vocabulary keywords.

    Kept: a score above ``threshold``, not a duplicate of ``taken`` (the tag list's keywords and
    synonyms) nor of a better candidate (plural and singular count as one), not a part of a list tag
    the caption names ("bar" or "vertical" of a caption's "vertical bar": the list decides that tag
    by its own threshold, and a fragment of it alone means something else), and within the
    ``top_k`` best, nouns ranked before modifiers.
    """
    taken_norm = {_norm(t) for t in taken}
    parts = _parts(c.text for c in found if _norm(c.text) in taken_norm)
    order = sorted(range(len(found)), key=lambda i: (not found[i].noun, -scores[i]))
    decided: dict[int, Scored] = {}
    seen: set[str] = set()
    kept = 0
    for i in order:
        candidate, score = found[i], float(scores[i])
        norm = _norm(candidate.text)
        reason = ("below threshold" if score <= threshold else "in the tag list" if norm in taken_norm
                  else f"part of {parts[norm]!r}, in the tag list" if norm in parts
                  else "duplicate" if norm in seen else "beyond top_k" if kept >= top_k else "")
        if not reason:
            kept += 1
            seen.add(norm)
        decided[i] = Scored(candidate.text, round(score, 4), candidate.noun, not reason, reason)
    return [decided[i] for i in order]


def _parts(tags: Iterable[str]) -> dict[str, str]:
    """Each shorter run of words inside one of ``tags`` (normalised) → the tag it is part of."""
    out: dict[str, str] = {}
    for tag in tags:
        run = _norm(tag).split()
        for size in range(len(run) - 1, 0, -1):
            for start in range(len(run) - size + 1):
                out.setdefault(" ".join(run[start:start + size]), tag)
    return out


def kept(scored: Iterable[Scored]) -> list[tuple[str, float]]:
    """The keywords chosen, best first, with their scores (as list tags come)."""
    return sorted(((s.text, s.score) for s in scored if s.kept), key=lambda kv: -kv[1])


def score(image_vector: np.ndarray, found: Sequence[Candidate], text_vectors: Mapping[str, np.ndarray],
          template: str) -> list[float]:
    """Each candidate's cosine with the photo (vectors are unit length: a dot product)."""
    image = np.asarray(image_vector, np.float32)
    return [float(np.asarray(text_vectors[template.format(c.text)], np.float32) @ image) for c in found]


def prompts(found: Iterable[Candidate], template: str) -> list[str]:
    """The prompts whose text vectors :func:`score` needs."""
    return [template.format(c.text) for c in found]
