"""A sidecar two photos share: ``[write] sidecar = "photo.xmp"`` names it after the photo's stem.

That is Lightroom's and Capture One's name, so a RAW+JPEG pair (``IMG_1.CR2``, ``IMG_1.JPG``) has one
``IMG_1.xmp``, which those apps read for both photos (darktable and digiKam name a sidecar
``IMG_1.CR2.xmp`` so that no two photos share one).  tagwatch keeps that one file: the sidecar holds
both photos' keywords, the union, and each photo's ledger says which are its own.  So a keyword one
photo takes out (untag, sync, a correction, a rename) leaves the sidecar only if no other photo of
that stem has it from tagwatch too, a keyword already there because the other photo has it is this
photo's as well (not the person's) when it is predicted for this one, and a keyword a person took
out of the shared sidecar stays out of it for both photos.  A photo renamed away from its stem takes
its own keywords to a sidecar of its new name and leaves the other photo's where they are.

A photo's embedded fields are its own: a JPEG that embeds its keywords (target "embedded") is
judged on its own fields alone, as Lightroom, Apple Photos and Windows read it, and the RAW's
sidecar beside it is none of its keyword fields (:func:`apart`); a JPEG that writes the sidecar too
(target "both") takes its keywords out of itself whole, and out of the sidecar by the rules above.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .formats import EMBEDDABLE_SUFFIXES, IMAGE_SUFFIXES
from .freshness import StatOf, sidecar_there, stem_files
from .metadata import SIDECAR_RECORD, KeywordWriter, MetadataError
from .store import ADDED, DECLINED, DELETED, DONE, USER, FileRow, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mates:
    """What the other photos that share a photo's sidecar have in it from tagwatch, per their ledgers."""

    paths: tuple[str, ...] = ()
    held: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # keyword → paths written under
    declined: frozenset[str] = frozenset()  # taken out of the shared sidecar by a person

    def __bool__(self) -> bool:
        return bool(self.paths)


NO_MATES = Mates()


def stem_mates(writer: KeywordWriter, path: Path, *, any_file: bool = False) -> list[Path]:
    """The other files whose sidecar is ``path``'s: with ``photo.xmp`` naming, the photos of the same
    folder and stem (``any_file``: every file of that stem but a sidecar, such as a RAW format
    tagwatch does not read, whose sidecar it still is for the apps that do)."""
    if not writer.stem_named:  # photo.jpg.xmp naming: each photo has its own
        return []
    side = writer.sidecar_for(path)
    return [other for other in map(Path, stem_files(str(path)))
            if writer.sidecar_for(other) == side and (any_file or other.suffix.lower() in IMAGE_SUFFIXES)]


def uses_stem_sidecar(writer: KeywordWriter, store: Store, mate: Path) -> bool:
    """Does ``mate`` keep keywords in the ``photo.xmp`` sidecar of its stem?  Every file does but a
    JPEG that embeds its keywords (target "embedded"), unless its ledger records a write into that
    sidecar under an earlier target: the test of :func:`apart`, for a file whose stem mate is gone."""
    if writer.uses_sidecar(mate):
        return True
    row = store.file(str(mate))
    return row is not None and any(name.startswith(SIDECAR_RECORD) for name in store.filled(row.id))


def sidecar_lost(writer: KeywordWriter, store: Store, row: FileRow, stat_of: StatOf | None = None) -> bool:
    """Is the sidecar that holds tagwatch's keywords of the tagged photo ``row`` gone (a person
    deleted it, to start over, or a cleanup script or a sync tool did)?  So where tagwatch keeps the
    photo's keywords in its sidecar (:meth:`KeywordWriter.uses_sidecar`), its ledger has keywords of
    its own (added by its write, or by the write of another photo sharing the sidecar: so not
    ``written_ns``, which only the photo's own write sets), the ledger records a sidecar tagwatch
    wrote into (this photo's, or another's of its stem: a change of ``[write] target`` from
    "embedded" to "sidecar" finds no sidecar of a JPEG tagged before, and none was lost), and no
    sidecar of the naming it writes is there in either spelling.  The photo itself is unchanged, so
    without this its next scan would count it unchanged for ever.  Cheap where it is asked most: a
    JPEG embedding its keywords (target "embedded") is known by its name, a photo with its sidecar
    there costs the two ``lstat``s (``stat_of``: a walk's folder listing); only a photo with no
    sidecar asks the store, and reads its first bytes."""
    if row.state != DONE:
        return False
    photo = Path(row.path)
    if writer.settings.target == "embedded" and photo.suffix.lower() in EMBEDDABLE_SUFFIXES:
        # into the photo, by its name: its bytes are not read at each scan of every JPEG (a PNG named
        # .jpg, which gets a sidecar, is not asked about: its sidecar deleted is not noticed), and
        # no sidecar is looked for
        return False
    if sidecar_there(row.path, writer.stem_named, stat_of):
        return False
    if not store.ledger(row.id) or not writer.uses_sidecar(photo):
        return False
    # a sidecar tagwatch wrote into (its records of it), this photo's or, for a shared one, another's
    # of its stem: not a JPEG tagged under target "embedded" whose target is "sidecar" now
    sharing = [row.id, *(r.id for r in store.files([str(m) for m in stem_mates(writer, photo)]).values())]
    return any(name.startswith(SIDECAR_RECORD) for file_id in sharing for name in store.filled(file_id))


