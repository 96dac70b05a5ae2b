"""Keywords back into the files, ledger first: the write protocol, untag, renames and sidecars.

The protocol that keeps the ledger (which keywords are ours) exact through any crash:

1. :meth:`Writeback.plan_ahead` (store + a read of the file): read the file's metadata, let the
   stages that decide from it add theirs (places, from the GPS just read; the caption as the
   description, only where the photo has none), work out the change and, if there is one, record the
   file ``pending`` with the keywords about to become ours (and the fields about to be filled) in the
   ledger;
2. :func:`write_file` (the file only, no store): apply the plan, atomically;
3. :meth:`Writeback.record_done` (store): record the file tagged; or :meth:`Writeback.failed`,
   which withdraws what step 1 recorded and says whether to retry, wait, or give up.

A crash between 1 and 3 leaves the file ``pending`` for the next scan, and tagwatch never forgets a
keyword it put in.  Keywords recorded in step 1 stay pending in the ledger until step 3 finds them
in the file: only a keyword a recorded write put in can be taken for one a person took out (step 1
notices those, see :meth:`Writeback.taken_out`), never one a crash kept from the file.  The steps
are separate so that an engine may run step 2 elsewhere (the Ray engine's workers) while one
process owns the store; :meth:`Writeback.finish` runs all three here.
Which keywords a file should carry is decided before this module (:mod:`tagwatch.tagger`,
overrides, a caption's keywords), except what depends on the file's own metadata, which can only be
decided once it is read here (:mod:`tagwatch.geotag`, :meth:`tagwatch.captions.Captions.describe`);
this module carries the decisions out.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from . import logs, shared
from .atomic import fsync_folder
from .captions import Captions, Reading
from .casefold import fold, folded
from .freshness import is_companion, is_sidecar, restamp, stem_photos
from .geotag import Placement, Places
from .metadata import (
    DESCRIPTION_FIELDS,
    KEYWORD_FIELDS,
    SIDECAR_RECORD,
    TWINS,
    FileChanged,
    FileState,
    Filled,
    Keywords,
    KeywordWriter,
    MetadataError,
    WritePlan,
    overwritten,
)
from .original import header_digest
from .outcomes import Outcome, Status, record_failure, record_gone
from .overrides import NO_OVERRIDE, Override
from .queue import Delete, HalfMove, Move, Op, overlaps, replaced
from .retry import database_fault, transient_reason
from .store import (
    DECLINED,
    DELETED,
    DONE,
    PENDING,
    REMOVED,
    UNTAGGED,
    USER,
    FileRow,
    Store,
    StoreError,
    Twin,
    inside,
    utf8_name,
)
from .tagger import orphaned_levels
from .wording import held_in, listed, quoted

log = logging.getLogger(__name__)

# A save by another program within this long after tagwatch's write (by the file system's change
# times) that lacks exactly the keywords that write added may have been built from the version before
# it (read before our write landed, renamed over it after): those keywords are written again rather
# than taken for a person's removal.  A person takes longer to see a keyword and take it out.
STALE_SAVE_NS = 10 * 1_000_000_000
# Change times this close are one version: the ledger keeps a withdrawing write's as float seconds
SAME_VERSION_NS = 1_000
# Why keywords of ours missing from a file are no person's doing (see Writeback._removed)
STALE, FOUND = "a save built from the version before our write", "the version found before our first write"
RESTORED = "a change before the database was restored from an older copy"
LOST = "the sidecar that held them is gone"  # see Writeback.sidecar_gone


@dataclass(frozen=True)
class TagRules:
    """What a write needs to know of the tag list in use."""

    mode: str = "append"  # append, sync or overwrite ([tagging] mode)
    threshold: float = 0.0  # for the log line of a photo that got no tag
    paths: Mapping[str, str] = field(default_factory=dict)  # keyword → hierarchical path, every tag
    fingerprint: str = ""  # of the tag list and settings: recorded with the tags
    levels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # tag → levels expansion adds
    own_thresholds: bool = False  # some tag has its own threshold (a rich list): the line says so

    def planned(self, predicted: bool) -> str:
        """The mode a write plans a photo with: overwrite only where something is predicted for it;
        with nothing, it writes as append (overwrite would wipe a person's keywords over a threshold
        typo, or leave a photo its places alone).  The write (:meth:`Writeback.plan_ahead`), a dry run
        (:meth:`Writeback.preview`) and the review page's *Writing into the file* line decide with
        this, so that the page says overwrite takes a person's keyword out only where the write does."""
        return "append" if self.mode == "overwrite" and not predicted else self.mode

    def sweeps(self, predicted: bool) -> bool:
        """Does a write take out what of ours is no longer predicted (keywords, our description)?
        sync always; overwrite where something is predicted (:meth:`planned`); append never.  The
        write, a dry run and the review page decide with this."""
        return self.planned(predicted) != "append"


@dataclass(frozen=True)
class Corrected(Override):
    """A photo's override as applied to its predictions, with those it took out (``took``): a photo
    left with no tag because a correction removed what was predicted is logged so, not as having
    no tag above the threshold.  It travels in :class:`WriteJob`'s ``override``, as any engine
    builds the job from :meth:`tagwatch.pipeline.Pipeline.judge`'s answer."""

    took: tuple[str, ...] = ()


def corrected(override: Override, tags: list[tuple[str, float]]) -> tuple[list[tuple[str, float]], Override]:
    """Predictions → what is written after ``override``, and the override with what it took out."""
    if not override:
        return tags, override
    removing = override.removes()
    took = tuple(k for k, _ in tags if fold(k) in removing)
    return override.apply(tags), Corrected(override.add, override.remove, took) if took else override


@dataclass(frozen=True)
class Copied:
    """What :meth:`Writeback.adopt` found a file new to the store to be: a copy of ``source`` (or moved
    here from it, where no file is there now), holding ``keywords`` tagwatch wrote there.  Said in the
    photo's own tagged line (:func:`tagged_line`), not a line of its own: a copy read as two photos."""

    source: str
    moved: bool
    keywords: tuple[str, ...]

    def said(self) -> str:
        """``a copy of /p/a.jpg (beach, forest, written there by tagwatch, are tagwatch's here too)``."""
        how = "moved here from" if self.moved else "a copy of"
        ours = f"{listed(self.keywords)}, written there by tagwatch, are tagwatch's here too"
        return f"{how} {self.source} ({ours})"


@dataclass
class WriteJob:
    """One file's keywords on their way into it."""

    path: str
    key: bytes | None
    stat: os.stat_result  # the file as it was read: the write is abandoned if it changed since
    tags: list[tuple[str, float]]  # what it should carry (after overrides), best first
    override: Override = NO_OVERRIDE
    owned: list[str] = field(default_factory=list)  # our keywords per the ledger, before this write
    plan: WritePlan | None = None  # None, or no changes: nothing to write into the file
    file_id: int | None = None
    ahead: list[str] = field(default_factory=list)  # ledger rows recorded ahead, withdrawn on failure
    placed: Placement | None = None  # the places stage's decision (places on, the file read)
    filled: dict[str, Filled] = field(default_factory=dict)  # the ledger's filled fields before this write
    held: list[str] = field(default_factory=list)  # owned keywords the file holds (read in step 1)
    unwritten: list[str] = field(default_factory=list)  # owned, absent, never recorded written
    kept_out: list[str] = field(default_factory=list)  # predicted, but a person took them out
    # owned, left in a sidecar another photo shares (it has them too), no longer this photo's
    released: list[str] = field(default_factory=list)
    reading: Reading | None = None  # the caption stage's (captions on): its keywords are in ``tags``
    rescore: bool = False  # a re-score from cached vectors: a photo it leaves as it was is no news
    # the picture as recorded, tagged as now already (its times touched, a save of other metadata):
    # left as it was, no news either (5,836 photos touched were 5,836 "(already in the file)" lines)
    same: bool = False
    found: bytes | None = None  # the metadata digest of the version read, before a first write
    # no ledger row nor filled record before this write: tagwatch's first into the photo, so a sidecar
    # found is no earlier write's of ours (an older version's kept no record of it; see SIDECAR_FILE)
    first: bool = True
    copied: Copied | None = None  # a copy of a photo tagwatch wrote into, its keywords taken up (adopt)

    @property
    def keywords(self) -> list[str]:
        return [k for k, _ in self.tags]

    @property
    def writes(self) -> bool:
        """Does the file itself change?"""
        return self.plan is not None and self.plan.changes


# What :meth:`Writeback.gone` keeps in ``_said`` for a photo found gone while it was read or written
# (and said so): the deletion the watcher reports next is that same news, not a second line
GONE_SAID: tuple[object, ...] = ("gone",)


def adopted(override: Override, held: Iterable[str]) -> list[str]:
    """The keywords of ``held`` (what this write puts in, or what the file holds of ours) that
    ``override`` adds, as the file spells them: an add of "Beach" where tagwatch wrote "beach" is
    that keyword (:meth:`Override.apply`), so it becomes the person's under the file's spelling, or
    it stayed tagwatch's and ``untag`` took it out."""
    adds = folded(override.add)
    return [k for k in dict.fromkeys(held) if fold(k) in adds]


def known_paths(known: Mapping[str, str], keywords: Iterable[str],
                out: Collection[str] = ()) -> dict[str, str]:
    """The hierarchical path of each of ``keywords`` that ``known`` (the tag list's, a caption's) has
    one for, whatever its case: keywords are compared without regard to case everywhere, so an
    override's ``add = ["Blue"]`` is the list's ``blue`` and goes under its path, spelled as the list
    spells it (``colour|blue``: digiKam's tags are case-sensitive, and ``colour/Blue`` would be a
    second tag beside the one the predictions use).  An exact spelling wins over another case; a
    list tag without a parent leaves the keyword flat, as it is spelt.  ``out``: the levels a
    correction rejects (case-folded, :meth:`Override.removes`), which no path names
    (:func:`without_levels`).  The write decides every path with this."""
    wanted = list(dict.fromkeys(keywords))
    found = {k: known[k] for k in wanted if k in known}
    missing = {fold(k) for k in wanted if k not in found}
    if missing:
        by_case = {fold(k): p for k, p in known.items() if fold(k) in missing}
        found |= {k: p if "|" in p else k for k in wanted
                  if k not in found and (p := by_case.get(fold(k))) is not None}
    if not out:
        return found
    return {k: path if (p := without_levels(path, out)) == path else p if "|" in p else k
            for k, path in found.items()}


def without_levels(path: str, out: Collection[str]) -> str:
    """A hierarchical ``path`` without the levels above its keyword that ``out`` (case-folded) names:
    a level a person rejected (``remove = ["colour"]``, the review page's ✕) is in no path of the
    photo, or Lightroom and digiKam, which build flat keywords from ``colour|red``, put it back.  The
    keyword keeps its place under the levels left (``shape|square`` with polygon rejected from
    ``shape|polygon|square``; ``red`` alone with colour rejected).  Unlike a place, whose levels lie
    inside one another (``not England`` is not Sheffield either), a concept is itself without the
    level above it: red is red, whatever colour is."""
    *above, keyword = path.split("|")
    return "|".join([*(level for level in above if fold(level) not in out), keyword])


def carried(keywords: Sequence[str], places: Iterable[str], out: Collection[str]) -> list[str]:
    """The flat keywords a write puts in a photo: ``keywords`` as decided (tags, levels, a caption's,
    after the overrides), then each of its ``places`` that is neither one of them (a tag "paris" and the
    place Paris are one keyword) nor kept out (``out``, case-folded).  The write decides with this, and
    so does the review page's *Writing into the file* line, which said it was taking out every place
    and caption keyword of a photo in sync mode while nothing was written."""
    listed = folded(keywords)
    return [*keywords, *(k for k in places if fold(k) not in listed and fold(k) not in out)]


