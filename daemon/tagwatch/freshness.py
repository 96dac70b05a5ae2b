"""Is there anything to do for a file?  The one rule, used by the pipeline, the reconcile scan and
``export``.

A file is unchanged when its size and modification time are those the store recorded: its content
key, and everything derived from it, still hold.  Any write to a file (ours included: the key
survives it, see :mod:`tagwatch.formats`) changes the modification time, so a changed file is read
again, which costs a read and a hash, never an encode when the pixels are the same.

A photo is settled only while its XMP sidecar is unchanged too: a geotagger writes a RAW's (or
PNG's) coordinates there, and the photo itself never changes.  The sidecar's change time (which no
tool sets back, unlike the modification time ``exiftool -P`` keeps) is compared with when the store
last recorded the photo: tagwatch's own sidecar writes come before that record, so they never make
the photo look edited.

A photo recorded tagged is settled only while its image vector of the model in use is cached (where
the caller asks with ``vectored``): a ``db rebuild`` that lost it, or a config naming another model,
leaves a photo that no re-score can judge, so it is encoded again.

A photo whose keywords tagwatch keeps in its sidecar is settled only while that sidecar is there
(``lost``, see :func:`tagwatch.shared.sidecar_lost`): a sidecar a person deleted leaves the photo
itself unchanged, and tagwatch's keywords must be written again, into a new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterable, Mapping

from .formats import IMAGE_SUFFIXES
from .retry import retried_anyway
from .store import DONE, FAILED, UNTAGGED, FileRow, Store

SIDECAR_SUFFIX = ".xmp"  # how tagwatch spells the extension of a sidecar it makes
# The spellings found: Photo Mechanic and Windows ingest tools write IMG_1.XMP beside IMG_1.CR2, and
# cards and NAS shares keep that case.  Apps keep the photo's own name as it is (IMG_1.CR2.xmp).
SIDECAR_SPELLINGS = (SIDECAR_SUFFIX, ".XMP")
StatOf = Callable[[str], os.stat_result | None]  # a path's lstat, or None where there is none
Recorded = Callable[[list[str]], Mapping[str, FileRow]]  # the store's rows of the paths it knows
Lost = Callable[[FileRow, StatOf | None], bool]  # is the sidecar holding a tagged photo's keywords gone?


def is_unchanged(row: FileRow | None, st: os.stat_result) -> bool:
    """The file on disk is the one the store recorded (same size and modification time)."""
    return row is not None and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)


def is_sidecar(path: str) -> bool:
    """``path`` is named as a sidecar is: ``.xmp`` in any case (``.XMP``, ``.Xmp``)."""
    return path[-4:].lower() == SIDECAR_SUFFIX


# Files that come with a photo or a video under its stem and are no picture any app keeps an XMP
# sidecar for: an iPhone's edit record (IMG_1.AAE beside an edited IMG_1.HEIC) and a camera's
# thumbnail of a video (.THM).  Taken for photos sharing IMG_1.xmp, they kept a renamed photo's
# sidecar, the person's keywords in it, behind, and a deleted photo's keywords in it.
COMPANION_SUFFIXES = frozenset({".aae", ".thm"})


def is_companion(path: str) -> bool:
    """``path`` is a photo's companion file that shares no sidecar (:data:`COMPANION_SUFFIXES`)."""
    return os.path.splitext(path)[1].lower() in COMPANION_SUFFIXES


def stem_files(path: str) -> list[str]:
    """The other regular files of ``path``'s folder and stem that are no sidecar (``IMG_1.JPG``,
    ``IMG_1.CR2``, a RAW tagwatch does not read) nor a companion file (:func:`is_companion`): the
    files a ``photo.xmp`` sidecar may be shared with, for apps that read it for each of them."""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    found = []
    try:
        with os.scandir(folder or ".") as entries:
            for entry in entries:
                if (entry.name != name and os.path.splitext(entry.name)[0] == stem
                        and not is_sidecar(entry.name) and not is_companion(entry.name)
                        and entry.is_file(follow_symlinks=False)):
                    found.append(entry.path)
    except OSError:
        return []
    return sorted(found)


def sidecar_of(path: str, stem_named: bool, spelling: str = SIDECAR_SUFFIX) -> str:
    """The sidecar of the photo ``path``: ``photo.xmp`` (``stem_named``: Lightroom, Capture One) or
    ``photo.jpg.xmp`` (digiKam, darktable, Immich).  The one there is, whatever the case of its
    extension (the lower-case one where there are both), so that a person's ``IMG_1.XMP`` is written
    into and never joined by a second one; where there is none, the name spelled ``spelling``.  The
    one place that decides which file is a photo's sidecar."""
    base = os.path.splitext(path)[0] if stem_named else path
    for suffix in SIDECAR_SPELLINGS:
        if os.path.lexists(base + suffix):
            return base + suffix
    return base + spelling


def sidecars(path: str) -> tuple[str, ...]:
    """The sidecars tagwatch reads for ``path``, in either naming (``write.sidecar``) and either
    spelling: ``photo.jpg.xmp`` (digiKam, darktable, Immich) and ``photo.xmp`` (Lightroom, Capture One)."""
    stem = os.path.splitext(path)[0]
    return tuple(base + suffix for base in dict.fromkeys((path, stem)) for suffix in SIDECAR_SPELLINGS)


