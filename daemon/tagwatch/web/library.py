"""What the review pages show, read from the store, the photos' own metadata and the tag list.

Scores are the daemon's: the cached image vectors against the tag list's text vectors (from the
store), each tag against its own threshold.  Which keywords a photo *carries* is read from the file
itself with exiftool (one command per page of the grid, cached by the file's size and mtime), so the
page shows the state a photo app would see; the ledger says which of them are tagwatch's.  Nothing
here writes anything but text vectors of a tag list the daemon has not yet seen (see
:meth:`Library.scoring`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

from .. import shared
from ..captions import Captions, Reading
from ..casefold import fold, folded
from ..config import Config, TaggingConfig
from ..encoder import LazyModel
from ..geotag import Places
from ..metadata import FileState, Keywords, KeywordWriter, MetadataError, overwritten
from ..model import model_identity
from ..overrides import Override, Overrides, OverridesError, glob_escape
from ..pipeline import listed_with, load_config_overrides, load_tag_list
from ..places import Coordinates
from ..scoring import tag_thresholds
from ..status import daemon_state
from ..store import ADDED, DECLINED, DONE, FAILED, UNTAGGED, USER, FileRow, Located, Store
from ..tagger import Expansion, TagMatrix, select, thresholds
from ..vectors import text_vectors
from ..vocabulary import Vocabulary, VocabularyError
from ..watcher import PathFilter
from ..wording import counted, score_beside
from ..writeback import TagRules, Writeback, carried, corrected
from .paths import PhotoRoots, real

log = logging.getLogger(__name__)

PAGE_SIZE = 60
NEAR_MARGIN = 0.03  # cosine: "near the threshold" unless the person picks another margin
NEIGHBOURS = 12  # photos shown just above and just below a tag's threshold
SUBFOLDERS = 1000  # folders inside the grid's folder listed as links (the select offers OPTIONS of them)
OPTIONS = 200  # folders a level offers in the grid's folder select: the page stays light
OURS, YOURS, PERSON = "ours", "yours", "person"  # whose keyword: tagwatch's, a correction's, the person's


@dataclass(frozen=True)
class Scoring:
    """One consistent view of the tag list, its vectors, thresholds and the overrides."""

    vocabulary: Vocabulary
    tags: TagMatrix
    thresholds: np.ndarray  # per tag, float32, as the daemon compares
    written: np.ndarray  # per tag, float64, as the list or the config gives it (what a person sees)
    overrides: Overrides
    index: dict[str, int]
    top_k: int
    expansion: Expansion = field(default_factory=Expansion)  # the levels a predicted tag also writes

    def threshold(self, keyword: str) -> float | None:
        i = self.index.get(keyword)
        return None if i is None else float(self.thresholds[i])

    def spelled(self, typed: str) -> str:
        """The list's spelling of a keyword typed in any case (``Purple`` → ``purple``), else as typed."""
        wanted = fold(typed)
        return next((keyword for keyword in self.index if fold(keyword) == wanted), typed)


@dataclass(frozen=True)
class Chip:
    """One keyword on a photo: whose it is, and its score against its threshold (list tags only)."""

    keyword: str
    owner: str  # OURS, YOURS or PERSON; "rejected" for a correction that takes it out
    score: float | None = None
    threshold: float | None = None
    undone: bool = False  # PERSON: written for a correction since taken back; it stays, as the person's
    above: str = ""  # a level expansion writes above this tag: score and threshold are that tag's
    caption: bool = False  # a keyword of the photo's caption: score and threshold are [captions]'
    in_file: bool = True  # False: a rejected keyword the file no longer holds

    @property
    def hint(self) -> str:
        who = {OURS: "written by tagwatch", YOURS: "added by your correction", PERSON: "your own keyword",
               "rejected": "rejected by your correction"}[self.owner]
        if self.owner == "rejected" and self.in_file:
            who += "; still in the file until tagwatch takes it out"
        if self.undone:
            who = ("written for a correction you took back: yours now, tagwatch never takes it out "
                   "(remove it in your photo app)")
        if self.score is None or self.threshold is None:
            return who
        level = (f" (a level above {self.above}: its score and threshold)" if self.above else
                 " (a keyword of the caption: [captions] threshold)" if self.caption else "")
        score = score_beside(self.score, self.threshold)
        return f"{who}; score {score}, threshold {self.threshold:.3f}{level}"


@dataclass(frozen=True)
class Card:
    """A photo in the grid."""

    path: str
    name: str
    folder: str
    photo_url: str
    thumb_url: str
    state: str
    error: str | None
    updated: float | None
    chips: tuple[Chip, ...] = ()
    top: tuple[tuple[str, float], ...] = ()  # best scores, shown on hover
    read_error: str | None = None
    margin: float | None = None  # distance of the nearest threshold (the near filter)
    kept: str = ""  # the grid's tag, which this photo carries but is not predicted now (append mode)

    @property
    def title(self) -> str:
        if not self.top:
            return self.name
        return self.name + " — " + ", ".join(f"{k} {s:.3f}" for k, s in self.top)


@dataclass(frozen=True)
class Filters:
    folder: str = ""  # "<root>" or "<root>/<relative folder>"
    tag: str = ""
    show: str = "all"  # all, recent, failed, near
    margin: float = NEAR_MARGIN
    page: int = 1

    def query(self, **changes: object) -> str:
        """The query string of these filters with ``changes``; defaults left out."""
        values = {"folder": self.folder, "tag": self.tag, "show": self.show, "margin": self.margin,
                  "page": self.page, **changes}
        defaults = {"folder": "", "tag": "", "show": "all", "margin": NEAR_MARGIN, "page": 1}
        return urlencode({k: v for k, v in values.items() if v != defaults[k]})


FIRST_WAIT_S = 2  # a page following a re-tag asks again after this long, then twice as long ...
LONGEST_WAIT_S = 30  # ... up to this
QUIET_POLLS = 4  # and stops after this many asks in a row found the count unchanged (2+4+8+16 s)


@dataclass(frozen=True)
class Follow:
    """How a page whose counts are as last tagged follows the re-tag (:meth:`Library._behind`): it
    asks again for its counts alone, sooner while the count moves and slower while it does not, and
    stops once it has not moved for :data:`QUIET_POLLS` asks.  Asking every second reloaded the
    grid and the *Tags* list for as long as the count stood, and it stands for good where the
    daemon will not re-tag (photos scanned with another tag list, no daemon running)."""

    behind: int  # photos still to re-tag, now
    quiet: int = 0  # asks in a row before this one that found ``behind`` unchanged

    @classmethod
    def after(cls, behind: int, was: str | None, quiet: str | None) -> Follow:
        """The follow of a page counting ``behind`` now; ``was`` and ``quiet`` are what the ask that
        rendered it carried (None on a page opened, not asked for)."""
        try:
            before, still = int(was or ""), int(quiet or "")
        except ValueError:
            return cls(behind)
        return cls(behind, min(still + 1, QUIET_POLLS) if before == behind else 0)

    @property
    def wait(self) -> int:
        """Seconds before the next ask."""
        return min(FIRST_WAIT_S * 2 ** self.quiet, LONGEST_WAIT_S)

    @property
    def stopped(self) -> bool:
        """The count has not moved for long: the page stops asking (a reload asks again)."""
        return self.quiet >= QUIET_POLLS

    def query(self) -> str:
        """What the next ask carries, for :meth:`after`."""
        return urlencode({"was": self.behind, "quiet": self.quiet})