def sharers(writer: KeywordWriter, store: Store, path: str) -> list[Path]:
    """The other files of ``path``'s stem that use its sidecar (:func:`uses_stem_sidecar`; a file
    tagwatch does not read counts, as the apps that read one use its sidecar).  Beside a JPEG that
    embeds its keywords, the sidecar is the RAW's alone: it moves with the RAW renamed, and the
    RAW deleted takes its keywords out of it (and the sidecar tagwatch made, once empty), as any
    photo's own.  Kept for the JPEG, which never reads it, they were left to nobody's ledger (the
    next RAW of that name took them for the person's), and the renamed RAW lost the person's."""
    return [mate for mate in stem_mates(writer, Path(path), any_file=True)
            if uses_stem_sidecar(writer, store, mate)]


def apart(writer: KeywordWriter, store: Store, path: str, recorded: str | None = None,
          side: bool | None = None) -> bool:
    """Is the sidecar ``path`` shares none of its keyword fields?  So for a photo that embeds its
    keywords and nothing else (a JPEG, target "embedded") beside another photo of its stem (its
    RAW): Lightroom, Apple Photos and Windows read the JPEG's own metadata, never the RAW's
    ``IMG_1.xmp``, so what the JPEG holds, what a person took out of it and what untag and sync take
    out are judged on its own fields, and the sidecar is left to the RAW.  Not so for one that wrote
    into that sidecar under an earlier target (its ledger's records of it say so): it takes its
    keywords out of the sidecar too, by the shared sidecar's rules.  ``recorded``: where the store
    has the photo now, when ``path`` is the name it was renamed from.  ``side``: its
    :meth:`~KeywordWriter.uses_sidecar` where the caller has it (:meth:`~KeywordWriter.destinations`:
    the review page's one look at a JPEG's first bytes)."""
    photo = Path(path)
    if side is None:
        side = writer.uses_sidecar(photo)
    if side or not stem_mates(writer, photo):  # the folder listed only where it counts
        return False
    row = store.file(recorded or path)
    return row is None or not any(name.startswith(SIDECAR_RECORD) for name in store.filled(row.id))


def mates(writer: KeywordWriter, store: Store, path: str) -> Mates:
    """The other photos sharing ``path``'s sidecar and what they have in it from tagwatch (their
    ledgers' keywords, a correction's included: those are the person's for that photo)."""
    if not writer.sidecar_for(Path(path)).exists():
        return NO_MATES
    others = [str(p) for p in stem_mates(writer, Path(path))]
    if not others:
        return NO_MATES
    return Mates(tuple(others), *_ledgers(writer, store, others))


def _ledgers(writer: KeywordWriter, store: Store, paths: Sequence[str]
             ) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """The keywords ``paths`` have from tagwatch in their sidecar (→ the hierarchical paths written
    under), and those a person took out of it: a photo whose sidecar is another's (:func:`apart`)
    has nothing there."""
    rows = [row for row in store.files(paths).values()
            if row.state != DELETED and not apart(writer, store, row.path)]
    ledgers = store.ledgers(row.id for row in rows)
    held: dict[str, tuple[str, ...]] = {}
    declined: set[str] = set()
    for row in rows:
        written = store.ledger_paths(row.id)
        for keyword, action in ledgers.get(row.id, {}).items():
            if action in (ADDED, USER):
                held[keyword] = tuple(dict.fromkeys((*held.get(keyword, ()), *written.get(keyword, ()))))
            elif action == DECLINED:
                declined.add(keyword)
    return held, frozenset(declined)