def sidecar_there(path: str, stem_named: bool, stat_of: StatOf | None = None) -> bool:
    """Is there a sidecar of ``path`` in the naming tagwatch writes (``stem_named``: ``photo.xmp``),
    in either spelling?  (``stat_of``: as for :func:`sidecar_edited`.)"""
    base = os.path.splitext(path)[0] if stem_named else path
    return any((stat_of or _lstat)(base + suffix) is not None for suffix in SIDECAR_SPELLINGS)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


class LostOnce:
    """A :data:`Lost` that remembers its answer for each photo: :func:`is_settled` asks it of a tagged
    photo, and the pipeline, handed a photo that is not settled, asks again whether the sidecar is
    lost (to record it so): the answer found is passed along, not looked for twice (the store's
    ledger and records, a photo's first bytes)."""

    def __init__(self, lost: Lost) -> None:
        self._lost = lost
        self._found: dict[int, bool] = {}  # row id → lost, as asked

    def __call__(self, row: FileRow, stat_of: StatOf | None) -> bool:
        if row.id not in self._found:
            self._found[row.id] = self._lost(row, stat_of)
        return self._found[row.id]


def _sharers(side: str) -> list[str]:
    """The photos that may share the sidecar ``photo.xmp``: ``photo`` with each image suffix."""
    stem = side[:-len(SIDECAR_SUFFIX)]
    return [stem + spelled for suffix in sorted(IMAGE_SUFFIXES) for spelled in (suffix, suffix.upper())]


def stem_photos(path: str) -> list[str]:
    """The photos of ``path``'s stem (``IMG_1.jpg``, ``IMG_1.CR2``…): those a ``photo.xmp`` serves."""
    return _sharers(os.path.splitext(path)[0] + SIDECAR_SUFFIX)


def restamp(store: Store, paths: Iterable[str]) -> None:
    """tagwatch has just written or moved the sidecar of these photos outside their own write (a
    rename takes it along, a shared one loses a renamed or deleted photo's keywords): their records
    are stamped anew, so that its change is not taken for a person's edit and read again."""
    for path, row in store.files(list(dict.fromkeys(paths))).items():
        if row.state in (DONE, FAILED):
            store.record_file(path, key=row.key, size=row.size, mtime_ns=row.mtime_ns, state=row.state,
                              error=row.error)


def sidecar_edited(row: FileRow, stat_of: StatOf = _lstat, recorded: Recorded | None = None) -> bool:
    """Did a sidecar of the photo change (or appear) after the store last recorded the photo?

    ``stat_of``: the sidecar's lstat (a walk has them from its folder listing; else one each).
    ``recorded`` (the store's rows of paths): a ``photo.xmp`` that two photos of one stem share
    (``IMG_1.jpg`` and ``IMG_1.cr2``) is written by tagwatch for each; it counts as edited only if
    it changed after the latest record of every photo sharing it, so that one photo's write never
    makes the other look edited (which could pass the sidecar back and forth for ever).  Without
    ``recorded``, any change after this photo's record counts."""
    if row.updated is None:
        return False
    for side in sidecars(row.path):
        st = stat_of(side)
        if st is None or st.st_ctime_ns <= row.updated * 1e9:
            continue
        if recorded is not None and side[:-len(SIDECAR_SUFFIX)] != row.path:  # a photo.xmp
            others = recorded([p for p in _sharers(side) if p != row.path])
            if any(o.updated is not None and st.st_ctime_ns <= o.updated * 1e9 for o in others.values()):
                continue  # written by tagwatch for a photo sharing it, and not changed since
        return True
    return False


def is_settled(row: FileRow | None, path: str, st: os.stat_result, *, fingerprint: str | None = None,
               retry_failed: bool = False, stat_of: StatOf = _lstat, recorded: Recorded | None = None,
               vectored: Container[bytes] | None = None, lost: Lost | None = None) -> bool:
    """Nothing to do for ``path``: `tagwatch untag` set it aside, or it and its sidecar are unchanged
    and it is either tagged (with the tag list ``fingerprint`` when given, and with its content key
    among ``vectored`` when given: the keys whose vector of the model in use is cached) or failed
    for a reason a chmod has not cured.  ``lost``: is the sidecar that holds tagwatch's keywords of a
    tagged photo gone (asked only of a photo tagged and unchanged)?

    ``retry_failed`` (``scan``: a person asked) takes failed and set-aside files up again.  A failure
    for want of permission is tried again once a chmod has cured it (the daemon hears of it as an
    attribute event); any other stays failed until the file (or its sidecar) changes.
    """
    if row is None:
        return False
    if row.state == UNTAGGED:
        return not retry_failed
    if not is_unchanged(row, st) or (row.state in (DONE, FAILED) and sidecar_edited(row, stat_of, recorded)):
        return False
    if row.state == DONE:
        if lost is not None and lost(row, stat_of):
            return False
        return ((fingerprint is None or row.tagged_with == fingerprint)
                and (vectored is None or (row.key is not None and row.key in vectored)))
    if row.state == FAILED:
        return not retry_failed and not retried_anyway(row.error, path, st)
    return False