@dataclass(frozen=True)
class FolderTree:
    """Where the grid's folder filter stands: each level from the watched folder down to it and the
    folders directly inside it, so a YEAR/MONTH/EVENT archive is walked a level at a time, never
    offered as one list of thousands of folders."""

    value: str  # the filter as the links and the select write it (``0/2019/07 Juli``)
    crumbs: list[tuple[str, str]]  # (filter, name) of each level: the watched folder (its path) first
    children: list[tuple[str, str]]  # (filter, name) of the folders directly inside it, by name
    more: int = 0  # folders inside it past SUBFOLDERS, not listed

    @property
    def path(self) -> str:
        """The folder's full path, as the select labels it."""
        return "/".join(name for _, name in self.crumbs)


@dataclass(frozen=True)
class Page:
    cards: list[Card]
    total: int
    filters: Filters
    pages: int
    notice: str | None = None
    predicted: int | None = None  # with a tag filter: how many of the ``total`` carrying it are predicted now
    tag: str = ""  # the filter's tag as the list spells it
    behind: int = 0  # with a tag filter: photos not re-tagged yet with the list as it is now, so
    #                  ``total`` and ``predicted`` are as last tagged (see Library._behind)


@dataclass(frozen=True)
class TagCounts:
    """The *Tags* list: (keyword, threshold, has its own, photos carrying it, photos predicted) for
    every tag, and the photos not re-tagged yet with the list as it is now (see Library._behind):
    while there are any, the two counts are as last tagged."""

    rows: list[tuple[str, float, bool, int, int]]
    behind: int = 0


@dataclass(frozen=True)
class Carriers:
    """Which photos carry each keyword and which are predicted to now (case-folded keyword → file ids).

    *Carry*: the ledger says tagwatch wrote it into the file (its own, or for a correction) and no
    person took it out since, or a tagged photo's current prediction holds it (written, or the
    person's already).  *Predicted now*: the tag list, thresholds, top_k, levels and corrections give
    it to the photo today.  They differ where ``[tagging] mode = "append"`` keeps a keyword the list
    no longer predicts (a threshold raised since): the report's "pastel: 8 photos" while 24 files
    carried it, so the photos to reject it from could not be found.  The ledger, not exiftool, is
    read: one query per photo, no file opened, so a 100,000-photo library is counted in about a
    second (and cached).  A keyword a person wrote in with another program, never predicted, is not
    counted: tagwatch does not know of it.
    """

    carried: dict[str, frozenset[int]]
    predicted: dict[str, frozenset[int]]

    def carrying(self, keyword: str) -> frozenset[int]:
        return self.carried.get(fold(keyword), frozenset())

    def predicting(self, keyword: str) -> frozenset[int]:
        return self.predicted.get(fold(keyword), frozenset())


@dataclass(frozen=True)
class ScoreLine:
    keyword: str
    score: float
    threshold: float
    verdict: str  # what it means for this photo, in words
    in_file: str | None  # whose it is where the file carries it (a chip's owner), else None
    rejected: bool
    bar: float  # 0-100: where the score sits on the page's scale
    line: float  # 0-100: where the threshold sits


@dataclass(frozen=True)
class CaptionView:
    """The photo's caption (``[captions]`` on) and each candidate keyword as ``explain`` shows it."""

    text: str | None  # None: not captioned yet
    captioner: str
    threshold: float
    candidates: list[tuple[str, float, str, str]] = field(default_factory=list)  # text, score, kind, verdict


@dataclass(frozen=True)
class PhotoView:
    path: str
    name: str
    folder: str
    row: FileRow | None
    url: str  # the page's own address, encoded once like the grid's links (forms post here)
    keywords_url: str  # its keyword panel alone (polled while a correction is on its way)
    preview_url: str
    keywords: Keywords | None
    read_error: str | None
    chips: tuple[Chip, ...]
    lines: list[ScoreLine]
    floor: float
    rejected: tuple[str, ...]
    added: tuple[str, ...]
    pending: list[str]  # the changes on their way into the file (the keyword panel polls meanwhile)
    history: list[tuple[str, str, float, tuple[str, ...]]]
    tag_list: tuple[str, ...]
    caption: CaptionView | None = None  # [captions] on
    crumbs: tuple[tuple[str, str], ...] = ()  # (grid address, name) of each folder level above it
    scored: bool = False  # it has a cached vector: no line above the floor is not "not scored yet"
    lower: float = 0.0  # the floor "show lower ones" goes to: low enough to show its best scores
    idle: tuple[tuple[str, str], ...] = ()  # (keyword, rule's path): removals changing nothing here
    unwritable: str | None = None  # why nothing is written into the photo now (see Library._unwritable)
    held_back: tuple[str, ...] = ()  # with ``unwritable``: the changes that wait for it
    where: str = "the file"  # where its keywords are: "the file", "its sidecar (IMG_1.xmp)" (Library._where)

    @property
    def into(self) -> str:
        """Where a correction on its way is written: its sidecar where the keywords are only there."""
        return self.where if self.where.startswith("its sidecar") else "the file"


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    height: float
    count: int
    low: float
    high: float
    above: bool