def adoption(reader: KeywordWriter, job: WriteJob, state: FileState, twins: Sequence[Twin],
             theirs: Collection[str]) -> tuple[list[Twin], dict[str, tuple[str, ...]]]:
    """The recorded files ``job``'s file is a copy of, and the keywords of ours it takes up from them
    → their paths: :meth:`Writeback.adopt`'s rule, which a dry run follows too (it said a library
    moved to a new disk would be tagged again, and the scan left every photo as it was)."""
    sources = [twin for twin in twins
               if twin.size == job.stat.st_size and not reader.absent(state, twin.ledger)]
    return sources, {k: paths for twin in sources for k, paths in twin.ledger.items() if k not in theirs}


def moved_from(path: str, recorded: Sequence[str]) -> str | None:
    """Which of ``recorded`` (the files on record, not as deleted, with the picture of the file new
    to the store at ``path``) that file was moved from: one no longer there, one of the same name
    first, as a move keeps the name.  A library copied to a new disk, the old tree deleted and the
    new one watched in its place: the old folder, no longer watched, never has its files seen gone."""
    gone = [old for old in recorded if not os.path.lexists(old)]
    name = os.path.basename(path)
    return next((old for old in gone if os.path.basename(old) == name), gone[0] if gone else None)


def idle_sidecar(plan: WritePlan, owned: Collection[str]) -> WritePlan:
    """``plan`` without the edits that would create a sidecar where nothing of tagwatch's goes: a
    photo that gets no prediction (or only keywords a person gave it already), with
    ``target = "sidecar"``, would otherwise get a new XMP file holding the person's keywords alone,
    which untag, having nothing of ours to take out of it, would leave beside the photo."""
    if (plan.ours or plan.removed or plan.dropped or plan.respelled or plan.fills_ahead or plan.fills
            or any(k in owned for k in plan.keywords)):
        return plan
    return _no_new_sidecar(plan)


# The ledger's record of the sidecar file itself, beside its fields' (a filled record of no field):
# Filled((), None) where tagwatch's write created it, Filled((), "") where it was there before
# tagwatch's first write into the photo (no ledger row nor filled record yet).  untag and a photo's
# deletion remove a sidecar that holds nothing once tagwatch's keywords are out of it, unless this
# record says it was there before (a file a person or an app made is theirs, empty or not; the record
# outlives untag, so a second untag keeps it too).  A sidecar an older version wrote has no record,
# and gets none from a later write into it (the ledger has rows of that version's writes): emptied,
# it holds nothing of anyone's either, and goes too.
SIDECAR_FILE = SIDECAR_RECORD + "file"
# What exiftool writes into every XMP packet: a sidecar holding nothing else holds nothing of anyone's
_BOILERPLATE = frozenset({"SourceFile", "XMP-x:XMPToolkit"})


def holds_nothing(writer: KeywordWriter, side: Path) -> bool:
    """Does the XMP file ``side`` hold no field at all beyond exiftool's own boilerplate (the toolkit
    that wrote it)?  Anything exiftool warns about or cannot read counts as something."""
    out, _ = writer.exiftool.execute("-j", "-a", "-G1", "-XMP:All", "-ExifTool:Warning", "-ExifTool:Error",
                                     str(side))
    try:
        record = json.loads(out)[0] if out else {}
    except (ValueError, IndexError, TypeError):
        return False
    return bool(record) and set(record) <= _BOILERPLATE


def drop_empty_sidecar(writer: KeywordWriter, side: Path, record: Filled | None) -> bool:
    """Remove ``side`` if it holds nothing (:func:`holds_nothing`) and ``record`` (its
    :data:`SIDECAR_FILE` record) does not say it was there before tagwatch: an empty ``.xmp`` left
    beside every HEIC, PNG and WebP after untag is one stray file per photo, which Syncthing and
    Nextcloud copy to every phone.  A sidecar saved by another program while it was read stays."""
    if record is not None and record.previous is not None:
        return False
    try:
        before = side.lstat()
        if not stat.S_ISREG(before.st_mode) or not holds_nothing(writer, side):
            return False
        now = side.lstat()
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            return False
        side.unlink()
        fsync_folder(side.parent)
    except FileNotFoundError:
        return False
    except (MetadataError, OSError) as exc:  # exiftool killed or silent (a stuck NAS): kept, never lost
        reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror or exc
        log.warning("%s: the empty sidecar not removed: %s", side, reason)
        return False
    return True


def _no_new_sidecar(plan: WritePlan) -> WritePlan:
    """``plan`` without an edit that creates a sidecar (one that did not exist when it was read)."""
    edits = [edit for edit in plan.edits if edit.is_photo or edit.before is not None]
    return plan if len(edits) == len(plan.edits) else replace(plan, edits=edits)


def write_file(writer: KeywordWriter, job: WriteJob) -> os.stat_result:
    """Step 2: apply the job's plan to the file (atomically; :class:`FileChanged` if someone else
    changed it meanwhile) and return the stat of the version written, or, with nothing to write,
    of the version read.  Never a stat taken afterwards: that may be of a version another program
    saved just after our write, which lacks our keywords and must look changed.  Touches no store."""
    if job.writes:
        assert job.plan is not None
        log.debug("%s: writing keywords", job.path)
        return writer.apply(job.plan)
    return job.stat


def new_spellings(removed: Sequence[str], carried: Iterable[str]) -> dict[str, str]:
    """Keywords of ours a write took out → the spelling of them it carries instead (``square`` →
    ``Square``): the tag list re-spelled them, and a re-spelled tag is the same keyword
    (docs/tag-lists.md), so the log names them re-spelled, neither "no longer predicted" nor
    removed (every photo with one read as having lost the tag)."""
    spelled = {fold(k): k for k in carried}
    return {k: spelled[fold(k)] for k in removed if fold(k) in spelled}


def tagged_line(path: str, carried: Sequence[str], places: Sequence[str], kept_out: Sequence[str],
                threshold: float, wrote: bool, removed: Sequence[str] = (), dropped: Sequence[str] = (),
                rewrote: bool = False, theirs: Sequence[str] = (), overridden: Sequence[str] = (),
                withdrawn: Sequence[str] = (), gave_back: Sequence[str] = (), respelled: Sequence[str] = (),
                where: str | Callable[[], str] = "the file", own_thresholds: bool = False,
                new_spelling: Mapping[str, str] | None = None, copied: Copied | None = None) -> str:
    """The log line of a photo whose keywords are decided: its tags (or that none passed) and place,
    what a person took out, what this write took out, and whether anything was written.  A photo
    that got nothing reads so (``checked …: no tag above threshold 0.3; nothing to write``), not as
    tagged with an empty list or with "no tag" said to be already in the file; "(already in the
    file)" follows the keywords it is about, never what a person took out; a sync re-score that only
    took a keyword of ours out says which (``updated …: beach; took out tagwatch's no longer
    predicted: forest``).  ``rewrote``: the file changed though no keyword did (a description or a
    location field taken out or filled, a hierarchical path re-spelled).

    ``theirs``: those of ``carried`` the file held already as a person's (their ``RED`` for our red),
    so not written: where something else was, the line says so (``tagged …: circle; already in the
    file: red``) instead of listing them as written.  ``overridden``: predictions an override took
    out (``checked …: removed by an override: red, circle; nothing to write``), which passed the
    threshold: a photo left without a tag by them has not "no tag above threshold".  ``withdrawn``:
    those of ``removed`` this write took out because an override removes them (a rejection on the
    review page), which are still predicted: not "no longer predicted".  ``gave_back``: filled
    fields whose value of ours the write took out (:func:`given_back`), named instead of "fields
    brought up to date"; so are ``respelled``, keywords whose hierarchical path the write changed (a
    parent or ``[places] root`` edit: 243 photos read "fields brought up to date" of that).

    ``new_spelling``: those of ``removed`` this write took out for their new spelling
    (:func:`new_spellings`), named as re-spelled (``re-spelled: square → Square``).

    ``own_thresholds``: some tag of the list has a threshold of its own, so "no tag above threshold
    0.36" would be untrue of it: the line says "its threshold" and names both.

    ``copied``: the photo is a copy of one tagwatch wrote into, whose keywords it took up
    (:meth:`Writeback.adopt`): said after the path (``checked COPY, a copy of ORIGINAL (beach,
    written there by tagwatch, are tagwatch's here too): beach (already in the file)``), one line.

    ``where``: where the keywords are (:func:`~tagwatch.wording.held_in`): a HEIC's are "already in
    its sidecar", not "in the file"; a callable is asked only where the line says it (finding a
    shared sidecar's other photos lists the folder).  A photo nothing was written into is
    "checked", never "tagged": ``scan`` counts it unchanged, and the line must not say otherwise; one
    rewritten only to take keywords or fields out is "updated" (``updated …: green; took out, as a
    correction asks: star``), counted as written."""
    written = wrote or bool(removed or dropped)
    shown = [k for k in carried if k not in theirs] if written else list(carried)
    below = (f"its threshold ({threshold}, or the tag's own in the tag list)" if own_thresholds
             else f"threshold {threshold}")
    head = [listed(shown)] if shown else [] if kept_out or overridden or (written and theirs) else [
        f"no tag above {below}"]
    if places:
        head.append(f"place: {listed(places)}")
    if written and len(shown) < len(carried):
        head.append(f"already in {_said(where)}: {listed(k for k in carried if k in theirs)}")
    tail = [f"left out, as a person took them out: {listed(kept_out)}"] if kept_out else []
    if overridden:
        tail.append(f"removed by an override: {listed(overridden)}")
    if withdrawn:
        tail.append(f"took out, as a correction asks: {listed(withdrawn)}")
    new_spelling = new_spelling or {}
    if new_spelling:
        tail.append("re-spelled: " + ", ".join(f"{quoted(old)} → {quoted(new)}"
                                               for old, new in new_spelling.items()))
    unpredicted = [k for k in removed if k not in withdrawn and k not in new_spelling]
    if unpredicted:
        tail.append(f"took out tagwatch's no longer predicted: {listed(unpredicted)}")
    if dropped:
        tail.append(f"took out, as overwrite mode does: {listed(dropped)}")
    if gave_back:
        tail.append(f"took out tagwatch's {listed(gave_back)}")
    if wrote or (rewrote and (carried or places) and not (removed or dropped)):
        verb = "tagged"
    else:  # the file rewritten only to take something out is "updated", as scan counts it (not unchanged)
        verb = "updated" if removed or dropped or gave_back or rewrote else "checked"
    if not (wrote or removed or dropped):
        updated = rewrote and not gave_back  # what changed is named, or it is "fields brought up to date"
        what = (f"re-filed under their new paths: {listed(respelled)}" if respelled
                else "fields brought up to date")
        if carried or places:
            held = _said(where)
            head[-1] += f" (already in {held}; {what})" if updated else f" (already in {held})"
        elif not gave_back:
            tail.append(what if rewrote else "nothing to write")
    of = f", {copied.said()}" if copied is not None else ""
    return f"{verb} {path}{of}: {'; '.join(head + tail)}"


def _said(where: str | Callable[[], str]) -> str:
    """:func:`tagged_line`'s ``where``, asked for only by a line that says it."""
    return where() if callable(where) else where