def carry(writer: KeywordWriter, store: Store, src: str, dst: str) -> bool:
    """A photo renamed (its row in the store already at ``dst``) whose sidecar another file of its
    old stem still uses, or whose new name's sidecar exists already: its own keywords are written
    into the sidecar of its new name, and taken out of the old one where no other photo has them.
    False when there is nothing of the kind to do (the caller moves an unshared sidecar along)."""
    old = writer.sidecar_for(Path(src))
    new = writer.sidecar_for(Path(dst), old.suffix)  # one made for it spelled as the old one
    if old == new or not old.is_file() or old.is_symlink() or not writer.stem_named:
        return False
    left = sharers(writer, store, src)
    if not left and not os.path.lexists(new):
        return False
    row = store.file(dst)
    if row is None:
        return False
    try:
        in_old = writer.read(old).all
        owned = [k for k in store.ledger(row.id) if k in in_old]
        paths = {k: p for k, p in store.ledger_paths(row.id).items() if k in owned}
        if owned:
            _write_own(writer, store, row.id, dst, owned, paths)
        if left:
            _leave(writer, store, left[0], f"{Path(src).name}'s keywords, renamed to {dst}", owned, paths)
    except (MetadataError, OSError) as exc:
        if not os.path.lexists(old) and new.is_file():
            # Lightroom, Capture One, darktable rename the sidecar with its photo, one file after
            # the other: the one it shares moved to the new name as it was read, which is no failure
            log.debug("%s: its sidecar %s moved along with it, to %s", dst, old.name, new.name)
            return True
        reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror
        log.warning("%s: keywords not moved from the sidecar %s it shares: %s (its next scan writes them)",
                    dst, old.name, reason)
    return True


def forget(writer: KeywordWriter, store: Store, path: str) -> None:
    """A photo deleted (still recorded in the store) whose sidecar another file of its stem uses:
    its keywords leave that sidecar where no photo still using it has them from tagwatch, or they
    would be taken for the person's keywords of the other photo."""
    row = store.file(path)
    side = writer.sidecar_for(Path(path))
    if (row is None or row.state == DELETED or not side.is_file() or side.is_symlink()
            or apart(writer, store, path)):  # nothing of its in that sidecar
        return
    left = sharers(writer, store, path)  # none: its own sidecar, Writeback.release's
    if not left:
        return
    try:
        in_side = writer.read(side).all
        owned = [k for k in store.ledger(row.id) if k in in_side]
        if owned:
            paths = {k: p for k, p in store.ledger_paths(row.id).items() if k in owned}
            _leave(writer, store, left[0], f"{Path(path).name}'s keywords, deleted", owned, paths)
    except (MetadataError, OSError) as exc:
        reason = str(exc) if isinstance(exc, MetadataError) else exc.strerror
        log.warning("%s: its keywords not taken out of the sidecar %s it shared: %s", path, side.name, reason)


def _write_own(writer: KeywordWriter, store: Store, file_id: int, dst: str, owned: list[str],
               paths: Mapping[str, tuple[str, ...]]) -> None:
    """``owned`` into the renamed photo's sidecar, recorded pending first: a crash before the write
    leaves them to be written again, never taken for keywords a person took out."""
    store.add_ledger(file_id, owned, paths=paths)
    plan = writer.plan(Path(dst), owned, owned=owned, owned_paths=paths,
                       paths={k: p[-1] for k, p in paths.items()})
    if plan.changes:
        writer.apply(plan)
    store.confirm_ledger(file_id, owned)
    log.info("%s: its keywords written to its own sidecar %s: %s", dst, writer.sidecar_for(Path(dst)).name,
             ", ".join(owned))


def _leave(writer: KeywordWriter, store: Store, mate: Path, whose: str, gone: Collection[str],
           paths: Mapping[str, tuple[str, ...]]) -> None:
    """Take out of ``mate``'s sidecar the keywords ``gone`` of a photo renamed or deleted (``whose``
    says which, for the log) that no photo still using it has from tagwatch, nor ``mate`` holds in
    its own fields."""
    held, _ = _ledgers(writer, store, [str(mate), *(str(p) for p in stem_mates(writer, mate))])
    photo = writer.read(mate).all
    only = [k for k in gone if k not in held and k not in photo]
    if not only:
        return
    writer.apply(writer.plan_untag(mate, only, [], paths))
    log.info("%s: %s taken out of its sidecar %s: %s", mate, ", ".join(only), writer.sidecar_for(mate).name,
             whose)