@dataclass(frozen=True)
class TagView:
    keyword: str
    threshold: float
    own: bool  # the tag has its own threshold in the list (else the global one)
    proposed: float | None
    bars: list[Bar]
    lo: float
    hi: float
    line_x: float
    proposed_x: float | None
    total: int
    above: int  # photos scoring above the threshold shown (proposed, else current)
    above_now: int  # ... above the current threshold
    carried: int  # photos whose file carries it (see :class:`Carriers`)
    just_above: list[tuple[Card, float]]
    just_below: list[tuple[Card, float]]
    rich: bool  # the tag list is a .toml the threshold can be written into
    parent: str = ""
    prompts: tuple[str, ...] = field(default_factory=tuple)
    predicted: int = 0  # photos the list gives it now (top_k, levels and corrections applied)
    append: bool = False  # [tagging] mode = "append": a keyword no longer predicted stays in the file
    behind: int = 0  # photos not re-tagged yet with the list shown: ``predicted`` and ``carried`` are
    #                  from before it (see Library._behind)


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class KeywordCache:
    """The keywords in each photo (or its sidecar) as exiftool reads them, cached by size and mtime."""

    def __init__(self, writer: KeywordWriter, limit: int = 20_000) -> None:
        self.writer, self.limit = writer, limit
        self._cache: OrderedDict[str, tuple[tuple[int, int], Keywords | str]] = OrderedDict()
        self._lock = threading.Lock()

    def _source(self, path: str, embeds: bool | None = None) -> Path:
        """Where the photo's keywords are read: the photo itself where the write embeds them, else its
        sidecar.  ``embeds``: :meth:`KeywordWriter.destinations`' answer where the caller has it (the
        photo page, which also says where they are), so a JPEG's first bytes are read once a page."""
        photo = Path(path)
        if embeds is None:
            embeds = self.writer.embeds(photo)
        return photo if embeds else self.writer.sidecar_for(photo)

    def get_many(self, paths: Sequence[str],
                 embeds: Mapping[str, bool] | None = None) -> dict[str, Keywords | str]:
        """Each photo's keywords (or why none can be read); ``embeds``: see :meth:`_source`."""
        found: dict[str, Keywords | str] = {}
        to_read: dict[Path, tuple[str, tuple[int, int]]] = {}
        for path in paths:
            source = self._source(path, None if embeds is None else embeds.get(path))
            if not real(str(source)):  # the daemon follows no link: nothing is read through one here
                what = "it is" if source == Path(path) else f"its sidecar {source.name} is"
                found[path] = (f"{what} a symbolic link or reached through one, which tagwatch does not "
                               "follow: nothing is read through it")
                continue
            try:
                st = os.stat(source)
            except FileNotFoundError:
                found[path] = Keywords() if source != Path(path) else "file not found"
                continue
            except OSError as exc:
                found[path] = f"cannot read: {exc.strerror}"
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            with self._lock:
                cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                found[path] = cached[1]
            else:
                to_read[source] = (path, stamp)
        for start in range(0, len(to_read), 100):
            sources = list(to_read)[start:start + 100]
            for source, result in self.writer.read_many(sources).items():
                path, stamp = to_read[source]
                found[path] = result
                with self._lock:
                    self._cache[path] = (stamp, result)
                    self._cache.move_to_end(path)
                    while len(self._cache) > self.limit:
                        self._cache.popitem(last=False)
        return found

    def get(self, path: str, embeds: bool | None = None) -> Keywords | str:
        return self.get_many([path], None if embeds is None else {path: embeds})[path]


def file_keywords(keywords: Keywords) -> list[str]:
    """The flat keywords of a file, IPTC's order first, then those only in XMP."""
    return list(dict.fromkeys((*keywords.iptc, *keywords.xmp)))


def subfolders(path: str, filt: PathFilter) -> list[str]:
    """Names of the folders directly inside ``path``, sorted as a person reads them (case aside):
    those the daemon skips left out (hidden, excluded: its own :class:`PathFilter`), and links (the
    page opens no photo through one).  A ``path`` reached through a link lists nothing, as a missing
    folder: a link to ``/`` would otherwise let the page browse the whole file system.  One directory
    read, no walk, so a folder of a 200,000-photo archive costs what its level holds."""
    if not real(path):
        return []
    try:
        with os.scandir(path) as entries:
            names = [e.name for e in entries
                     if e.is_dir(follow_symlinks=False) and filt.wanted_dir(e.path)]
    except OSError:
        return []
    return sorted(names, key=lambda name: (name.casefold(), name))


def _declined(ledger: dict[str, str], keywords: Keywords | None) -> set[str]:
    """Keywords of ours a person took out of the file (not in it now): never written in again."""
    present = set(file_keywords(keywords)) if keywords is not None else set()
    return {k for k, action in ledger.items() if action == DECLINED and k not in present}