def given_back(plan: WritePlan, filled: Mapping[str, Filled]) -> list[str]:
    """The filled fields of ours (``filled``, the ledger's records) that ``plan`` takes our value out
    of, named for a log line (``description 'a red circle'``, ``City 'Florence'``), each pair of
    twins once: an untag, or captions turned off in sync mode, that took out only a description
    said "removed nothing" or "fields brought up to date"."""
    gave = {name: filled[name].ours[-1] for edit in plan.edits for name, value in edit.fields.items()
            if name in filled and filled[name].ours and value == filled[name].previous}
    shown = [n for n in gave if not (n.startswith("IPTC:") and TWINS.get(n) in gave)]  # XMP of twins
    return [f"{'description' if n in DESCRIPTION_FIELDS else n.split(':')[-1]} {gave[n]!r}" for n in shown]


def _rewrote(job: WriteJob, now: os.stat_result) -> bool:
    """Did the write change a file?  A sidecar edit did; a photo's write may find nothing to change
    after all (a block exiftool cannot write, the other already complete), and the photo is then
    the version read (see metadata's byte-for-byte check)."""
    if not job.writes:
        return False
    assert job.plan is not None
    read = job.stat
    return (any(not edit.is_photo for edit in job.plan.edits)
            or (read.st_ino, read.st_mtime_ns, read.st_size) != (now.st_ino, now.st_mtime_ns, now.st_size))