class Library:
    """The review pages' read model (thread-safe: uvicorn runs the routes in a thread pool)."""

    def __init__(self, config: Config, store: Store, writer: KeywordWriter,
                 daemon_running: Callable[[], bool]) -> None:
        self.config, self.store = config, store
        self.roots = PhotoRoots(config.watch, config.exclude)
        self.identity = model_identity(config.model)
        self.keywords = KeywordCache(writer)
        self.daemon_running = daemon_running
        self._scoring: Scoring | None = None
        self._stamp: object = None
        self._load_lock = threading.Lock()
        self.notice: str | None = None  # a tag list or overrides problem the pages mention
        self._cache: OrderedDict[tuple[object, ...], object] = OrderedDict()  # see _cached
        self._cache_lock = threading.Lock()
        self._captions: Captions | None = None  # built on the first photo page, with [captions] on
        self.places = Places(config.places, store)  # the gazetteer loads only for a point not cached

    def use_tagging(self, tagging: TaggingConfig) -> None:
        """Score with ``tagging`` from now on: the daemon hosting the page reloaded its config (a
        threshold, a mode, top_k changed by SIGHUP); the page went on showing the old one as the
        global threshold and "writing" keywords the daemon would never write."""
        with self._load_lock:
            self.config = replace(self.config, tagging=tagging)
            self._stamp = None  # the thresholds, top_k and levels are the scoring's: built again
        with self._cache_lock:
            self._cache.clear()

    # -- the tag list --------------------------------------------------------------------------

    def scoring(self) -> Scoring:
        """The tag list and overrides as they are on disk now (re-read when either file changed).

        Prompts without a cached text vector are those of a tag list edited since the daemon last
        looked: while a daemon runs it encodes them within seconds, so the previous list stays in use
        until they are in the store; with no daemon (or at the first load) the page encodes them itself,
        through the model's child process, which ends right after.
        """
        stamp = (_stamp(self.config.tags), _stamp(self.config.overrides))
        if self._scoring is not None and stamp == self._stamp:
            return self._scoring
        with self._load_lock:
            if self._scoring is not None and stamp == self._stamp:
                return self._scoring
            try:
                scoring = self._load()
            except (VocabularyError, OverridesError) as exc:
                if self._scoring is None:
                    raise
                self.notice = f"{exc} (the page keeps using the previous version)"
                log.warning("review page: %s", self.notice)
                self._stamp = stamp
                return self._scoring
            if scoring is None:  # waiting for the daemon to encode a new tag list
                assert self._scoring is not None
                return self._scoring
            self._scoring, self._stamp, self.notice = scoring, stamp, None
            return scoring

    def _load(self) -> Scoring | None:
        vocabulary = load_tag_list(self.config, quiet=True)  # reloaded often: its warnings are the daemon's
        prompts = vocabulary.prompts()
        vectors = self.store.text_vectors(prompts, self.identity)
        missing = [p for p in prompts if p not in vectors]
        if missing and self._scoring is not None and self.daemon_running():
            self.notice = (f"{self.config.tags} changed: waiting for the daemon to encode its "
                           f"{len(missing)} new prompts")
            return None
        if missing:
            log.info("review page: encoding %s of %s", counted(len(missing), "prompt"), self.config.tags)
            model = LazyModel(self.config.model)
            try:
                with model.using() as encoder:
                    encoded = encoder.encode_texts(missing)
            finally:
                model.close()
            self.store.put_text_vectors(dict(zip(missing, encoded, strict=True)), self.identity)
            vectors.update(self.store.text_vectors(missing, self.identity))
        overrides = load_config_overrides(self.config, quiet=True)
        default = self.config.tagging.threshold
        return Scoring(vocabulary, TagMatrix.build(vocabulary, vectors), thresholds(vocabulary, default),
                       tag_thresholds(vocabulary.tags, default), overrides,
                       {k: i for i, k in enumerate(vocabulary.keywords)}, self.config.tagging.top_k,
                       Expansion.of(vocabulary, self.config.tagging))

    # -- the grid ------------------------------------------------------------------------------

    def folders(self, tree: FolderTree | None = None) -> list[tuple[str, str]]:
        """(filter value, label) for the grid's folder select: each watched folder and the folders
        directly inside it; with a folder picked (``tree``), the levels down to it and the folders
        inside it instead, so every folder is a few picks away and the select stays short."""
        out: list[tuple[str, str]] = []
        for index, root in enumerate(self.roots.roots):
            out.append((str(index), root))
            if tree is None:
                out += [(f"{index}/{name}", f"{root}/{name}")
                        for name in subfolders(root, self.roots.filter)[:OPTIONS]]
            elif tree.crumbs[0][0] == str(index):
                out += [(value, "/".join(name for _, name in tree.crumbs[:depth + 1]))
                        for depth, (value, _) in enumerate(tree.crumbs) if depth]
                out += [(value, f"{tree.path}/{name}") for value, name in tree.children[:OPTIONS]]
        return out

    def folder_tree(self, value: str) -> FolderTree | None:
        """The levels down to the folder filter ``value`` and the folders inside it; None: no folder
        picked, or one that is not inside a watched folder."""
        where = self.roots.folder_parts(value) if value else None
        if where is None:
            return None
        index, parts = where
        crumbs = [(str(index), self.roots.roots[index])] + [
            (f"{index}/{'/'.join(parts[:depth])}", parts[depth - 1]) for depth in range(1, len(parts) + 1)]
        names = subfolders(os.path.join(self.roots.roots[index], *parts), self.roots.filter)
        current = crumbs[-1][0]
        return FolderTree(current, crumbs, [(f"{current}/{name}", name) for name in names[:SUBFOLDERS]],
                          max(0, len(names) - SUBFOLDERS))

    def grid(self, filters: Filters) -> Page:
        scoring = self.scoring()
        folders = list(self.roots.roots)
        if filters.folder:
            folder = self.roots.folder(filters.folder)
            folders = [folder] if folder is not None else []
        tag = scoring.spelled(filters.tag) if filters.tag else None  # RED is the tag red, as everywhere
        offset = (filters.page - 1) * PAGE_SIZE
        margins: dict[str, float] = {}
        if filters.show == "near":
            near = self._near(scoring, folders, tag, filters.margin)
            ranked = sorted(near.items(), key=lambda item: (item[1][1], item[0]))
            total = len(ranked)
            picked = ranked[offset:offset + PAGE_SIZE]
            rows = [row for _, (row, _) in picked]
            margins = {path: margin for path, (_, margin) in picked}
        else:
            state = {"failed": FAILED, "recent": DONE}.get(filters.show)
            recent = filters.show == "recent"
            if tag is None:
                rows, total = self.store.browse(folders, state=state, recent=recent, limit=PAGE_SIZE,
                                                offset=offset)
            else:  # the photos whose file carries it, not only those the list predicts it for now
                carriers = self._carriers()
                carrying, predicting = carriers.carrying(tag), carriers.predicting(tag)
                found = [row for row in self._listed(folders, state, recent) if row.id in carrying]
                total, rows = len(found), found[offset:offset + PAGE_SIZE]
                now = {row.path for row in rows if row.id in predicting}
                cards = [card if card.path in now else replace(card, kept=tag)
                         for card in self.cards(rows, scoring, margins)]
                return Page(cards, total, filters, max(1, math.ceil(total / PAGE_SIZE)), self.notice,
                            sum(1 for row in found if row.id in predicting), tag, self._behind(scoring))
        cards = self.cards(rows, scoring, margins)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        return Page(cards, total, filters, pages, self.notice, tag=tag or "")

    def _database_stamp(self) -> tuple[object, ...]:
        """Changes with every commit to the database (its WAL file, then the file at a checkpoint):
        the store's own stamp follows file rows only, and a re-score that changes a photo's
        predictions, or a person's removal, left the counts as they were until a file changed."""
        database = self.store.path
        return _stamp(database), _stamp(database.with_name(database.name + "-wal"))

    def _listed(self, folders: Sequence[str], state: str | None, recent: bool) -> list[FileRow]:
        """Every live photo inside ``folders`` (in ``state``), in the grid's order: a tag filter
        keeps those carrying the tag, which the store cannot select by itself (the ledger decides)."""
        def load() -> list[FileRow]:
            return self.store.browse(folders, state=state, recent=recent, limit=-1)[0]
        return self._cached(("listed", tuple(folders), state, recent, *self._database_stamp()),  # type: ignore[return-value]
                            load)

    def _carriers(self) -> Carriers:
        """:class:`Carriers` of every photo in the watched folders, cached until the database changes."""
        def count() -> Carriers:
            rows = self._listed(list(self.roots.roots), None, False)
            ledgers = self.store.ledgers(row.id for row in rows)
            carried: dict[str, set[int]] = {}
            predicted: dict[str, set[int]] = {}
            for row in rows:
                ledger = {fold(k): action for k, action in ledgers.get(row.id, {}).items()}
                for keyword, action in ledger.items():
                    if action in (ADDED, USER):  # DECLINED replaced ADDED where a person took it out
                        carried.setdefault(keyword, set()).add(row.id)
                if row.state != DONE:
                    continue
                for keyword in folded(row.tags or ()):
                    if ledger.get(keyword) != DECLINED:  # a person took it out: never written again
                        predicted.setdefault(keyword, set()).add(row.id)
                        carried.setdefault(keyword, set()).add(row.id)
            return Carriers({k: frozenset(v) for k, v in carried.items()},
                            {k: frozenset(v) for k, v in predicted.items()})
        return self._cached(("carriers", *self._database_stamp()), count)  # type: ignore[return-value]

    def _cached(self, key: tuple[object, ...], make: Callable[[], object]) -> object:
        """``make()``, kept while the store's file rows are unchanged (a few entries): paging through
        *near a threshold* or a tag's page re-reads no vector and re-scores nothing."""
        key = (self.store.stamp(), *key)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return value

    def _vectors(self, folders: Sequence[str]) -> tuple[list[FileRow], np.ndarray]:
        """The tagged photos inside ``folders`` and their cached vectors as one float16 matrix."""
        def load() -> tuple[list[FileRow], np.ndarray]:
            pairs = self.store.browse_vectors(folders, self.identity)
            matrix = np.stack([v for _, v in pairs]) if pairs else np.zeros((0, 1), np.float16)
            return [row for row, _ in pairs], matrix
        return self._cached(("vectors", tuple(folders)), load)  # type: ignore[return-value]

    def _scores(self, scoring: Scoring, matrix: np.ndarray, column: int | None = None) -> np.ndarray:
        """Scores of every row of ``matrix`` (one tag's column, or all), 4,096 rows at a time."""
        parts = []
        for start in range(0, len(matrix), 4096):
            scores = scoring.tags.scores(matrix[start:start + 4096])
            parts.append(scores[:, column] if column is not None else scores)
        if parts:
            return np.concatenate(parts)
        return np.zeros((0,) if column is not None else (0, len(scoring.index)), np.float32)

    def _near(self, scoring: Scoring, folders: list[str], tag: str | None,
              margin: float) -> dict[str, tuple[FileRow, float]]:
        """Photos with a score within ``margin`` of its tag's threshold (of ``tag``, or of any tag):
        the ones a small threshold change would flip."""
        column = scoring.index.get(tag) if tag else None
        if tag and column is None:
            return {}

        def find() -> dict[str, tuple[FileRow, float]]:
            rows, matrix = self._vectors(folders)
            found: dict[str, tuple[FileRow, float]] = {}
            for start in range(0, len(rows), 4096):
                scores = scoring.tags.scores(matrix[start:start + 4096])
                distance = np.abs(scores - scoring.thresholds[None, :])
                nearest = distance[:, column] if column is not None else distance.min(axis=1)
                for row, value in zip(rows[start:start + 4096], nearest.tolist(), strict=True):
                    if value <= margin:
                        found[row.path] = (row, value)
            return found
        return self._cached(("near", id(scoring), tuple(folders), column, margin), find)  # type: ignore[return-value]

    def cards(self, rows: Sequence[FileRow], scoring: Scoring, margins: dict[str, float] | None = None
              ) -> list[Card]:
        """Grid cards of ``rows``: the file's keywords (one exiftool command for all), ours told
        apart by the ledger, scores from the cached vectors."""
        margins = margins or {}
        rows = [r for r in rows if self.roots.locate(r.path) is not None]
        read = self.keywords.get_many([r.path for r in rows])
        ledgers = self.store.ledgers(r.id for r in rows)
        vectors = self.store.image_vectors((r.key for r in rows if r.key), self.identity)
        keyed = [r for r in rows if r.key in vectors]
        scores = (scoring.tags.scores(np.stack([vectors[r.key] for r in keyed])) if keyed
                  else np.zeros((0, len(scoring.index)), np.float32))
        by_path = {r.path: scores[i] for i, r in enumerate(keyed)}
        cards = []
        for row in rows:
            found = read.get(row.path)
            row_scores = by_path.get(row.path)
            override = scoring.overrides.for_path(row.path)
            keywords = found if isinstance(found, Keywords) else None
            ledger = ledgers.get(row.id, {})
            declined = _declined(ledger, keywords)
            levels = self._levels(row_scores, scoring, override, declined) if row_scores is not None else {}
            spot = self._spot(row) if override.remove else None  # only a removal needs it (_placed)
            rejected, _ = self._rejections(row.path, scoring, override, row_scores, ledger, declined,
                                           self._placed(spot, override))
            chips = self._chips(keywords, ledger, row_scores, scoring, override, levels, rejected=rejected)
            top: tuple[tuple[str, float], ...] = ()
            if row_scores is not None:
                best = np.argpartition(-row_scores, min(5, len(row_scores) - 1))[:5]
                best = best[np.argsort(-row_scores[best])]
                top = tuple((scoring.tags.keywords[i], float(row_scores[i])) for i in best)
            folder, name = os.path.split(row.path)
            cards.append(Card(row.path, name, folder, self.roots.url("photo", row.path) or "",
                              self.roots.url("thumb", row.path) or "", row.state, row.error,
                              row.tagged if row.tagged is not None else row.updated,
                              tuple(chips), top, found if isinstance(found, str) else None,
                              margins.get(row.path)))
        return cards

    @staticmethod
    def _levels(scores: np.ndarray, scoring: Scoring, override: Override,
                declined: set[str]) -> dict[str, tuple[str, float]]:
        """The levels expansion writes into this photo → the best tag below each and its score:
        :meth:`tagger.Expansion.implied`, the rule ``export`` and the write use, so a level shows the
        score it is exported with, not its own (which is below its threshold, or it would be a tag)."""
        picked = select(scores[None, :], scoring.thresholds, scoring.top_k)[0]
        return scoring.expansion.implied([(scoring.tags.keywords[i], float(scores[i])) for i in picked],
                                         override.kept_out(declined))

    @staticmethod
    def _chips(keywords: Keywords | None, ledger: dict[str, str], scores: np.ndarray | None,
               scoring: Scoring, override: Override,
               levels: dict[str, tuple[str, float]] | None = None,
               captioned: tuple[dict[str, float], float] | None = None,
               rejected: Sequence[str] = ()) -> list[Chip]:
        """The file's keywords, whose each is, and its score: a level's is the tag's below it
        (``levels``, from :meth:`_levels`), against that tag's threshold; a caption keyword's is its
        candidate's (``captioned``: case-folded keyword → score, and the ``[captions]`` threshold);
        then the ``rejected`` ones not in the file (:meth:`_rejections` picks them).  One of ours that
        is ``rejected`` and still in the file (a write on its way, or a photo that cannot be written)
        is shown rejected too, with its ↺: a ✕ there offered a correction already saved."""
        chips = []
        levels = levels or {}
        from_caption, caption_limit = captioned or ({}, 0.0)
        present = file_keywords(keywords) if keywords is not None else []
        added = folded(override.add)  # a correction's keyword while a rule adds it: ↺ takes the rule back
        taking = folded(rejected)  # one of ours still in the file: the correction is saved, ↺ takes it back
        for keyword in present:
            action = ledger.get(keyword)
            owner = OURS if action == ADDED else YOURS if fold(keyword) in added else PERSON
            if owner == OURS and fold(keyword) in taking:
                owner = "rejected"
            below, carried = levels.get(keyword, ("", 0.0))
            i = scoring.index.get(keyword)
            score = (carried if below else float(scores[i]) if scores is not None and i is not None
                     else None)
            limit = scoring.threshold(below or keyword) if score is not None else None
            caption = score is None and fold(keyword) in from_caption
            if caption:
                score, limit = from_caption[fold(keyword)], caption_limit
            chips.append(Chip(keyword, owner, score, limit, undone=owner == PERSON and action == USER,
                              above=below, caption=caption))
        held = folded(present)
        chips += [Chip(k, "rejected", in_file=False) for k in rejected if fold(k) not in held]
        return chips

    def _spot(self, row: FileRow | None) -> Located | None:
        """The photo's coordinates as last written and its place keywords (the store's ``located``
        row; None with places off): read once per page view and passed to :meth:`_placed` and
        :meth:`_places`, which read it each for themselves before (two queries per photo page)."""
        if row is None or not self.config.places.enabled:
            return None
        return self.store.located([row.id]).get(row.id)

    def _placed(self, spot: Located | None, override: Override) -> set[str]:
        """The place keywords (case-folded) the photo's coordinates (``spot``, :meth:`_spot`) give it
        before its corrections, where one removes something: a removed place keeps out what tagwatch
        would write, as a tag scoring above its threshold does (:meth:`_rejections`).  From the place
        cache the daemon filled."""
        if not override.remove or spot is None or spot.lat is None or spot.lon is None:
            return set()
        return folded(self.places.at(Coordinates(spot.lat, spot.lon)))

    @staticmethod
    def _rejections(path: str, scoring: Scoring, override: Override, scores: np.ndarray | None,
                    ledger: dict[str, str], declined: set[str], confirmed: Collection[str] = ()
                    ) -> tuple[list[str], list[tuple[str, str]]]:
        """The overrides' removals for this photo, split in two.  Shown struck through: those that
        keep out something tagwatch would write without them (a tag scoring above its threshold, a
        level one of those implies, a caption keyword the model confirms or a place the photo's
        coordinates give: ``confirmed``, folded), or
        that the ledger has as tagwatch's, and the photo's own correction (↺ takes it back).  The
        rest, (keyword, the deciding rule's path): a folder rule that changes nothing in this photo,
        which would otherwise stand as a keyword of the file on every photo the glob matches."""
        if not override.remove:
            return [], []
        wanted = set(confirmed) | {fold(k) for k, action in ledger.items() if action in (ADDED, DECLINED)}
        if scores is not None:
            wanted |= {fold(scoring.tags.keywords[i]) for i in np.flatnonzero(scores > scoring.thresholds)}
            picked = select(scores[None, :], scoring.thresholds, scoring.top_k)[0]
            unruled = Override(add=override.add).kept_out(declined)  # no removal: what they keep out
            wanted |= folded(scoring.expansion.implied(
                [(scoring.tags.keywords[i], float(scores[i])) for i in picked], unruled))
        deciding: dict[str, str] = {}  # keyword → the last rule matching the photo that names it
        if any(fold(k) not in wanted for k in override.remove):
            overrides = scoring.overrides
            for rule in overrides.rules:
                says = Overrides((rule,), overrides.roots).for_path(path)
                deciding.update(dict.fromkeys((*says.add, *says.remove), rule.pattern))
        own = glob_escape(path)  # the pattern of the photo's own rule, as a correction writes it
        shown = [k for k in override.remove if fold(k) in wanted or deciding.get(k) == own]
        return shown, [(k, deciding.get(k, "")) for k in override.remove if k not in shown]

    # -- one photo -----------------------------------------------------------------------------

    def photo(self, path: str, floor: float | None = None) -> PhotoView:
        scoring = self.scoring()
        row = self.store.file(path)
        # where the keywords are read, where the page says they are and whether it shares a sidecar,
        # from one look at a JPEG's first bytes
        destinations = self.keywords.writer.destinations(Path(path))
        found = self.keywords.get(path, embeds=destinations[0])
        keywords = found if isinstance(found, Keywords) else None
        ledger = self.store.ledgers([row.id]).get(row.id, {}) if row else {}
        override = scoring.overrides.for_path(path)
        vector = None
        if row is not None and row.key is not None:
            vector = self.store.image_vectors([row.key], self.identity).get(row.key)
        scores = scoring.tags.scores(vector)[0] if vector is not None else None
        # Keywords of ours a person took out of the file: tagwatch never writes them in again; nor
        # those a person took out of the sidecar it shares with another photo, as the write reads them
        declined = _declined(ledger, keywords)
        beside = self._beside(path, destinations[1])
        if beside is not None:
            others, state = beside
            declined |= set(self.keywords.writer.absent(state, {k: () for k in others.declined}))
        implied = self._levels(scores, scoring, override, declined) if scores is not None else {}
        reading = self._reading(row, vector, scoring) if self.config.captions.enabled else None
        caption = self._caption(reading, override) if self.config.captions.enabled else None
        captioned = (({fold(text): score for text, score, _, verdict in caption.candidates
                       if verdict == "TAGGED"}, caption.threshold) if caption is not None else None)
        kept = ("TAGGED", "rejected by your correction")  # a caption keyword kept, or kept out by a rule
        confirmed = ({fold(text) for text, _, _, verdict in caption.candidates if verdict in kept}
                     if caption is not None else set())
        spot = self._spot(row)
        rejected, idle = self._rejections(path, scoring, override, scores, ledger, declined,
                                          confirmed | self._placed(spot, override))
        chips = self._chips(keywords, ledger, scores, scoring, override, implied, captioned, rejected)
        owner = {c.keyword: c.owner for c in chips if c.in_file}
        lowest = float(scoring.thresholds.min()) if len(scoring.thresholds) else 0.0
        floor = lowest - 0.1 if floor is None else floor
        lines: list[ScoreLine] = []
        written = row is not None and row.state == DONE
        written_not = ("set aside by untag: `tagwatch scan` of it brings it back"
                       if row is not None and row.state == UNTAGGED else
                       "not written: the photo could not be tagged" if row is not None and row.state == FAILED
                       else "not written yet")
        if scores is not None:
            chosen = set(select(scores[None, :], scoring.thresholds, scoring.top_k)[0])
            # a level carries the score of the best tag below it (as exported), against that tag's threshold
            shown = scores.astype(np.float32)
            limits = scoring.thresholds.copy()
            level = np.zeros(len(shown), bool)
            for keyword, (below, carried) in implied.items():
                if keyword in scoring.index:
                    shown[scoring.index[keyword]] = carried
                    limits[scoring.index[keyword]] = scoring.thresholds[scoring.index[below]]
                    level[scoring.index[keyword]] = True
            order = [i for i in np.lexsort((level, -shown)) if shown[i] > floor][:60]  # a level after its tag
            top = max([float(shown[i]) for i in order] + [float(scoring.thresholds.max()), floor + 0.05])
            span = max(top + 0.02 - floor, 1e-6)
            for i in order:
                keyword, score = scoring.tags.keywords[i], float(shown[i])
                limit = float(limits[i])
                rejected = fold(keyword) in override.removes()  # as the write compares them
                if rejected:
                    verdict = "rejected by your correction"
                elif keyword in declined and (i in chosen or keyword in implied):
                    verdict = "taken out of the file by a person: not written again"
                elif i in chosen:
                    verdict = "tagged" if written else f"would be tagged ({written_not})"
                elif keyword in implied:
                    verdict = (f"tagged: a level above {implied[keyword][0]}" if written else
                               f"would be tagged, a level above {implied[keyword][0]} ({written_not})")
                elif score > limit:
                    verdict = f"above its threshold, beyond top_k ({scoring.top_k})"
                else:
                    verdict = "below its threshold"
                if keyword in implied:  # whose score and threshold these are, and its own score
                    verdict += (f" (score and threshold of {implied[keyword][0]}; its own score "
                                f"{float(scores[i]):.3f})")
                lines.append(ScoreLine(keyword, score, limit, verdict, owner.get(keyword), rejected,
                                       100 * (score - floor) / span, 100 * (limit - floor) / span))
        present = file_keywords(keywords) if keywords is not None else []
        changes = self._changes(self._wanted(path, row, scores, scoring, override, declined, reading, spot,
                                             beside), override, declined, present, ledger)
        unwritable = self._unwritable(path, row)
        # the daemon writes nothing into a photo untag set aside until a scan brings it back
        pending = [] if unwritable or (row is not None and row.state == UNTAGGED) else changes
        lower = floor - 0.2
        if scores is not None and len(scores) and not lines:  # every score below the floor: reach the best
            lower = min(lower, math.floor((float(scores.max()) - 0.1) * 20) / 20)
        folder, name = os.path.split(path)
        url = self.roots.url
        crumbs = tuple(("/?" + urlencode({"folder": value}), label)
                       for value, label in self.roots.folder_crumbs(path))
        return PhotoView(path, name, folder, row, url("photo", path) or "", url("photo-keywords", path) or "",
                         url("preview", path) or "", keywords,
                         found if isinstance(found, str) else None, tuple(chips), lines, floor,
                         override.remove, override.add, pending,
                         self.store.ledger_history(row.id) if row else [],
                         tuple(scoring.vocabulary.keywords), caption, crumbs, scores is not None, lower,
                         tuple(idle), unwritable, tuple(changes) if unwritable else (),
                         self._where(path, destinations))

    def _where(self, path: str, destinations: tuple[bool, bool]) -> str:
        """Where the photo's keywords are, as the write puts them and the log names it: both ask
        :meth:`KeywordWriter.destinations` (here ``destinations``, the page's one look at a JPEG's first
        bytes, which :class:`KeywordCache` reads them by too): a RAW's, a HEIC's, a JPEG's under
        ``[write] target = "sidecar"`` in its sidecar, read there."""
        writer, photo = self.keywords.writer, Path(path)
        embeds, side = destinations
        if not side:
            return "the file"
        sidecar = writer.sidecar_for(photo).name
        if embeds:  # [write] target = "both": read from the file, written into both
            return f"the file (also in its sidecar {sidecar})"
        return f"its sidecar ({sidecar})"

    def _captioner(self) -> Captions:
        """The ``[captions]`` stage, built on the first photo page that needs it: its captioner child
        starts only to caption, which never happens here."""
        if self._captions is None:
            with self._load_lock:
                if self._captions is None:
                    self._captions = Captions(self.store, self.config.captions, LazyModel(self.config.model),
                                              self.config.model)
        return self._captions

    def _reading(self, row: FileRow | None, vector: np.ndarray | None, scoring: Scoring) -> Reading | None:
        """The photo's cached caption and its candidates scored as ``explain`` and the write score them
        (the tagging model's text vectors, from the store); None where the daemon has not captioned
        it yet: no photo is captioned here."""
        captions = self._captioner()
        text = captions.cache.get([row.key]).get(row.key) if row is not None and row.key else None
        if text is None or vector is None:
            return None
        captions.use_vocabulary(scoring.vocabulary)  # a candidate duplicating a list tag is not kept
        return captions.readings([(text, vector)], self.config.tagging.templates[0], self._text_vectors)[0]

    def _caption(self, reading: Reading | None, override: Override) -> CaptionView:
        """The caption and what became of each candidate keyword; a photo the daemon has not
        captioned yet says so."""
        captions = self._captioner()
        if reading is None:
            return CaptionView(None, captions.identity, captions.cfg.threshold)
        removed = folded(override.remove)
        return CaptionView(reading.caption, captions.identity, captions.cfg.threshold, [
            (s.text, s.score, "noun" if s.noun else "modifier",
             "rejected by your correction" if s.kept and fold(s.text) in removed
             else "TAGGED" if s.kept else s.reason) for s in reading.scored])

    def _text_vectors(self, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """The tagging model's text vectors of ``prompts`` (a caption's candidates): from the store,
        where the daemon put them when it read the caption; any missing are encoded by the model's
        child, which ends right after (as :meth:`_load` does for a tag list)."""
        found = self.store.text_vectors(prompts, self.identity)
        if all(p in found for p in prompts):
            return found
        model = LazyModel(self.config.model)
        try:
            return text_vectors(self.store, model, prompts)[0]
        finally:
            model.close()

    def _beside(self, path: str, side: bool) -> tuple[shared.Mates, FileState] | None:
        """The other photos sharing this photo's sidecar (``photo.xmp`` naming: a RAW+JPEG pair) and
        what they have in it from tagwatch (:func:`shared.mates`), with the photo and its sidecar read
        as the write reads them; None for a photo whose sidecar no other photo shares (or is none of
        its keyword fields, :func:`shared.apart`, told ``side``, where the write puts its keywords, as
        :meth:`KeywordWriter.destinations` found it for the page), or that cannot be read: the page
        then decides as for any photo."""
        writer = self.keywords.writer
        try:
            if shared.apart(writer, self.store, path, side=side):
                return None
            others = shared.mates(writer, self.store, path)
            return (others, writer.inspect(Path(path))) if others else None
        except (MetadataError, OSError):
            return None

    def _wanted(self, path: str, row: FileRow | None, scores: np.ndarray | None, scoring: Scoring,
                override: Override, declined: set[str], reading: Reading | None, spot: Located | None,
                beside: tuple[shared.Mates, FileState] | None = None
                ) -> tuple[list[str], bool, bool, list[str]] | None:
        """What tagwatch writes into this photo now, whether that write takes out what of ours it no
        longer wants (sync, and overwrite with a prediction), whether it overwrites (a person's
        keywords go too) and the keywords it keeps as they are in the sidecar it shares: decided as
        the daemon decides it, from the same parts (:func:`select` and the levels, the caption's
        keywords, :func:`corrected`, :meth:`_places`, then :func:`carried`; the mode by
        :meth:`TagRules.planned`; beside a sidecar another photo shares (``beside``,
        :meth:`_beside`), the other photo's keywords there and the mode by
        :meth:`Writeback.kept_beside`, as the write and a dry run decide them).  The keywords a
        photo that embeds its own leaves in that sidecar alone are not kept: they go out of the
        photo, whose fields the page reads.  None for a photo not tagged yet or without a cached
        vector: only its corrections are known here.  One that failed is decided all the same: its
        write waits."""
        if scores is None or row is None or row.state not in (DONE, FAILED):
            return None
        kept = override.kept_out(declined)
        chosen = select(scores[None, :], scoring.thresholds, scoring.top_k)[0]
        predicted = scoring.expansion([(scoring.tags.keywords[i], float(scores[i])) for i in chosen], kept)
        tags, _ = corrected(override, predicted + (reading.keywords if reading is not None else []))
        keywords = [k for k, _ in tags if fold(k) not in kept]
        rules = TagRules(self.config.tagging.mode)
        writing, mode = carried(keywords, self._places(spot, override), kept), rules.planned(bool(keywords))
        stays: list[str] = []
        if beside is not None:  # the other photo's keywords stay; its overwrite may work as sync
            others, state = beside
            stays, mode, _ = Writeback.kept_beside(self.keywords.writer, path, state, others, writing, mode)
        return writing, rules.sweeps(bool(keywords)), mode == "overwrite", stays

    def _places(self, spot: Located | None, override: Override) -> list[str]:
        """The place keywords the write gives this photo now: those of its coordinates as last written
        (``spot``, :meth:`_spot`; a GPS edit is a change the daemon reads again), less what its
        corrections take out, as the write decides them (:meth:`Places.at`).  Not the place keywords
        last written: ↺ of a rejected place would find nothing on its way back."""
        if spot is None or spot.lat is None or spot.lon is None:
            return []
        return self.places.at(Coordinates(spot.lat, spot.lon), override.removes())

    @staticmethod
    def _changes(wanted: tuple[list[str], bool, bool, list[str]] | None, override: Override,
                 declined: set[str], present: Sequence[str], ledger: dict[str, str]) -> list[str]:
        """What tagwatch is about to change in the file: what it writes into it now (:meth:`_wanted`;
        unknown, its corrections) against the keywords exiftool reads (``present``; the ledger says
        which are its own; overwrite takes out the person's others, by :func:`overwritten`, as the
        write does; the keywords kept as they are in a sidecar another photo shares stay, as the
        write keeps them).  The photo page polls while this is not empty, so it shows the file once
        the daemon (or this page) has written it; nothing else may stay here, or the panel said *Writing
        into the file* and was swapped every second for good."""
        keywords, sweeps, overwrites, stays = (wanted if wanted is not None
                                               else (list(override.add), False, False, []))
        held = folded(present)  # the file's keywords, whatever their case, as the write does
        changes = [f"adding {k!r}" for k in keywords if fold(k) not in held | override.kept_out(declined)]
        wanting, removes, staying = folded(keywords), override.removes(), folded(stays)
        changes += [f"taking out {k!r}" for k in present if ledger.get(k) == ADDED and fold(k) not in staying
                    and (fold(k) in removes or (sweeps and fold(k) not in wanting))]
        if overwrites:  # ours to the write: the ledger's, and those written for a correction still asking
            owned = [k for k, action in ledger.items()
                     if action == ADDED or (action == USER and fold(k) in folded(override.add))]
            changes += [f"taking out {k!r}" for k in overwritten(present, [*keywords, *stays], owned)]
        return changes

    def _unwritable(self, path: str, row: FileRow | None) -> str | None:
        """Why nothing is written into this photo now, or None: the store's reason for one that
        failed, or why the write would refuse it as it is (read-only, hard links), known before the
        daemon tries.  The page says so beside its keywords and after a correction, which it
        promised would follow in a moment while the daemon then refused the write."""
        if row is None or row.state == UNTAGGED:
            return None
        if row.state == FAILED:
            return row.error or "it could not be tagged"
        try:
            st = os.stat(path)
        except OSError:
            return None
        return self.keywords.writer.refuses(Path(path), st)

    # -- one tag -------------------------------------------------------------------------------

    def tag(self, keyword: str, proposed: float | None = None) -> TagView | None:
        scoring = self.scoring()
        column = scoring.index.get(keyword)
        if column is None:
            return None
        tag = scoring.vocabulary.tags[column]
        current = float(scoring.written[column])  # 0.3, not float32's 0.30000001192092896
        rows, matrix = self._vectors(list(self.roots.roots))
        scores = self._cached(("column", id(scoring), column),
                              lambda: self._scores(scoring, matrix, column))  # type: ignore[assignment]
        shown = current if proposed is None else proposed
        values = scores.astype(np.float64)
        lo = math.floor(min([*values.tolist(), current, shown]) * 50) / 50
        hi = math.ceil(max([*values.tolist(), current, shown]) * 50) / 50 + 0.02
        bins = 60
        counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
        tallest = max(int(counts.max()) if len(counts) else 0, 1)
        width = 600 / bins
        bars = [Bar(i * width, width, 150 * c / tallest, int(c), float(edges[i]), float(edges[i + 1]),
                    float(edges[i]) >= shown) for i, c in enumerate(counts.tolist())]

        def x(value: float) -> float:
            return 600 * (value - lo) / (hi - lo)

        above = np.flatnonzero(scores > np.float32(shown))
        below = np.flatnonzero(scores <= np.float32(shown))
        near_above = above[np.argsort(scores[above], kind="stable")][:NEIGHBOURS]
        near_below = below[np.argsort(-scores[below], kind="stable")][:NEIGHBOURS]
        picked = [rows[i] for i in (*near_above.tolist(), *near_below.tolist())]
        cards = {c.path: c for c in self.cards(picked, scoring)}
        carriers = self._carriers()

        def neighbours(indices: np.ndarray) -> list[tuple[Card, float]]:
            return [(cards[rows[i].path], float(scores[i])) for i in indices.tolist()
                    if rows[i].path in cards]

        return TagView(
            keyword, current, tag.threshold is not None, proposed, bars, lo, hi, x(current),
            None if proposed is None else x(proposed), len(rows), len(above),
            int((scores > np.float32(current)).sum()), len(carriers.carrying(keyword)),
            neighbours(near_above), neighbours(near_below),
            self.config.tags.suffix.lower() == ".toml", "|".join(tag.parents), tag.prompts,
            len(carriers.predicting(keyword)), self.config.tagging.mode == "append", self._behind(scoring))

    def _behind(self, scoring: Scoring) -> int:
        """The photos with a cached vector whose keywords were last predicted with another tag list
        than ``scoring``'s, as their recorded fingerprint says (:func:`listed_with`).  Right after a
        threshold is saved that is all of them, until the daemon (or this page, with none running)
        re-scores them: the page answering the save read "2 score above the threshold 0.500; 4
        predicted now" with no word that the 4 were the old threshold's.  The tag page, the *Tags*
        list and the grid's tag filter all ask this one count (their counts come from the same
        :class:`Carriers`), so the three say the same thing while a re-tag is on its way."""
        current = scoring.vocabulary.fingerprint()

        def count() -> int:
            roots = list(self.roots.roots)
            scored = {row.id for row in self._vectors(roots)[0]}  # the re-score reaches only these
            return sum(1 for row in self._listed(roots, None, False)
                       if row.state == DONE and row.id in scored and listed_with(row.tagged_with) != current)
        return self._cached(("behind", current, *self._database_stamp()), count)  # type: ignore[return-value]

    def tag_counts(self) -> TagCounts:
        """Every tag of the list with the photos carrying it and those predicted (see
        :class:`Carriers`), and how many photos are still to re-tag with it (:meth:`_behind`, as the
        tag page): the list read the last re-score's counts as current while a re-tag was on its way."""
        scoring = self.scoring()
        carriers = self._carriers()
        return TagCounts([(tag.keyword, float(scoring.thresholds[i]), tag.threshold is not None,
                           len(carriers.carrying(tag.keyword)), len(carriers.predicting(tag.keyword)))
                          for i, tag in enumerate(scoring.vocabulary.tags)], self._behind(scoring))

    @property
    def appending(self) -> bool:
        """``[tagging] mode = "append"``: a keyword tagwatch wrote stays when no longer predicted."""
        return self.config.tagging.mode == "append"

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``tagwatch status`` shows: the database's counts, the running daemon, failures."""
        return {"stats": self.store.stats(self.identity), "daemon": daemon_state(self.config.database),
                "failures": self.store.failures(20), "database": str(self.config.database),
                "model": self.identity, "now": time.time()}


__all__ = ["CaptionView", "Carriers", "Filters", "Library", "Page", "PhotoView", "TagCounts", "TagView"]