class Writeback:
    """The store's side of writing keywords: plan and record ahead, record done or failed."""

    def __init__(self, store: Store, writer: KeywordWriter | None, places: Places | None = None,
                 captions: Captions | None = None, reader: KeywordWriter | None = None) -> None:
        self.store, self.writer = store, writer
        self.reader = reader or writer  # reads a file's metadata; a dry run's never writes
        self.places = places if places is not None and places.enabled else None
        self.captions = captions  # None: [captions] off
        # `scan --take-over LIST`: keywords of that list (folded) the photos hold, written by another
        # tagger (rtag), become tagwatch's (see claim)
        self.take_over: frozenset[str] = frozenset()
        # the daemon's watched folders: a file gone from one is seen gone there (see retire_moved)
        self.watched: tuple[str, ...] = ()  # the daemon's folders: a file gone there is the watcher's
        # why a photo's missing keywords are no person's removal, as said at its try (see _once): a
        # photo that waits out a backup's lock is tried again and again, and said it at every try.
        # Kept until its outcome is recorded, or the photo is deleted or renamed (_forget_said)
        self._said: dict[str, tuple[object, ...]] = {}
        self.use_prefix()

    def use_prefix(self, prefix: str | None = None) -> None:
        """Spell hierarchical paths under ``prefix`` (None: as the writer was configured) and find
        tagwatch's own under every prefix the store recorded it writing under: the one place that
        tells the writer (and a dry run's reader) which paths of the ledger's keywords are ours.  The
        prefix in use is recorded now, where the database can be written, and in any case ahead of
        each write (:meth:`plan_ahead`), so that a later change of ``[write] hierarchy_prefix``
        still finds the paths written under it."""
        writers = [w for w in dict.fromkeys((self.writer, self.reader)) if w is not None]
        if not writers:
            return
        prefix = writers[0].forms.prefix if prefix is None else prefix
        recorded = self.store.prefixes()
        if self.writer is not None and prefix not in recorded:
            try:
                self.store.record_prefix(prefix)
            except (sqlite3.Error, StoreError) as exc:  # a locked or read-only database: at the first write
                log.debug("hierarchy prefix %r not recorded yet: %s", prefix, exc)
        for writer in writers:
            writer.use_prefix(prefix, recorded)

    # -- the write protocol ---------------------------------------------------------------------

    def preview(self, job: WriteJob, rules: TagRules) -> Outcome:
        """A dry run's outcome: the keywords decided, with the places the photo's GPS gives (read
        here, as step 1 reads it), so that it shows what a scan would write; nothing is recorded.
        Keywords a person took out of this photo are left out, as the write leaves them out: those
        recorded as declined, and those taken out since, found as the scan finds them (a dry run
        listed them as written, and the scan after it left them out).  Our keywords in the file that
        the scan would take out (sync mode's no longer predicted, a correction's remove) are named:
        a dry run with a stricter threshold called such a photo unchanged, and the scan after it
        took four keywords out.  So are the person's keywords overwrite mode would take out: a dry
        run of ``--mode overwrite`` called a photo unchanged whose own keywords the scan deleted.
        Not those it keeps in a sidecar it shares with another photo, nor overwrite's where the scan
        writes that sidecar as sync (:meth:`kept_beside`): a dry run named the person's keywords of a
        JPEG beside its RAW, which the scan kept.
        A photo new to the store takes up the keywords of ours of the file it is a copy of, as the
        scan does (:meth:`adopt`): after a library was moved to a new disk, a dry run said every
        photo would be tagged again, and the scan then left each one as it was.  A photo with
        keywords to get is read even where nothing else asks for it (places off): one that holds
        them all, as a person's, was "tagged" in the dry run and "(already in the file)" in the scan."""
        row = self.store.file(job.path)
        mine = row is not None and row.key == job.key
        taken: list[str] = []
        state: FileState | None = None
        owned = self.store.ledger(row.id) if mine and row is not None else []
        twins, theirs = (self.store.same_picture(job.key, job.path) if not mine and job.key is not None
                         else ([], set()))
        # read as the scan reads it wherever it may hold what it would get (a person's same words)
        if self.reader is not None and (owned or twins or job.keywords or self.places is not None
                                        or self.take_over):
            try:
                state = self.reader.inspect(Path(job.path), job.stat,
                                            shared.apart(self.reader, self.store, job.path))
            except (MetadataError, OSError) as exc:
                log.warning("%s: %s: %s", job.path, "place not looked up" if self.places else "not read", exc)
        declined_there: set[str] = set()  # what a person took out of the file this one is a copy of
        sources, adopted = (adoption(self.reader, job, state, twins, theirs)
                            if state is not None and twins and self.reader is not None else ([], {}))
        if adopted:  # as adopt records them
            owned, declined_there = list(adopted), self._declined_in(sources)
        if state is not None:  # what --take-over would make tagwatch's: ours from here on
            owned = [*owned, *self._claimable(replace(job, owned=owned), state, row if mine else None)]
        absent: list[str] = []  # ours the file no longer holds: nothing of them to take out
        if state is not None and owned and mine and row is not None:  # taken out since: the scan records it
            seen = replace(job, owned=owned)
            found, unwritten, why = self._removed(seen, row, state, self.store.ledger_paths(row.id),
                                                  self.reader)
            taken = [] if why else found
            absent = found + unwritten
        # the other photos sharing its sidecar, as plan_ahead reads them: a keyword a person took out
        # of that sidecar is out for this photo too (a dry run listed it to be written)
        others = (shared.mates(self.reader, self.store, job.path)
                  if state is not None and not state.apart and self.reader is not None else shared.NO_MATES)
        declined_all = ([*self.store.ledger(row.id, DECLINED), *taken] if mine and row is not None
                        else list(declined_there)) + list(others.declined)
        keywords, left_out, _ = self.left_out(job, declined_all, state, self.reader, rules)
        declined = folded(left_out)
        job = replace(job, tags=[(k, s) for k, s in job.tags if k in keywords])
        # the mode, as plan_ahead decides it: on what is left once the person's removals are out
        mode = rules.planned(bool(keywords))
        took = list(job.override.took) if isinstance(job.override, Corrected) else []
        places: list[str] = []
        removes = job.override.removes()
        if self.places is not None and state is not None and self.reader is not None:
            placed = self.places.decide(job.path, None, state.photo.gps,
                                        self.reader.sidecar_gps(Path(job.path), state.sidecar), removes)
            left_out = folded(job.keywords) | declined  # a tag's spelling, or taken out
            places = [k for k in placed.keywords if fold(k) not in left_out]
            removes |= folded(placed.rejected)  # a place level below one a correction removes
        wanted = (*job.keywords, *places)
        # the sidecar it shares, as plan_ahead decides: the other photos' keywords there stay (written
        # as they are by a photo written through its sidecar alone), and overwrite may work as sync
        stays: list[str] = []
        if others and state is not None and self.reader is not None:
            stays, mode, _ = self.kept_beside(self.reader, job.path, state, others, wanted, mode)
        # ours the scan takes out, as plan_ahead decides: sync (and overwrite with a prediction) every
        # one no longer predicted, any mode those a correction removes
        kept, sweeps = folded([*wanted, *stays]), rules.sweeps(bool(keywords))
        leaving = [o for o in owned if state is not None and o not in absent and fold(o) not in kept
                   and (sweeps or fold(o) in removes)]
        took += [o for o in leaving if fold(o) in removes and fold(o) not in folded(took)]
        dropping = [o for o in leaving if fold(o) not in removes]
        # overwrite: the file's keywords neither predicted nor ours go (KeywordWriter.plan's dropped)
        in_file = state.photo.all | state.sidecar.all if mode == "overwrite" and state is not None else set()
        overwriting = overwritten(in_file, [*wanted, *stays], owned)
        # every keyword in the file already (the person's, or ours): the scan would count it unchanged
        held = folded(state.photo.all | state.sidecar.all) if state is not None else set()
        # (a place may fill location fields too: a photo with one counts as written, as it may be)
        writes = bool(leaving or overwriting or places) or any(fold(k) not in held for k in wanted)
        # the sidecar holding ours deleted: a JPEG with target "both" still has them in itself, and
        # the scan writes a new sidecar all the same
        writes = writes or bool(wanted and owned and mine and state is not None and self.reader is not None
                                and self._sidecar_gone(job.path, state, self.reader))
        # a read-only photo with nothing to write is no failure: the scan checks it and goes on
        refused = self._refused(job) if writes else None
        there = bool(wanted) and not writes
        return Outcome(job.path, Status.UNCHANGED if there else Status.TAGGED, job.tags, error=refused,
                       overridden=took, places=places, dropping=dropping, overwriting=overwriting,
                       where=self.where_keywords(job.path) if there else "the file")

    @staticmethod
    def left_out(job: WriteJob, declined: Iterable[str], state: FileState | None,
                 reader: KeywordWriter | None, rules: TagRules) -> tuple[list[str], list[str], set[str]]:
        """The keywords a person took out that this photo's write leaves out, decided once for the
        write (:meth:`plan_ahead`) and a dry run (:meth:`preview`): those ``declined`` unless a
        correction adds them back, and only while the file lacks them (one a person put back is
        theirs).  Returns (the keywords left to write, those left out, the levels they alone
        implied, which go with them).  The mode (:meth:`TagRules.planned`) is decided on what is
        left: a dry run that decided it on the predictions before this said overwrite would take a
        person's keyword out of a photo whose every prediction they had taken out, which the scan,
        with nothing to write, left alone."""
        kept = job.override.kept_out(declined)
        gone = {k: () for k in declined if fold(k) in kept}
        left_out = (reader.absent(state, gone) if state is not None and reader is not None
                    else list(gone))
        out = folded(left_out)  # "Star" from a re-spelled tag is their "star"
        orphans: set[str] = set()
        if out and rules.levels:  # taken out: the levels it alone implied go with it
            orphans = orphaned_levels(job.tags, out, rules.levels) - set(job.override.add)
        keywords = [k for k in job.keywords if fold(k) not in out and k not in orphans]
        return keywords, left_out, orphans

    def _refused(self, job: WriteJob) -> str | None:
        """Why the scan would refuse this photo (hard links, read-only), for a dry run to say."""
        return None if self.reader is None else self.reader.refuses(Path(job.path), job.stat)

    def plan_ahead(self, job: WriteJob, rules: TagRules) -> None:
        """Step 1: read the file's metadata, add its places and its description, plan the write and,
        if it changes the file, record the ledger ahead of it.  Raises :class:`MetadataError` or
        :class:`OSError` from the read (:class:`FileChanged` if the file is no longer ``job.stat``)."""
        override = job.override
        keywords = job.keywords
        row = self.store.file(job.path)
        # the sidecar is the path's: one an earlier write of ours made stays ours, whatever the picture
        job.first = row is None or not (self.store.ledger(row.id) or self.store.ledger(row.id, REMOVED)
                                        or self.store.filled(row.id))
        # The ledger belongs to the path and the picture it held: a photo renamed or saved over a
        # tagged one inherits none of it (recording the new key forgets it; see Store.record_file)
        if row is not None and row.key is not None and job.key is not None and row.key != job.key:
            row = None
        job.same = (row is not None and row.state == DONE and row.key == job.key
                    and set(row.tags or ()) == set(keywords))
        owned = job.owned = self.store.ledger(row.id) if row is not None else []
        owned_paths: Mapping[str, Sequence[str]] = self.store.ledger_paths(row.id) if row is not None else {}
        # A file new to the store may be a copy of one tagwatch wrote into (see adopt), or one moved
        # here from a path where its record is left (see retire_moved)
        twins, theirs = (self.store.same_picture(job.key, job.path) if row is None and job.key is not None
                         else ([], set()))
        moved = self.retire_moved(job) if row is None else None
        # Without a prediction there is something to do only to our own keywords: sync drops them,
        # an override withdraws one, a parent edit moves one.  Overwrite with nothing predicted would
        # wipe a person's keywords over a threshold typo.
        withdrawn, withdrawn_ns = self.store.last_withdrawn(row.id) if row is not None else ({}, None)
        list_paths = known_paths(rules.paths, owned, override.removes())
        ours_to_fix = (owned or withdrawn) and rules.mode != "overwrite" and (
            rules.mode == "sync" or any(fold(k) in override.removes() for k in [*owned, *withdrawn])
            or any(owned_paths.get(k, (k,)) != (p,) for k, p in list_paths.items()))
        # paths of ours may be under a hierarchy prefix of before: moved to the one in use
        ours_to_fix = ours_to_fix or bool(owned and self.writer is not None and self.writer.forms.former)
        if self.writer is None or not (keywords or ours_to_fix or twins or self.take_over
                                       or self.places is not None or self.captions is not None
                                       or (  # [captions] off: see below
                                           rules.mode == "sync" and row is not None
                                           and bool(Captions.left_over(self.store.filled(row.id))))):
            return
        state = self.writer.inspect(Path(job.path), job.stat, shared.apart(self.writer, self.store, job.path))
        if (row is None or row.found is None) and self.writer.embeds(Path(job.path)):
            job.found = header_digest(Path(job.path))  # before our first write: see original.py
        if twins:
            owned_paths = self.adopt(job, state, twins, theirs, moved)
        self.claim(job, state, row)
        declined = (self.taken_out(job, row, state, owned_paths) if row is not None
                    else set(self.store.ledger(job.file_id, DECLINED)) if job.file_id is not None else set())
        others = shared.NO_MATES if state.apart else shared.mates(self.writer, self.store, job.path)
        declined |= others.declined  # taken out of the sidecar they share: out for both photos
        # after taken_out, whose "save built from before our write" test reads the ledger as that write
        # left it (a reclaim first made a tag the same write swapped in look like a person's removal)
        back = {k: p for k, p in withdrawn.items() if k not in others.held}  # the mates' stay in the sidecar
        if row is not None and withdrawn_ns is not None and back and self.reclaim(job, row, state, back,
                                                                                  withdrawn_ns):
            owned_paths = self.store.ledger_paths(row.id)
        owned = job.owned
        # A keyword a person took out stays out, unless they put it back (theirs then) or an override
        # of theirs asks for it
        keywords, left_out, orphans = self.left_out(job, declined, state, self.writer, rules)
        job.tags = [(k, s) for k, s in job.tags if k not in orphans]
        out = folded(left_out)
        # the mode, decided once on what is left to write: overwrite only where something is
        mode = rules.planned(bool(keywords))
        # a correction removes ours in whatever case we wrote it ("Star" for its remove = ["star"])
        removing = override.removes()
        writing, withdraw = keywords, [*override.remove, *(o for o in owned if fold(o) in removing)]
        known = rules.paths
        if self.captions is not None:  # a caption's keywords under their prefix; a list tag's path wins
            known = {**self.captions.paths(job.reading), **rules.paths}
        paths = known_paths(known, (*keywords, *owned), removing)
        fill: dict[str, str | None] = {}
        if self.places is not None:  # places come from the metadata just read, never from pixels
            placed = job.placed = self.places.decide(job.path, row.id if row else None, state.photo.gps,
                                                     self.writer.sidecar_gps(Path(job.path), state.sidecar),
                                                     removing)
            listed = {fold(k): k for k in keywords}  # a tag "paris" and the place Paris: one keyword
            writing = carried(keywords, placed.keywords, out)
            # ... written flat once, under the place's path, which stays whole (places|France|…|Paris)
            paths |= {listed.get(fold(k), k): p for k, p in placed.keywords.items()}
            withdraw += [k for k in placed.withdraw if k not in keywords]
            fill, job.filled = placed.fill, placed.filled
        # Named as left out: what this photo would carry, not every keyword ever taken out of it or
        # of the sidecar it shares (the RAW's "blue" was named for its red JPEG)
        would = folded([*job.keywords, *(job.placed.keywords if job.placed is not None else ())])
        job.kept_out = [k for k in left_out if fold(k) in would]
        # our description goes where our caption keywords no longer predicted go: out in sync (and
        # overwrite with a prediction), kept in append
        sweep = rules.sweeps(bool(keywords))
        if self.captions is not None:  # the caption as the description, where the photo has none
            records = self.store.filled(row.id) if row is not None else {}
            more, ours = self.captions.describe(job.reading, state, records, sweep)
            fill, job.filled = {**fill, **more}, {**job.filled, **ours}
        elif sweep and row is not None:  # [captions] off: our description out, as our caption keywords
            job.filled = {**job.filled, **Captions.left_over(self.store.filled(row.id))}
        file_id = row.id if row is not None else job.file_id  # a copy's: recorded by adopt
        if file_id is not None:  # the keyword fields tagwatch created or overwrote: what untag gives back
            records = self.store.filled(file_id)
            job.filled = {**job.filled, **{name: Filled(*records[name]) for name in KEYWORD_FIELDS
                                           if name in records}}
        # (places alone never overwrite: with nothing predicted, overwrite would make a photo's keywords
        # its place and nothing else, the threshold-typo case above)
        side_keep: list[str] = []
        if others:
            owned_paths = {**owned_paths, **self.share(job, state, others, keywords)}
            owned, writing, mode, side_keep = self._beside(job, state, others, writing, withdraw, mode)
        # A keyword a correction adds is the person's, but the path it went under is the list's: it
        # follows a parent edit as ours do (planned as ours while the correction asks for it; its
        # flat form stays whatever happens), or the old parent stayed in every keyword tree
        users: dict[str, tuple[str, ...]] = {}
        if row is not None:
            written = self.store.ledger_paths(row.id, USER)
            users = {k: written.get(k, (k,)) for k in self.store.ledger(row.id, USER)
                     if fold(k) in folded(override.add) and k not in owned}
        owned_paths = {**owned_paths, **users}
        # the person's keywords earlier overwrites took out: an older build's left no field record
        taken = self.store.ledger(file_id, REMOVED) if file_id is not None and mode == "overwrite" else []
        plan = job.plan = idle_sidecar(self.writer.plan(
            Path(job.path), writing, before=job.stat, mode=mode, owned=[*owned, *users],
            owned_paths=owned_paths, paths=paths, withdraw=withdraw, state=state, fill=fill,
            filled=job.filled, taken=taken, side_keep=side_keep), owned)
        if not plan.changes:
            return
        mine = [k for k in plan.ours if fold(k) not in folded(override.add)]  # an override's are the user's
        # Pending until recorded done, ledger written ahead: a crash mid-write leaves the file to the
        # next scan and never makes tagwatch forget a keyword it put in (nor, for a keyword whose
        # parent changed, the path it was written under before).
        log.debug("%s: recording its keywords ahead of the write", job.path)
        st = job.stat
        with self.store.transaction():
            job.file_id = self.store.record_file(job.path, key=job.key, size=st.st_size,
                                                 mtime_ns=st.st_mtime_ns, state=PENDING)
            self.store.record_prefix(self.writer.forms.prefix)  # the paths this write spells are ours
            self.store.add_ledger(job.file_id, mine, paths=plan.paths)
            self.store.add_ledger(job.file_id, plan.dropped, REMOVED)
            self.store.set_ledger_paths(job.file_id, {
                k: (*owned_paths.get(k, (k,)), *plan.paths[k]) for k in plan.respelled})
            self.store.set_filled(job.file_id, plan.fills_ahead)
        job.ahead = mine + plan.dropped

    def share(self, job: WriteJob, state: FileState, others: shared.Mates,
              keywords: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Keywords predicted for this photo that are in the sidecar it shares because another photo
        has them from tagwatch are this photo's too, not the person's: recorded in its ledger at once
        (they are in the file), so that the other photo's untag leaves them.  Returns them → paths."""
        assert self.writer is not None
        found = {k: others.held[k] for k in keywords if k in others.held and k not in job.owned
                 and not self.writer.absent(state, {k: others.held[k]})}
        if not found:
            return {}
        st = job.stat
        with self.store.transaction():
            file_id = self.store.record_file(job.path, key=job.key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                             state=PENDING)
            self.store.add_ledger(file_id, list(found), paths={k: p for k, p in found.items() if p})
            self.store.confirm_ledger(file_id, found)
        job.owned, job.held = [*job.owned, *found], [*job.held, *found]
        return found

    def _beside(self, job: WriteJob, state: FileState, others: shared.Mates, writing: list[str],
                withdraw: Sequence[str], mode: str) -> tuple[list[str], list[str], str, list[str]]:
        """What this photo's write leaves in the sidecar it shares: the keywords the other photos
        have there from tagwatch stay, whatever the mode (sync, overwrite, a correction's remove).
        Returns (owned, writing, mode, side_keep) for the plan.  A photo written through its sidecar
        only keeps them by writing them as they are (neither ours nor the person's for this photo)
        and lets go of those it no longer wants; a photo that embeds keywords too (a JPEG with target
        both, or one that wrote the sidecar under an earlier target) takes them out of its own
        fields as any photo does and leaves them in the sidecar alone (``side_keep``); its
        overwrite, which would set its sidecar to its own keywords alone, works as sync (both
        decided by :meth:`kept_beside`, as a dry run decides them)."""
        assert self.writer is not None
        rewrite, planned, side_keep = self.kept_beside(self.writer, job.path, state, others, writing, mode)
        if rewrite:
            job.released = [o for o in job.owned if o in rewrite and (mode != "append" or o in withdraw)]
            return job.owned, [*writing, *rewrite], mode, []
        if planned != mode:
            log.info("%s: written as in sync mode, not overwrite: its sidecar %s holds the keywords of %s "
                     "too", job.path, self.writer.sidecar_for(Path(job.path)).name, ", ".join(others.paths))
        return job.owned, writing, planned, side_keep

    @staticmethod
    def kept_beside(reader: KeywordWriter, path: str, state: FileState, others: shared.Mates,
                    writing: Sequence[str], mode: str) -> tuple[list[str], str, list[str]]:
        """How a photo's write keeps, in the sidecar it shares, the keywords the other photos have
        there from tagwatch (``others``; ``writing``: this photo's, ``mode``: as planned so far),
        decided once for the write (:meth:`_beside`) and a dry run (:meth:`preview`).  Returns (those
        it writes as they are, the mode, those it leaves in the sidecar alone): a photo written
        through its sidecar only rewrites them; one that embeds its keywords too leaves them, and its
        overwrite works as sync.  The dry run decided overwrite on its own and named the person's
        keywords the scan, writing as sync, kept."""
        keep = [k for k, paths in others.held.items()
                if k not in writing and not reader.absent(state, {k: paths})]
        if not keep:
            return [], mode, []
        if not reader.embeds(Path(path)):
            return keep, mode, []
        return [], "sync" if mode == "overwrite" else mode, keep

    def adopt(self, job: WriteJob, state: FileState, twins: Sequence[Twin], theirs: set[str],
              moved: str | None = None) -> dict[str, tuple[str, ...]]:
        """A file new to the store that holds the picture of files tagwatch wrote into may be a copy of
        one (``cp``, a move across disks or a file manager's copy-then-delete, a move out of the
        watched folders and back): the keywords of ours such a file's ledger lists are then ours in
        the copy too, so that untag takes them out of it and sync can drop them, and so is what that
        ledger knows of the file's keyword fields (what overwrite took out, the fields tagwatch
        created or overwrote), so that untag gives the copy back as the original was.  A copy is what
        has the size of that file's version tagwatch last recorded and holds every one of those
        keywords: a duplicate a person tagged, or a copy whose keywords they edited since, or one made
        before our write, holds the person's, and a keyword taken for ours would be taken out by
        untag.  Never a keyword any file of that picture records as a person's (``theirs``).
        Recorded at once, as written: they are in the file already.  ``moved``: the path the file
        was moved from (:meth:`retire_moved`), whose record it takes up first.  Returns the keywords
        adopted → their paths."""
        assert self.writer is not None
        sources, adopted = adoption(self.writer, job, state, twins, theirs)
        if not adopted:
            return {}
        sources.sort(key=lambda twin: twin.path != moved)  # stable: otherwise as same_picture has them
        st = job.stat
        records = self.store.filled(sources[0].id)
        with self.store.transaction():
            job.file_id = self.store.record_file(job.path, key=job.key, size=st.st_size,
                                                 mtime_ns=st.st_mtime_ns, state=PENDING)
            self.store.add_ledger(job.file_id, list(adopted), paths=adopted)
            self.store.confirm_ledger(job.file_id, adopted)
            self.store.add_ledger(job.file_id, self.store.ledger(sources[0].id, REMOVED), REMOVED)
            # a keyword a person took out of the original stays out of its copy
            self.store.add_ledger(job.file_id, sorted(self._declined_in(sources)), DECLINED)
            self.store.set_filled(job.file_id, {name: record for name, record in records.items()
                                                if name in KEYWORD_FIELDS})
            if not os.path.lexists(sources[0].path):  # renamed (its correction followed it: judge)
                # the keywords that correction added stay recorded the person's, as a live rename's
                # (Store.move): else its deletion leaves them in its sidecar (release)
                adds = folded(job.override.add)
                users = [k for k in self.store.ledger(sources[0].id, USER) if fold(k) in adds]
                self.store.add_ledger(job.file_id, users, USER,
                                      paths=self.store.ledger_paths(sources[0].id, USER))
        job.owned = job.held = list(adopted)
        # a copy has its original beside it; a file manager's move across disks does not.  Said in
        # the photo's tagged line (record_done), or where it fails (failed)
        job.copied = Copied(sources[0].path, not os.path.lexists(sources[0].path), tuple(adopted))
        return adopted

    def _declined_in(self, sources: Iterable[Twin]) -> set[str]:
        """The keywords a person took out of any of ``sources``: out of their copy too."""
        return {k for twin in sources for k in self.store.ledger(twin.id, DECLINED)}

    def retire_moved(self, job: WriteJob) -> str | None:
        """A file new to the store whose picture is on record at a path where no file is now was
        moved from there (:func:`moved_from`): that record goes, as a deleted photo's does (its
        ledger kept, for :meth:`adopt` and other copies).  Left, it stayed for good where its folder
        is no longer watched (nothing ever saw it gone): ``status`` counted a library moved to a new
        disk twice, and every ``export`` listed each old path as "no such file".  Not so in a folder
        the daemon watches: the watcher sees the file gone there, and an unmounted drive's records
        are kept until it is back.  A passing fault that kept our keywords in its sidecar keeps it
        recorded, as for a deletion (:meth:`release`).  Returns the path it was moved from."""
        if job.key is None:
            return None
        recorded = self.store.paths_of_picture(job.key, job.path, deleted=False)
        old = moved_from(job.path, [path for path in recorded if not inside(path, self.watched)])
        released = self._leave(old) if old is not None else None
        if old is not None and released is not None and self.store.mark_deleted(old):
            log.log(logging.INFO if released else logging.DEBUG, "%s: gone, moved to %s: its record goes%s",
                    old, job.path, released, extra={"event": "deleted", "path": old})
        return old

    def _claimable(self, job: WriteJob, state: FileState, row: FileRow | None) -> list[str]:
        """The keywords ``--take-over`` makes tagwatch's in this photo: those of its list the photo
        or its sidecar holds, not ours already, and not a person's word to tagwatch (a correction's,
        one a person took out or overwrite took out: recorded in the ledger)."""
        if not self.take_over:
            return []
        words = set(job.owned) | {k for k in job.override.add}
        if row is not None:
            words |= {k for action in (DECLINED, USER, REMOVED) for k in self.store.ledger(row.id, action)}
        theirs = folded(words)
        return sorted(k for k in state.photo.all | state.sidecar.all
                      if fold(k) in self.take_over and fold(k) not in theirs)

    def claim(self, job: WriteJob, state: FileState, row: FileRow | None) -> None:
        """``scan --take-over LIST``: a library another tagger wrote keywords into (rtag) hands them
        over: those of the list the photo holds are recorded tagwatch's, as if tagwatch had written
        them, so that sync takes out the ones it no longer predicts and untag takes them all out.
        Without it they are the person's, whom tagwatch never overrules.  Recorded at once: they
        are in the file already."""
        claimed = self._claimable(job, state, row)
        if not claimed:
            return
        st = job.stat
        with self.store.transaction():
            file_id = row.id if row is not None else self.store.record_file(
                job.path, key=job.key, size=st.st_size, mtime_ns=st.st_mtime_ns, state=PENDING)
            self.store.add_ledger(file_id, claimed)
            self.store.confirm_ledger(file_id, claimed)
        job.file_id = file_id
        job.owned, job.held = [*job.owned, *claimed], [*job.held, *claimed]
        log.info("%s: taken over, tagwatch's from now on: %s", job.path, listed(claimed),
                 extra={"event": "taken-over", "path": job.path, "keywords": claimed})

    def reclaim(self, job: WriteJob, row: FileRow, state: FileState, withdrawn: Mapping[str, Sequence[str]],
                withdrawn_ns: int) -> bool:
        """Keywords of ours that tagwatch's latest withdrawing write took out (sync: no longer
        predicted; a correction) and a save made within :data:`STALE_SAVE_NS` after it puts back, all
        of them: that save was built from the version before the write (an editor that read the
        sidecar just before), so they are ours again, and what took them out takes them out again.
        They were taken for a person's, which sync and untag never take out."""
        assert self.writer is not None
        changed = self._changed_ns(job.path, state)
        # later by more than the ledger's float seconds can blur (~250 ns): a save, not that write itself
        later = changed - withdrawn_ns
        if not SAME_VERSION_NS < later <= STALE_SAVE_NS or self.writer.absent(state, withdrawn):
            return False
        back = list(withdrawn)
        self.store.reclaim(row.id, back)
        job.owned = [*job.owned, *back]
        log.info("%s: saved by another program %.1f s after tagwatch took %s out of it, with them back: "
                 "built from the version before, so they are tagwatch's again", job.path,
                 later / 1e9, listed(back),
                 extra={"event": "stale-save", "path": job.path, "keywords": back})
        return True

    def taken_out(self, job: WriteJob, row: FileRow, state: FileState,
                  owned_paths: Mapping[str, Sequence[str]]) -> set[str]:
        """The keywords a person took out of this photo: those recorded before, and those of ours a
        recorded write put in that the file (``state``, just read) now holds in no keyword field,
        under no spelling we wrote.  These are recorded in the ledger as declined, and are no longer
        ours (``job.owned`` loses them): tagwatch never writes them into this photo again, and sync
        and untag leave them alone.

        Not taken for a person's removal: a keyword recorded ahead of a write never recorded done
        (a crash may have stopped the write; it is written again if still predicted, else
        forgotten), and a save that looks built from the version before our last write (see
        :data:`STALE_SAVE_NS`), whose keywords are written again."""
        declined = set(self.store.ledger(row.id, DECLINED))
        if not job.owned:
            return declined
        assert self.writer is not None
        taken, unwritten, why = self._removed(job, row, state, owned_paths, self.writer)
        job.held = [o for o in job.owned if o not in taken and o not in unwritten]
        job.unwritten = unwritten
        if not taken:
            return declined
        changed = self._changed_ns(job.path, state)
        level = self._once(job.path, (why, tuple(taken), changed))
        if why == STALE:
            assert row.written_ns is not None
            log.log(level, "%s: saved by another program %.1f s after tagwatch wrote it, without the "
                    "keywords that write added (%s): built from the version before it, so they are "
                    "written again", job.path, (changed - row.written_ns) / 1e9, listed(taken),
                    extra={"event": "stale-save", "path": job.path, "keywords": taken})
        elif why == FOUND:
            log.log(level, "%s: the version tagwatch found before its first write, again (sent again or "
                    "restored): nobody took %s out of it, so they are written again", job.path,
                    listed(taken), extra={"event": "sent-again", "path": job.path, "keywords": taken})
        elif why == RESTORED:
            log.log(level, "%s: changed before tagwatch found its database restored from an older copy, "
                    "which does not know what took %s out of it (tagwatch's own sync or correction, "
                    "maybe): not taken for a person's removal, so written again where still predicted",
                    job.path, listed(taken),
                    extra={"event": "restored", "path": job.path, "keywords": taken})
        if why is not None:
            job.unwritten += taken
            return declined
        self.store.decline(row.id, taken)
        job.owned = [o for o in job.owned if o not in taken]
        asked = folded(job.override.add)  # a correction that adds one back is the person's word
        back = [k for k in taken if fold(k) in asked]
        log.info("%s: %s taken out of it by a person (or another program); never written into this photo "
                 "again%s", job.path, listed(taken),
                 f" unless a correction adds it, as one does: {listed(back)}" if back else "",
                 extra={"event": "declined", "path": job.path, "keywords": taken})
        return declined | set(taken)

    def _once(self, path: str, said: tuple[object, ...]) -> int:
        """The level of a line about ``path``'s try that says ``said``: INFO the first time, DEBUG at
        its later tries until its outcome is recorded (:meth:`record_done`, :meth:`failed`).  A photo
        that waits out a locked database is tried again every few seconds with the same file: its
        line said five times read as five photos, or five restores."""
        if self._said.get(path) == said:
            return logging.DEBUG
        self._said[path] = said
        return logging.INFO

    def gone(self, path: str, reason: str) -> Outcome:
        """:func:`record_gone`, kept in mind: the deletion the watcher reports next for ``path`` is
        the same news, and said at debug only (it was a second line, "skipped: deleted before it could
        be tagged", for every photo an ingest script moved out while it was being read or written)."""
        self._said[path] = GONE_SAID
        return record_gone(self.store, path, reason)

    def _forget_said(self, path: str, is_dir: bool = False) -> None:
        """``path`` deleted or renamed away (every photo under it, ``is_dir``): what :meth:`_once`
        kept of its tries goes.  Kept, a long-running daemon held a line's worth for every photo it
        had said one of and that went before its outcome was recorded (one that waited out a lock,
        then was deleted).  Not carried to a new name: the line names the path, so at the new name
        it is news (and a rename changes the change time it holds besides)."""
        if not is_dir:
            self._said.pop(path, None)
            return
        under = path.rstrip("/") + "/"
        for gone in [said for said in self._said if said.startswith(under)]:
            del self._said[gone]

    def _removed(self, job: WriteJob, row: FileRow, state: FileState,
                 owned_paths: Mapping[str, Sequence[str]], reader: KeywordWriter
                 ) -> tuple[list[str], list[str], str | None]:
        """Of ``job.owned``, the keywords the file no longer holds: (taken out since a write recorded
        done, recorded ahead of a write never done, why those taken out are no person's doing: None
        (a person's), :data:`STALE` (the save looks built from the version before our last write),
        :data:`FOUND` (the file is the version tagwatch found before its first write: see
        :mod:`tagwatch.original`) or :data:`RESTORED` (the file last changed before tagwatch found
        its database restored from an older copy, whose ledger does not know what tagwatch took out
        after that copy was taken: see Store._notice_restore)).  Reads nothing but ``state`` and,
        where something is taken, the photo's metadata segments; :meth:`taken_out` and a dry run's
        :meth:`preview` decide the same way."""
        pending = self.store.pending_ledger(row.id)
        gone = reader.absent(state, {o: owned_paths.get(o, ()) for o in job.owned})
        taken = [o for o in gone if o not in pending]
        why: str | None = None
        restored = self.store.restored_ns() if taken else None
        if taken and self._sidecar_gone(job.path, state, reader):
            why = LOST  # deleted with the sidecar: written again, as the daemon and a scan do
        elif taken and row.found is not None and header_digest(Path(job.path)) == row.found:
            why = FOUND
        elif taken and row.written_ns is not None and (
                self._changed_ns(job.path, state) - row.written_ns <= STALE_SAVE_NS
                and set(taken) == self.store.last_written(row.id)):
            why = STALE
        elif restored is not None and self._changed_ns(job.path, state) <= restored:
            why = RESTORED  # what took them out came before this database was put back
        return taken, [o for o in gone if o in pending], why

    @staticmethod
    def _sidecar_gone(path: str, state: FileState, reader: KeywordWriter) -> bool:
        """Does ``path`` keep its keywords in a sidecar that is not there (deleted since its write)?"""
        photo = Path(path)
        return not state.apart and reader.uses_sidecar(photo) and not reader.sidecar_for(photo).exists()

    def sidecar_gone(self, row: FileRow) -> None:
        """The sidecar holding tagwatch's keywords of the tagged photo ``row`` is gone
        (:func:`tagwatch.shared.sidecar_lost`): the photo, and each photo sharing that sidecar
        (``photo.xmp`` naming), is recorded pending with its keywords of ours
        (:meth:`Store.sidecar_lost`), so that this write and theirs put those still predicted into
        a new sidecar, and none is taken for a keyword a person took out.  Keywords a person had put
        in the deleted sidecar went with it, the person's doing: they are in no ledger and are not
        put back; those a person took out before stay out (declined); those a correction of theirs
        adds are written again as the correction still asks.  One line says so, for the sidecar
        (not once for each photo sharing it)."""
        writer = self.writer
        assert writer is not None
        users = [row.path, *(str(m) for m in shared.sharers(writer, self.store, row.path))]
        rows = self.store.files(users)
        marked = set(self.store.sidecar_lost([r.id for r in rows.values()], SIDECAR_RECORD))
        if row.id not in marked:  # another photo sharing it said so first, in this batch
            return
        names = sorted(os.path.basename(p) for p in users if p in rows and rows[p].id in marked)
        side = writer.sidecar_for(Path(row.path))
        log.info("%s: the sidecar that held tagwatch's keywords of %s is gone (deleted, or moved away); "
                 "they are written again, into a new one (keywords a person had put in it went with "
                 "it and are not put back)", side, " and ".join(names),
                 extra={"event": "sidecar-gone", "path": str(side), "photos": list(rows)})

    def _changed_ns(self, path: str, state: FileState) -> int:
        """When the photo or its sidecar (unless another photo's: ``state.apart``) last changed (the
        newer), by the file system's clock."""
        reader = self.writer or self.reader  # a dry run's reader names the same sidecar
        assert reader is not None
        changed = state.before.st_ctime_ns
        if state.apart:
            return changed
        with contextlib.suppress(OSError):
            changed = max(changed, reader.sidecar_for(Path(path)).lstat().st_ctime_ns)
        return changed

    def _written_ns(self, job: WriteJob, st: os.stat_result) -> int | None:
        """:meth:`_placed_ns`, or None if this write added no keyword (a save built from the version
        before a write that only took keywords out or re-spelled them lacks nothing of ours)."""
        assert job.plan is not None
        return self._placed_ns(job, st) if job.plan.ours else None

    def _placed_ns(self, job: WriteJob, st: os.stat_result) -> int | None:
        """The change time of what this write put in place (the photo, its sidecar: the newer), or
        None where it wrote nothing.  The sidecar's is read now: if another program has saved it
        since, its time is later still, which only makes that save look more like one built from ours."""
        assert job.plan is not None and self.writer is not None
        if not job.writes:
            return None
        marks = [st.st_ctime_ns] if any(e.is_photo for e in job.plan.edits) else []
        if any(not e.is_photo for e in job.plan.edits):
            with contextlib.suppress(OSError):
                marks.append(self.writer.sidecar_for(Path(job.path)).lstat().st_ctime_ns)
        return max(marks, default=None)

    def where_keywords(self, path: str) -> str:
        """Where ``path``'s keywords are, for its log line (see :func:`~tagwatch.wording.held_in`)."""
        writer = self.writer or self.reader
        if writer is None:
            return "the file"
        photo = Path(path)
        embeds, side = writer.destinations(photo)  # a JPEG's first bytes read once, for both
        mates = ([m.name for m in shared.stem_mates(writer, photo)  # not a JPEG that embeds its own
                  if shared.uses_stem_sidecar(writer, self.store, m)] if side else [])
        return held_in(embeds, side, mates)

    def record_done(self, job: WriteJob, st: os.stat_result, rules: TagRules) -> Outcome:
        """Step 3: the file holds its keywords (``st``: its stat after the write); record it tagged."""
        plan, override, keywords = job.plan, job.override, job.keywords
        added: list[str] = []
        if job.writes:
            assert plan is not None and job.file_id is not None
            self.store.withdraw(job.file_id, plan.removed, self._placed_ns(job, st))
            added = plan.ours
        log.debug("%s: recording it tagged", job.path)
        with self.store.transaction():
            file_id = self.store.record_file(job.path, key=job.key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                             state=DONE)
            written_ns = self._written_ns(job, st) if plan is not None else None
            self.store.record_tagged(file_id, keywords, rules.fingerprint, st.st_size, st.st_mtime_ns,
                                     written_ns, wrote=job.writes)
            if job.found is not None and written_ns is not None and plan is not None and any(
                    e.is_photo for e in plan.edits):  # our keywords went into the photo itself
                self.store.set_found(file_id, job.found)
            if plan is not None:
                # What the file now holds of ours is recorded written; what it never got is forgotten
                self.store.confirm_ledger(file_id, [*job.held, *plan.ours])
                self.store.remove_ledger(file_id, [k for k in job.unwritten if k not in plan.ours])
                self.store.set_ledger_paths(file_id, {k: plan.paths[k] for k in plan.respelled})
                self.store.add_ledger(file_id, adopted(override, [*plan.ours, *job.owned]), USER,
                                      paths=plan.paths)
                self.store.remove_ledger(file_id, job.released)  # the other photo's now, in the sidecar
                self.store.set_filled(file_id, plan.fills)
                side = next((e for e in plan.edits if not e.is_photo), None) if job.writes else None
                if side is not None and SIDECAR_FILE not in self.store.filled(file_id) and (
                        side.before is None or job.first):  # see SIDECAR_FILE
                    made = Filled((), None if side.before is None else "")
                    self.store.set_filled(file_id, {SIDECAR_FILE: made})
            placed = job.placed
            if placed is not None:
                where = placed.where
                self.store.set_located(file_id, where and where.lat, where and where.lon,
                                       list(placed.keywords))
        self._said.pop(job.path, None)  # recorded: a later try is a new one
        out = folded(job.kept_out)
        carried = [k for k in keywords if fold(k) not in out]
        fields: dict[str, object] = {"event": "tagged", "path": job.path, "tags": carried}
        claimed = list(job.placed.keywords) if job.placed is not None else []
        places = [p for p in claimed if fold(p) not in out]  # one the person took out is not there
        if places:
            fields["places"] = places
        if job.kept_out:
            fields["declined"] = job.kept_out
        removed = plan.removed if job.writes and plan is not None else []
        dropped = plan.dropped if job.writes and plan is not None else []
        spellings = new_spellings(removed, [*carried, *places])  # the same keywords: not removed
        if spellings:
            fields["respelled"] = spellings
        if any(k not in spellings for k in removed):
            fields["removed"] = [k for k in removed if k not in spellings]
        if dropped:
            fields["dropped"] = dropped
        copied = job.copied
        if copied is not None:  # "from" as a move's; "adopted": the keywords taken up as tagwatch's
            fields.update({"from": copied.source, "adopted": list(copied.keywords),
                           "original_gone": copied.moved})
        # predicted, and in the file as a person's already: not written (their "RED" for our red)
        theirs = [k for k in carried if k not in added and k not in job.owned] if plan is not None else []
        took = override.took if isinstance(override, Corrected) else ()
        # ours taken out as a correction asks: still predicted, or a place level below one it removes
        rejected = override.removes() | folded(job.placed.rejected if job.placed is not None else ())
        withdrawn = [k for k in removed if fold(k) in rejected]
        # A tag-list edit re-scores every cached photo: one line per photo it wrote nothing into
        # ("tagged …: blue (already in the file)" ten times, then "rewrote 0") read as ten taggings
        rewrote = _rewrote(job, st)
        gave = given_back(plan, job.filled) if rewrote and plan is not None else []
        quiet = (job.rescore or (job.same and not job.kept_out)) and not (
            added or removed or dropped or rewrote or copied)
        overridden = [k for k in took if fold(k) not in out and k not in withdrawn]
        log.log(logging.DEBUG if quiet else logging.INFO, "%s", tagged_line(
            job.path, carried, places, job.kept_out, rules.threshold, bool(added),
            removed, dropped, rewrote=rewrote, theirs=theirs, overridden=overridden,
            withdrawn=withdrawn, gave_back=gave,
            respelled=plan.respelled if rewrote and plan is not None else (),
            where=partial(self.where_keywords, job.path), own_thresholds=rules.own_thresholds,
            new_spelling=spellings, copied=copied),
            extra=fields)
        return Outcome(job.path, Status.TAGGED, job.tags, added, wrote=rewrote, overridden=overridden)

    def failed(self, job: WriteJob, exc: MetadataError | OSError) -> Outcome:
        """Step 1 or 2 failed: withdraw the ledger rows this plan recorded ahead (the file is as it
        was) and say what next: RETRY (changed under us), WAIT (a passing storage problem), or give up.

        Rows the ledger held before this plan stay, even for keywords it meant to add: they come from
        an earlier write that was interrupted (a crash, a Ray node lost) and may have reached the
        file after this plan read it, as a lost node's write can."""
        if job.copied is not None:  # recorded already, and no tagged line will say it
            log.info("%s: %s", job.path, job.copied.said(),
                     extra={"event": "adopted", "path": job.path, "from": job.copied.source,
                            "keywords": list(job.copied.keywords)})
        withdraw = [k for k in job.ahead if k not in job.owned]
        if job.file_id is not None and withdraw:
            self.store.remove_ledger(job.file_id, withdraw)
        if job.file_id is not None and job.plan is not None and job.plan.fills_ahead:
            self.store.set_filled(job.file_id, {name: job.filled.get(name) for name in job.plan.fills_ahead})
        if isinstance(exc, FileChanged):
            return Outcome(job.path, Status.RETRY, job.tags, error=str(exc))
        passing = transient_reason(exc)
        if passing is not None:  # the photo is as it was; the same write can work later
            return Outcome(job.path, Status.WAIT, job.tags, error=f"keywords not written: {passing}")
        self._said.pop(job.path, None)  # given up on: tried afresh when it changes
        if not os.path.lexists(job.path):
            return self.gone(job.path, "file vanished before its keywords were written")
        reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror
        return record_failure(self.store, job.path, job.stat, f"keywords not written: {reason}",
                              key=job.key)

    def finish(self, job: WriteJob, rules: TagRules) -> Outcome:
        """All three steps in this process (the local engine)."""
        try:
            self.plan_ahead(job, rules)
            st = job.stat  # no plan (no writer, or nothing to do): the file was not touched
            if self.writer is not None and job.plan is not None:
                st = write_file(self.writer, job)
        except (MetadataError, OSError) as exc:
            return self.failed(job, exc)
        return self.record_done(job, st, rules)

    # -- untag ----------------------------------------------------------------------------------

    def untag(self, path: str) -> Outcome:
        """Take out exactly the keywords tagwatch added (and put back what overwrite took out, and
        what each field tagwatch filled held before); the daemon then leaves the file alone until
        ``scan`` names it again."""
        assert self.writer is not None
        row = self.store.file(path)
        if row is None or row.state == DELETED:
            return Outcome(path, Status.UNCHANGED, error="tagwatch has no record of this file")
        if not os.path.lexists(path):  # deleted while no daemon ran to see it: nothing to give back
            return Outcome(path, Status.GONE, error="no longer on disk")
        records = self.store.filled(row.id)
        if (row.state == UNTAGGED and not self.store.ledger(row.id) and not self.store.ledger(row.id, REMOVED)
                and not set(records) - {SIDECAR_FILE}):
            # an earlier untag (an older version's) may have left its emptied sidecar: it goes now,
            # unless its record says it was there before tagwatch (kept by the first untag)
            side = self.writer.sidecar_for(Path(path))
            record = Filled(*records[SIDECAR_FILE]) if SIDECAR_FILE in records else None
            if (self.writer.uses_sidecar(Path(path)) and side.is_file() and not side.is_symlink()
                    and drop_empty_sidecar(self.writer, side, record)):
                log.info("untagged %s: removed its sidecar %s, which held nothing (left by an earlier untag)",
                         path, side.name)
                return Outcome(path, Status.UNTAGGED)
            return Outcome(path, Status.UNCHANGED, error="already untagged")
        owned, dropped = self.store.ledger(row.id), self.store.ledger(row.id, REMOVED)
        filled = {name: Filled(*record) for name, record in self.store.filled(row.id).items()}
        made = filled.pop(SIDECAR_FILE, None)  # the sidecar file's own record: no field to give back
        self.store.record_file(path, key=row.key, size=row.size, mtime_ns=row.mtime_ns, state=UNTAGGED)
        apart = shared.apart(self.writer, self.store, path)
        # what they have in a sidecar shared stays there, and leaves only this photo's own fields
        others = shared.NO_MATES if apart else shared.mates(self.writer, self.store, path)
        left = [k for k in owned if k in others.held]
        try:
            plan = self.writer.plan_untag(Path(path), owned, dropped, self.store.ledger_paths(row.id), filled,
                                          state=self.writer.inspect(Path(path), None, apart), side_keep=left,
                                          other_naming=True)
            if not plan.restored:  # nothing of ours is in a sidecar not there: none is created to take it out
                plan = _no_new_sidecar(plan)
            st = self.writer.apply(plan)
        except (MetadataError, OSError) as exc:
            reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror
            log.warning("%s: not untagged: %s", path, reason)
            return Outcome(path, Status.FAILED, error=reason)
        # A sidecar tagwatch made (by its record; without one, an older version's that had keywords of
        # ours in it) that holds nothing now goes, the folder as it was before tagwatch; one that still
        # holds keywords of a photo sharing it passes the record on, for that one's untag
        side = self.writer.sidecar_for(Path(path))
        ours = made is not None or (bool(owned) and self.writer.uses_sidecar(Path(path)))
        gone = (ours and side.is_file() and not side.is_symlink()
                and drop_empty_sidecar(self.writer, side, made))
        with self.store.transaction():
            # a person's keyword it could not put back stays remembered, for the next untag
            self.store.remove_ledger(row.id, owned + [k for k in dropped if k not in plan.unrestored])
            # a sidecar that was there before tagwatch and stays is still not tagwatch's: its record
            # stays, or the next untag took it for one an older untag left, and removed it
            before = made is not None and made.previous is not None and not gone
            self.store.set_filled(row.id, dict.fromkeys([*filled, *([] if before else [SIDECAR_FILE])]))
            if made is not None and made.previous is None and not gone:
                for mate in self.store.files(others.paths).values():
                    if Filled(*self.store.filled(mate.id).get(SIDECAR_FILE, ((), None))).previous is not None:
                        self.store.set_filled(mate.id, {SIDECAR_FILE: made})  # made by tagwatch after all
            # A keyword field tagwatch created or overwrote in the sidecar this photo shares, which stays
            # for the keywords another photo has in it from tagwatch, is given back by that one's untag
            kept = {name: record for name, record in plan.fills.items()
                    if record is not None and name.startswith(SIDECAR_RECORD)}
            for mate in self.store.files(others.paths).values() if others.held and kept else ():
                theirs = self.store.filled(mate.id)
                self.store.set_filled(mate.id, {name: r for name, r in kept.items() if name not in theirs})
            # its place keywords are gone with the rest; its coordinates stay known, so export lists the
            # places a scan naming it would write, as it lists its tags
            spot = self.store.located([row.id]).get(row.id)
            self.store.set_located(row.id, spot.lat if spot else None, spot.lon if spot else None, ())
            self.store.record_file(path, key=row.key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                   state=UNTAGGED)
        emptied = (f"; removed its sidecar {side.name}, which tagwatch made and which holds nothing now"
                   if gone else "")
        # left alone by the daemon all the same, as asked; one whose keywords all stay in the sidecar
        # it shares, for the other photo, is untagged all the same: they are no longer its
        if not plan.changes and not gone and not left:
            return Outcome(path, Status.UNCHANGED, error="nothing of tagwatch's in it to take out")
        # the fields it gave back (our description, a place's City...) are named with the keywords,
        # each pair of twins once: an untag that took out only a description said "removed nothing"
        fields = given_back(plan, {name: record for name, record in filled.items() if record.ours})
        log.info("untagged %s: removed %s%s%s%s", path, listed([*plan.removed, *fields]) or "nothing",
                 f"; restored {listed(plan.restored)}" if plan.restored else "",
                 f"; left in the sidecar it shares with {', '.join(others.paths)}, which has them from "
                 f"tagwatch too: {listed(left)}" if left else "", emptied)
        return Outcome(path, Status.UNTAGGED, added=plan.restored)

    def release(self, path: str) -> str | None:
        """A photo deleted (still recorded in the store): tagwatch's keywords (a correction's too)
        and filled fields leave its own sidecar, and the sidecar goes where tagwatch made it and
        nothing is left in it (:func:`drop_empty_sidecar`).  Phones reuse names (``IMG_1234.HEIC``):
        left there, they were the next photo of that name's, taken for the person's keywords of a
        picture they were never predicted for, and untag could not take them out.  A sidecar that
        another photo uses is :func:`tagwatch.shared.forget`'s; one holding a person's keywords or a
        darktable history keeps them.  Returns what the "deleted" line adds ("" if nothing), or None
        where a passing fault (exiftool killed or silent, a NAS's I/O error) kept the keywords in: the
        photo then stays recorded, and the next start's scan, finding it gone, tries again (marked
        deleted, it was never tried again, and the next photo of its name got its keywords)."""
        assert self.writer is not None
        row = self.store.file(path)
        photo = Path(path)
        side = self.writer.sidecar_for(photo)
        if (row is None or row.state == DELETED or not side.is_file() or side.is_symlink()
                or shared.sharers(self.writer, self.store, path)):
            return ""
        owned = list(dict.fromkeys([*self.store.ledger(row.id), *self.store.ledger(row.id, USER)]))
        records = self.store.filled(row.id)
        made = Filled(*records[SIDECAR_FILE]) if SIDECAR_FILE in records else None
        embeds = self.writer.embeds(photo)  # a JPEG's own fields went with it: only the sidecar's count
        filled = {name: Filled(*record) for name, record in records.items() if name != SIDECAR_FILE
                  and (name.startswith(SIDECAR_RECORD) or (not embeds and name not in KEYWORD_FIELDS))}
        if not owned and not filled and made is None:
            return ""
        paths = {**self.store.ledger_paths(row.id, USER), **self.store.ledger_paths(row.id)}
        try:
            state = FileState(side.lstat(), Keywords(), self.writer.read(side))
            plan = self.writer.plan_untag(photo, owned, [], paths, filled, state=state)
            plan = replace(plan, edits=[edit for edit in plan.edits if not edit.is_photo])
            if plan.changes:
                self.writer.apply(plan)
            gone = (made is not None or bool(plan.removed)) and drop_empty_sidecar(self.writer, side, made)
        except (MetadataError, OSError) as exc:
            reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror
            passing = transient_reason(exc)
            log.warning("%s: tagwatch's keywords not taken out of its sidecar %s: %s%s", path, side.name,
                        reason, "; tried again when tagwatch next starts" if passing else "")
            return None if passing else ""
        with self.store.transaction():
            if not embeds:  # gone from every file: the picture back (from a bin) is tagged afresh
                self.store.remove_ledger(row.id, plan.removed)  # a correction's rows too
            self.store.set_filled(row.id, {**dict.fromkeys(filled), SIDECAR_FILE: None})
        fields = given_back(plan, {name: record for name, record in filled.items() if record.ours})
        took = listed([*plan.removed, *fields])
        if gone:
            return (f"; its sidecar {side.name} removed, which tagwatch made"
                    + (f" and which held only tagwatch's {took}" if took else " and which held nothing"))
        return f"; tagwatch's {took} taken out of its sidecar {side.name}" if took else ""

    # -- renames and deletions ------------------------------------------------------------------

    def _moved_here(self, src: str, dst: str) -> bool:
        """Is ``dst`` the photo recorded at ``src``, moved (a :class:`~tagwatch.queue.HalfMove`)?
        Its name, size and modification time say so, as for a move the start-up scan finds (``mv``
        and file managers keep them); a file recorded at ``dst`` already is another photo."""
        row, there = self.store.file(src), self.store.file(dst)
        if row is None or row.state == DELETED or (there is not None and there.state != DELETED):
            return False
        try:
            st = os.lstat(dst)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns)

    def _folder_moved_here(self, src: str, dst: str) -> dict[str, str] | None:
        """Is the folder ``dst`` the one recorded at ``src``, moved (a folder's
        :class:`~tagwatch.queue.HalfMove`: from one watched root to another)?  Where so, the new path
        of each photo recorded under ``src``.  So where nothing is recorded under ``dst`` yet and a
        photo recorded under ``src`` is at its place under ``dst`` with the size and modification time
        recorded (as :meth:`_moved_here` asks of one photo); a folder that only has its name is
        another.  One look-up of the records under each, and at most one ``lstat`` a photo: once a
        folder move, never per event."""
        if not (utf8_name(src) and utf8_name(dst)):
            return None
        rows = self.store.files_under(src)
        if not rows or self.store.files_under(dst):
            return None
        old = src.rstrip("/")
        places = {path: dst.rstrip("/") + path[len(old):] for path in rows}
        for path, row in rows.items():
            try:
                st = os.lstat(places[path])
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (row.size, row.mtime_ns):
                return places
        return None

    def _folder_half_move(self, op: HalfMove) -> tuple[Op, dict[str, str] | None]:
        """A folder's half-seen move as the move to the candidate that is the folder, with its
        photos' new paths; none is: the deletion of the photos recorded under it."""
        for dst in op.candidates:
            places = self._folder_moved_here(op.src, dst)
            if places is not None:
                return Move(op.src, dst, is_dir=True), places
        return Delete(op.src, is_dir=True), None

    def _folder_moved(self, op: Move, places: dict[str, str], unknown: list[str],
                      moved: list[Move]) -> None:
        """A folder's half-seen move, its records moved along (:meth:`_folder_moved_here`): one line
        for it, and each photo recorded under it that is not in it any more (deleted meanwhile) a
        deletion at its new path, as it would have been at the old one."""
        log.info("moved %s -> %s (a folder: its %d photos' records, keywords and corrections with it)",
                 op.src, op.dst, len(places), extra={"event": "moved", "path": op.dst, "from": op.src})
        for new in places.values():
            if not os.path.lexists(new):
                self._apply_op(Delete(new), unknown, moved)

    def apply_ops(self, ops: Sequence[Op], waiting: list[tuple[Op, str]] | None = None
                  ) -> tuple[list[str], list[Move]]:
        """Apply renames and deletions to the store; returns the paths to look at (moved paths the
        store did not know, and "deleted" files that are there, replaced since) and the moves as
        applied: a half-seen move is the move to the candidate that is the photo, or a deletion.
        An op that fails is logged and costs only itself: one that raised here lost the other ops
        and every photo of the worker's batch.

        With ``waiting`` (the daemon's worker: the ops that wait already, in the order they
        happened), an op the database could not take for a passing reason (its disk full, a backup's
        lock) is added there with that reason, unsaid, to be applied again later; logged at ERROR and
        dropped, a deleted photo stayed listed by `status` and export, and a renamed one stayed
        recorded under its old name while the new one was tagged as a new photo.  So is every op of
        ``ops`` after it (not tried: the database that could not take one write is not asked again
        for each, a lock's wait every time), and every op that names a path of one waiting already
        (:func:`~tagwatch.queue.overlaps`): a rename ``a -> b`` then ``b -> c``, or a rename then a
        deletion, applied out of order, would lose the record.  Ops before it that name none are
        tried: order matters only between ops that share a path.  A half-seen
        move waits as it came, and is resolved when it is applied: its candidates are photos the
        worker holds back meanwhile (one tagged first would be recorded, and no longer its move)."""
        unknown: list[str] = []
        moved: list[Move] = []
        stuck: str | None = None  # the database's trouble, met by an op of these
        for op in ops:
            if waiting is not None:
                behind = stuck or next((why for before, why in waiting if overlaps(before, op)), None)
                if behind is not None:
                    waiting.append((op, behind))
                    continue
            try:
                self._apply_op(op, unknown, moved)
            except Exception as exc:  # the batch's photos and other ops go on whatever one op does
                passing = transient_reason(exc)
                if waiting is not None and passing is not None and database_fault(passing):
                    waiting.append((op, passing))
                    stuck = passing
                    continue
                path = op.src if isinstance(op, Move) else op.path
                what = f"its rename to {logs.shown(op.dst)}" if isinstance(op, Move) else "its deletion"
                log.error("%s: %s not recorded: %s: %s", logs.shown(path), what, type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                if isinstance(op, Move) and not op.is_dir:
                    unknown.append(op.dst)  # looked at where it is now, as a photo moved in
        return unknown, moved

    def _apply_op(self, op: Op, unknown: list[str], moved: list[Move]) -> None:
        """One op of :meth:`apply_ops`, adding to its paths to look at and moves applied."""
        half = isinstance(op, HalfMove)
        places: dict[str, str] | None = None  # a folder's half-seen move: its photos' new paths
        if isinstance(op, HalfMove) and op.is_dir:  # the folder whose photos have their sizes and times
            op, places = self._folder_half_move(op)
        elif isinstance(op, HalfMove):  # the photo moved is the one with its size and time
            dst = next((d for d in op.candidates if self._moved_here(op.src, d)), None)
            # none: other pictures that only have its name, and the photo is gone
            op = Move(op.src, dst) if dst is not None else Delete(op.src)
        if isinstance(op, Delete):
            # Replaced since (queue.replaced): the row and ledger stay, and the file is looked at
            # again, as the op dropped its queued event.
            if replaced(op):
                if not op.is_dir:
                    unknown.append(op.path)
                return
            said_gone = self._said.get(op.path) == GONE_SAID
            self._forget_said(op.path, op.is_dir)
            if not utf8_name(op.path):  # never recorded (skipped, saying why): nothing to forget
                return
            if op.is_dir:
                self._folder_deleted(op.path.rstrip("/") or "/", self.store.mark_deleted_under(op.path))
                return
            released = self._leave(op.path)
            if released is None:  # kept recorded: the start-up scan finds it gone and tries again
                return
            if self.store.mark_deleted(op.path):
                log.info("%s: deleted%s", op.path, released, extra={"event": "deleted", "path": op.path})
            elif said_gone:  # the write that found it gone said so: one line per photo
                log.debug("%s: deletion recorded (said gone already)", op.path)
            else:
                log.info("%s: skipped: deleted before it could be tagged", op.path)
            return
        self._forget_said(op.src, op.is_dir)
        if not (utf8_name(op.src) and utf8_name(op.dst)):
            self._move_unrecordable(op, unknown, look=not half)
            return
        if op.is_dir:
            self.store.move_tree(op.src, op.dst)
            moved.append(op)
            if places is not None:
                self._folder_moved(op, places, unknown, moved)
            return
        known = self.store.move(op.src, op.dst)
        moved.append(op)  # recorded: a correction follows it (not one the database could not take)
        # A sidecar the photo shares stays where it is; its own keywords go with it (none, from a
        # sidecar that was never its: shared.apart)
        if self.writer is not None and not (known and (
                shared.apart(self.writer, self.store, op.src, op.dst)
                or shared.carry(self.writer, self.store, op.src, op.dst))):
            move_sidecar(self.writer, op.src, op.dst, self.store if known else None)
        if self.writer is not None and known:  # the sidecars moved or written: no edits
            restamp(self.store, [op.dst, *stem_photos(op.src)])
        if not known:
            unknown.append(op.dst)
        else:
            log.info("moved %s -> %s", op.src, op.dst,
                     extra={"event": "moved", "path": op.dst, "from": op.src})
            row = self.store.file(op.dst)
            if row is not None and row.state != DONE:  # renamed mid-write (an ingest script
                unknown.append(op.dst)  # at 0.1 s): its batch met the old name gone

    def _folder_deleted(self, folder: str, marked: int) -> None:
        """A folder's deletion, ``marked`` records under it recorded deleted by it: one line naming
        it and counting them, ``deleted ~/Pictures/2019 (a folder: its 30 photos' records)``, where
        any were (a folder moved out of every watched folder, to the trash: its photos report no
        deletion of their own, and their records went silently).  ``rm -r`` reports each photo
        deleted before the folder, each with its own line: the folder's then counts none and says
        nothing.  (Holding the photos' lines 2 s for a folder's deletion to take them up was tried, and
        taken out: on a loaded CI host it split an ``rm -r``'s lines anyway, for a reason not found.)"""
        if marked:
            log.info("deleted %s (a folder: its %s records)", folder,
                     "1 photo's" if marked == 1 else f"{marked} photos'",
                     extra={"event": "deleted", "path": folder})

    def _leave(self, path: str) -> str | None:
        """A recorded photo gone from ``path``: its keywords out of a sidecar another photo still
        uses, and out of its own (:meth:`release`, whose answer this is)."""
        if self.writer is None:
            return ""
        shared.forget(self.writer, self.store, path)
        restamp(self.store, stem_photos(path))  # that write is no edit of theirs
        return self.release(path)

    def _move_unrecordable(self, op: Move, unknown: list[str], *, look: bool) -> None:
        """A rename from or to a name the store cannot hold (:func:`~tagwatch.store.utf8_name`).
        Nothing was ever recorded under such a name (its photos were skipped, saying why), and SQLite
        cannot be asked about it: the rename raised, failing the batch, and a photo renamed as its
        skip line advises was not tagged.  Here what was recorded under a valid ``src`` leaves the
        store (its sidecar going with the photo: nothing can follow it to such a name), and the file
        at ``dst`` is looked at (``look``; a half-seen move's candidates are queued already), as any
        photo moved in: tagged, or skipped with its one line.  A folder's photos are each reported
        moved too (watchdog's moves under a moved folder, the scan's), and so looked at."""
        if self.writer is not None and not op.is_dir:  # its sidecar goes with it, as any photo's
            move_sidecar(self.writer, op.src, op.dst)
        if utf8_name(op.src) and op.is_dir:
            self.store.mark_deleted_under(op.src)
        elif utf8_name(op.src) and self._leave(op.src) is not None:
            self.store.mark_deleted(op.src)
        if look and not op.is_dir:
            unknown.append(op.dst)


def move_sidecar(writer: KeywordWriter, src: str, dst: str, store: Store | None = None) -> str | None:
    """A photo renamed by a file manager leaves its sidecar behind; take it along, unless the new
    name already has one or other files still share it (``photo.xmp`` of a RAW+JPEG pair; with
    ``store``, only those that use it: :func:`tagwatch.shared.sharers`, so a RAW's goes with it
    from beside a JPEG that embeds its keywords).  The one rule for a live rename and for one the
    start-up scan finds (:func:`tagwatch.watcher.reconcile`).  Returns None once moved, else why it
    stays: "" where there is none to move, else words for the scan's log line (a live rename says
    nothing of it)."""
    old = writer.sidecar_for(Path(src))
    new = writer.sidecar_for(Path(dst), old.suffix)  # moved, it keeps its spelling: IMG_1.XMP
    if old == new or not old.is_file() or old.is_symlink():
        return ""
    if os.path.lexists(new):
        return f"{logs.shown(new.name)} is there already"
    if writer.stem_named:
        mates = ([p.name for p in shared.sharers(writer, store, src)] if store is not None else
                 [p.name for p in old.parent.glob(glob.escape(old.stem) + ".*")
                  if not is_sidecar(p.name) and not is_companion(p.name)])
        if mates:
            return f"{', '.join(map(logs.shown, sorted(mates)))} still shares it"
    try:
        os.rename(old, new)
    except OSError as exc:
        log.warning("%s: sidecar not moved with its photo: %s", logs.shown(str(old)), exc.strerror)
        return exc.strerror or str(exc)
    log.info("moved sidecar %s -> %s", logs.shown(str(old)), logs.shown(str(new)))
    return None
