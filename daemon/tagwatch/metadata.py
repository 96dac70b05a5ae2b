"""Read and write keywords with one long-lived exiftool process, replacing files atomically.

Why exiftool and not iptcinfo3 (rtag's choice): measured on 118 real JPEGs, iptcinfo3 garbled
every non-ASCII keyword, lost other metadata in 15 files, crashed on 5 and left ``photo.jpg~`` beside
every photo; exiftool kept every byte of image data and wrote UTF-8 keywords exactly (docs/design.md).
"""

from __future__ import annotations

import contextlib
import filecmp
import itertools
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from .atomic import Pin, Superseded, create, fsync_folder
from .casefold import fold, folded
from .config import WriteConfig
from .exiftool import ExifTool, FileChanged, MetadataError, StorageError
from .formats import embeddable
from .freshness import SIDECAR_SUFFIX, sidecar_of, stem_files
from .places import GPS_TAGS, LOCATION_FIELDS
from .retry import TRANSIENT_ERRNOS

__all__ = ["DESCRIPTION_FIELDS", "ExifTool", "FileChanged", "FileState", "Filled", "KeywordWriter",
           "Keywords", "MetadataError", "StorageError", "WritePlan"]

log = logging.getLogger(__name__)

TEMP_MARKER = ".tagwatch-tmp"  # our temporary files: hidden, ending with this (or this + ".xmp")
_counter = itertools.count(1)

IPTC, DC, HIERARCHICAL, TAGS_LIST = ("IPTC:Keywords", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject",
                                     "XMP-digiKam:TagsList")
TAGS_LIST_SLASH = "\u2215"  # DIVISION SLASH: a '/' inside a TagsList level, which digiKam does not split on
# A photo's description: the caption goes there only where both are empty (see captions.py)
DESCRIPTION_FIELDS = ("XMP-dc:Description", "IPTC:Caption-Abstract")
# Single-value fields ``plan(fill=...)`` may fill where a photo leaves them empty (exiftool names).
FILLABLE = (*LOCATION_FIELDS, *DESCRIPTION_FIELDS)
# The IPTC IIM field and its XMP twin that readers take as one (MWG: XMP first, else IPTC)
_TWIN_PAIRS = (("IPTC:City", "XMP-photoshop:City"), ("IPTC:Province-State", "XMP-photoshop:State"),
               ("IPTC:Country-PrimaryLocationName", "XMP-photoshop:Country"),
               ("IPTC:Country-PrimaryLocationCode", "XMP-iptcCore:CountryCode"),
               ("IPTC:Caption-Abstract", "XMP-dc:Description"))
TWINS = {**dict(_TWIN_PAIRS), **{xmp: iptc for iptc, xmp in _TWIN_PAIRS}}
# IPTC IIM's byte limits of its free-text datasets (exiftool 12.57's table: it truncates longer
# values, mid-character if need be), and which of them may repeat (a list)
IPTC_LIMITS = {f"IPTC:{name}": limit for name, limit in {
    "Destination": 1024, "ServiceIdentifier": 10, "ProductID": 32, "ObjectName": 64, "EditStatus": 64,
    "SupplementalCategories": 32, "FixtureIdentifier": 32, "Keywords": 64, "ContentLocationName": 64,
    "SpecialInstructions": 256, "ReferenceService": 10, "OriginatingProgram": 32, "ProgramVersion": 10,
    "By-line": 32, "By-lineTitle": 32, "City": 32, "Sub-location": 32, "Province-State": 32,
    "Country-PrimaryLocationCode": 3, "Country-PrimaryLocationName": 64, "OriginalTransmissionReference": 32,
    "Headline": 256, "Credit": 32, "Source": 32, "CopyrightNotice": 128, "Contact": 128,
    "Caption-Abstract": 2000, "LocalCaption": 256, "Writer-Editor": 32, "AudioOutcue": 64, "JobID": 64,
    "MasterDocumentID": 256, "ShortDocumentID": 64, "UniqueDocumentID": 128, "OwnerID": 128, "Prefs": 64,
    "ClassifyState": 64, "SimilarityIndex": 32, "DocumentNotes": 1024, "DocumentHistory": 256,
    "ExifCameraInfo": 4096, "CatalogSets": 256}.items()}
_IPTC_LISTS = frozenset(f"IPTC:{name}" for name in (
    "Destination", "ProductID", "SupplementalCategories", "Keywords", "ContentLocationName",
    "ReferenceService", "By-line", "By-lineTitle", "Contact", "Writer-Editor", "CatalogSets"))
KEYWORD_LIMIT = IPTC_LIMITS["IPTC:Keywords"]
# IPTC 1:90 CodedCharacterSet as exiftool prints it: UTF-8, and ISO 8859-1 designated as G0-G3
# (exiftool reads both right: the latter with ``-charset iptc=Latin``, cp1252, a superset of its text)
_UTF8_SET = "UTF8"
_LATIN1_SETS = frozenset({"ESC , A", "ESC - A", "ESC . A", "ESC / A"})
# exiftool writes ApplicationRecordVersion 4 into every record 2 it creates
_EXIFTOOL_RECORD_VERSION = "4"


def temp_name(path: Path, sidecar: bool = False) -> Path:
    """A hidden temporary file beside ``path``: ``.PID-N.tagwatch-tmp`` (``.xmp`` added for a sidecar,
    since exiftool picks the format of a new file by its name).  No part of the photo's name goes in:
    a 250-byte name would push it past the 255-byte limit, and exiftool reads ``%d``, ``%f``, ``%c``
    in an output name as format codes."""
    return path.with_name(f".{os.getpid()}-{next(_counter)}{TEMP_MARKER}{'.xmp' if sidecar else ''}")


def is_temp_file(name: str) -> bool:
    return name.startswith(".") and name.removesuffix(".xmp").endswith(TEMP_MARKER)


def is_stale_temp_file(name: str) -> bool:
    """One of our temporary files whose writer is gone (killed mid-write), so it is safe to delete.

    The writer's PID is in the name (``.PID-N.tagwatch-tmp``; earlier versions put the photo's name
    first, ``.photo.jpg.PID-N.tagwatch-tmp``); a temp file of a process that still runs, this one
    included, may be a write in flight.
    """
    if not is_temp_file(name):
        return False
    pid = _writer_pid(name)
    return pid is None or _gone(pid)


def remove_if_stale(entry: os.DirEntry[str]) -> bool:
    """Delete ``entry`` if it is a temporary file of ours whose writer is gone (:func:`is_stale_temp_file`),
    saying so in the log; True when it was one (removed, or already removed by another cleaner, or
    not removable, which is logged).  The daemon's start-up scan, ``scan`` and ``untag`` clean up
    after an interrupted write with it."""
    if not (is_stale_temp_file(entry.name) and entry.is_file(follow_symlinks=False)):
        return False
    try:
        os.unlink(entry.path)
    except FileNotFoundError:  # a second cleaner (the daemon, a scan) was first
        return True
    except OSError as exc:
        log.warning("%s: cannot remove this temporary file left by an interrupted write: %s",
                    entry.path, exc.strerror)
        return True
    log.info("%s: removed a temporary file left by an interrupted write", entry.path)
    return True


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (this process and another user's live one have not).

    A process killed but not yet reaped by its parent (a zombie: ``kill -9`` of the daemon, then a
    restart within the second or two its supervisor or a container's init takes to reap it) has
    ended too, though ``kill(pid, 0)`` still succeeds for it: a start-up scan that asked only that
    kept the killed writer's temporary file beside the photo until the next start.  Linux says
    so in ``/proc/PID/stat`` (state ``Z``, or ``X`` while it is being reaped); macOS, which has no
    ``/proc``, in ``ps -o stat=`` (``Z``).  Where neither can be read the process counts as alive:
    a file kept is tidied at a later start, a write in flight deleted is lost."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's: alive, unless a zombie
        pass
    return _process_state(pid) in ("Z", "X")


def _process_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (``R``, ``S``, ``Z``…), None where it cannot be read."""
    if _own_proc():
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                # "PID (comm) S …": comm may hold spaces and parentheses; the state follows the last ")"
                return handle.read().rpartition(b")")[2].split()[0].decode("ascii")
        except FileNotFoundError:  # it answered kill() a moment ago: reaped since
            return "X"
        except (OSError, IndexError, UnicodeDecodeError):
            return None
    import subprocess  # no /proc (macOS, the BSDs): ps, once per temporary file of a PID that answers

    try:
        found = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return found[:1] or None


def _own_proc() -> bool:
    """Is there a ``/proc`` whose numbers are this process's PIDs (not another PID namespace's,
    where ``/proc/PID`` would be some other process)?"""
    try:
        with open("/proc/self/stat", "rb") as handle:
            return int(handle.read().split(b" ", 1)[0]) == os.getpid()
    except (OSError, ValueError):
        return False


def _warm_up_scrap(data: Path) -> Path:
    """Where this process's exiftool warm-up writes its scrap photo: a folder of its own in the data
    folder (``exiftool-warm-up/``), one file per process (its PID in the name).  A temporary folder
    per warm-up was left in /tmp by every daemon that ended while exiftool still wrote (a start that
    failed at once, a kill): a thousand of them after a few days of test runs.  Here the next
    warm-up removes what a process that is gone left (the scrap, exiftool's ``_exiftool_tmp``, our
    temp files), and nothing is written outside the folders the daemon may write."""
    folder = data / "exiftool-warm-up"
    folder.mkdir(mode=0o700, exist_ok=True)
    for entry in folder.iterdir():
        pid = entry.name.split(".", 1)[0]
        if is_stale_temp_file(entry.name) or (pid.isdigit() and _gone(int(pid))):
            entry.unlink(missing_ok=True)
    return folder / f"{os.getpid()}.jpg"


def _writer_pid(name: str) -> int | None:
    """The PID in one of our temporary files' names, None if it has none."""
    try:
        return int(name.removesuffix(".xmp").removesuffix(TEMP_MARKER).rsplit(".", 1)[-1].split("-", 1)[0])
    except ValueError:
        return None


def temp_files_of(folder: Path, pid: int) -> list[Path]:
    """The temporary files the writer process ``pid`` left in ``folder`` when it died mid-write.
    For a writer on another machine (the Ray engine's nodes), whose PID :func:`is_stale_temp_file`
    cannot check here: the caller knows that process is gone."""
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if is_temp_file(e.name) and _writer_pid(e.name) == pid]
    except OSError:
        return []


def _first(value: object) -> str | None:
    """The first value of a field read with every copy (``-a``); None if absent."""
    values = _as_list(value)
    return values[0] if values else None


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _copy_xattrs(source: int, target: Path) -> None:
    """Carry extended attributes (macOS Finder tags and comments on a NAS, POSIX ACLs, SELinux
    labels) of the open file ``source`` over to the new version; what the target file system refuses
    is left behind."""
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(source)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(target, name, os.getxattr(source, name))
        except OSError as exc:
            log.debug("%s: extended attribute %s not kept: %s", target, name, exc.strerror)


@dataclass(frozen=True)
class Keywords:
    """The keywords already in a file, decoded correctly whatever charset wrote them."""

    iptc: tuple[str, ...] = ()
    xmp: tuple[str, ...] = ()  # dc:subject
    hierarchical: tuple[str, ...] = ()  # lr:hierarchicalSubject (Lightroom, digiKam, Immich)
    tags_list: tuple[str, ...] = ()  # digiKam:TagsList (digiKam, Immich read it first)
    latin1_iptc: bool = False  # IPTC text in Latin-1 (undeclared or declared): UTF-8 on our write
    # the IPTC datasets holding non-ASCII text, as that text (exiftool name -> values), written again
    # as UTF-8 when latin1_iptc; why the IPTC must be left as it is ("": it may be written)
    recode: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    iptc_frozen: str = ""
    record_version: str | None = None  # IPTC ApplicationRecordVersion, where present
    trailer_iptc: bool = False  # IPTC Keywords only in a trailer's copy (AFCP), none in the APP13 one
    has_digest: bool = False  # Photoshop IPTCDigest present: refreshed on our write, unless stale
    stale_digest: bool = False  # it no longer matches the IPTC (changed since by another program)
    fields: Mapping[str, str] = field(default_factory=dict, hash=False)  # FILLABLE fields present
    gps: Mapping[str, str] = field(default_factory=dict, hash=False)  # GPS_TAGS present (exiftool -n)
    # exiftool's warning when the embedded XMP cannot be read whole (the XMP fields above are then
    # empty: unknown); such a packet is never rewritten, see KeywordWriter.read
    xmp_error: str = ""
    all: frozenset[str] = field(init=False)  # the flat keywords, IPTC and XMP together

    def __post_init__(self) -> None:
        object.__setattr__(self, "all", frozenset(self.iptc) | frozenset(self.xmp))

    @property
    def iptc_known(self) -> tuple[str, ...]:
        """The IPTC keywords whose text is known, those a field we create may copy: not the non-ASCII
        ones of a charset exiftool misreads (their copy would be mojibake)."""
        if self.iptc_frozen and not self.latin1_iptc:
            return tuple(v for v in self.iptc if v.isascii())
        return self.iptc

    def values(self, tag: str) -> tuple[str, ...]:
        return {IPTC: self.iptc, DC: self.xmp, HIERARCHICAL: self.hierarchical,
                TAGS_LIST: self.tags_list}[tag]


_NO_KEYWORDS = Keywords()


class Filled(NamedTuple):
    """The ledger's record of a field tagwatch filled: the values that are ours (the last one is the
    latest; two while a write is in flight) and what it held before (None: it was absent)."""

    ours: tuple[str, ...]
    previous: str | None


@dataclass(frozen=True)
class FileState:
    """A photo and its sidecar as read before planning: the plan refuses to act if the photo changed.
    ``apart``: the sidecar is another photo's, none of this one's keyword fields (see
    :func:`tagwatch.shared.apart`): ``sidecar`` is then empty, and the plan never writes it."""

    before: os.stat_result
    photo: Keywords
    sidecar: Keywords
    apart: bool = False


def fit(name: str, value: str) -> str:
    """``value`` cut to the field's IPTC byte limit at a character boundary."""
    limit = IPTC_LIMITS.get(name)
    if limit is None or len(value.encode("utf-8")) <= limit:
        return value
    return value.encode("utf-8")[:limit].decode("utf-8", "ignore").rstrip()
_FIELDS = (IPTC, DC, HIERARCHICAL, TAGS_LIST)
# The ledger's record of a keyword field of an existing sidecar is kept under this name, apart from
# the photo's own field of the same name (target "both" writes both, and each needs its own record)
SIDECAR_RECORD = "sidecar "
_SIDECAR_FIELDS = tuple(SIDECAR_RECORD + tag for tag in (DC, HIERARCHICAL, TAGS_LIST))
# the ledger's filled records under these names are untag's (see _created)
KEYWORD_FIELDS = (*_FIELDS, *_SIDECAR_FIELDS)
Expect = tuple[frozenset[str], frozenset[str]]  # (values a field must hold, values it must not)
FieldEdit = tuple[str, list[str], Expect, list[str]]  # (field, exiftool arguments, expectations, final)


def _cp1252_bytes(text: str) -> bytes:
    """The bytes exiftool read as ``text``: cp1252, where the five bytes cp1252 leaves undefined
    (0x81, 0x8D, 0x8F, 0x90, 0x9D, common inside UTF-8 such as Cyrillic U+0441 = D1 81) come through as the
    Latin-1 code points of the same value."""
    out = bytearray()
    for c in text:
        encoded = c.encode("cp1252", "ignore")
        if not encoded and ord(c) > 0xFF:
            raise UnicodeEncodeError("cp1252", text, 0, len(text), "not text exiftool read as cp1252")
        out += encoded or bytes([ord(c)])
    return bytes(out)


def _decode_legacy_iptc(values: dict[str, object]) -> tuple[dict[str, object], bool]:
    """Undo exiftool's Latin (cp1252) reading of IPTC that has no 1:90 charset declaration.

    Decided value by value, as apps that forgot the declaration (UTF-8) and old ones (Latin-1) often
    wrote into the same block: a value that is valid UTF-8 is taken as UTF-8, one that is not stays
    Latin-1 (cp1252), as read.  One block-wide choice turned every UTF-8 keyword into mojibake as soon
    as one Latin-1 caption was there.  Returns the values as the text they really are and whether
    any of them is Latin-1.
    """
    latin1 = False

    def fix(value: object) -> object:
        nonlocal latin1
        if isinstance(value, list):
            return [fix(v) for v in value]
        if not isinstance(value, str) or value.isascii():
            return value
        try:
            return _cp1252_bytes(value).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            latin1 = True
            return value

    return {k: fix(v) for k, v in values.items()}, latin1


def _iptc_charset(iptc: dict[str, object]) -> tuple[dict[str, object], bool, str]:
    """The IPTC values as text, whether it is Latin-1 (to be written again as UTF-8 when 1:90 is set
    to UTF-8 on our write), and why the block must be left as it is ("" if it need not).

    Declared UTF-8 is read as such; declared ISO 8859-1 by exiftool as Latin, right.  Text in
    another declared charset (Latin-2, Cyrillic, ...) exiftool also reads as cp1252, wrongly: no
    UTF-8 version of it can be written, and declaring UTF-8 over its bytes would garble it.
    """
    declared = _first(iptc.get("IPTC:CodedCharacterSet"))
    if declared is None:
        return (*_decode_legacy_iptc(iptc), "")
    text = [s for k, v in iptc.items() if k != "IPTC:CodedCharacterSet" for s in _as_list(v)
            if not s.isascii()]
    if declared == _UTF8_SET or not text:
        return iptc, False, ""
    if declared in _LATIN1_SETS:
        return iptc, True, ""
    return iptc, False, f"its IPTC text is in a character set tagwatch cannot convert to UTF-8 ({declared})"


def _recode(iptc: Mapping[str, object]) -> tuple[dict[str, tuple[str, ...]], str]:
    """The IPTC datasets holding non-ASCII text (exiftool name -> values) that a Latin-1 block's
    conversion writes again, and why the conversion cannot be done ("" if it can): a value that
    would pass its IPTC byte limit in UTF-8 (a Latin-1 letter takes two bytes) would be cut, a
    repeated single dataset would keep one value, and a dataset not known as text is not rewritten."""
    recode = {k: tuple(_as_list(v)) for k, v in iptc.items() if k.startswith("IPTC")
              and k != "IPTC:CodedCharacterSet" and not all(s.isascii() for s in _as_list(v))}
    for name, values in recode.items():
        limit = IPTC_LIMITS.get(name)
        long = next((v for v in values if limit is not None and len(v.encode("utf-8")) > limit), None)
        if limit is None or (len(values) > 1 and name not in _IPTC_LISTS):
            return recode, f"its IPTC is in Latin-1 and its {name} cannot be written again as UTF-8"
        if long is not None:
            shown = long if len(long) <= 40 else long[:40] + "…"  # not the value found: cut for the line
            return recode, (f"its IPTC is in Latin-1 and {name} '{shown}' would be longer than IPTC's "
                            f"{limit} bytes in UTF-8, so it cannot be converted without cutting it")
    return recode, ""


Entry = tuple[str, str]  # (keyword, hierarchical path); the path is the keyword itself when flat


@dataclass(frozen=True)
class Forms:
    """How a keyword is spelled in each field: flat in IPTC and dc:subject, as its path (a rich tag
    list's parents) under the configured prefix in the hierarchical ones (``auto|animal|dog`` in
    lr:hierarchicalSubject, ``auto/animal/dog`` in digiKam's TagsList).

    ``former``: the other prefixes tagwatch wrote paths under before the setting changed (the
    store's :meth:`~tagwatch.store.Store.prefixes`).  A keyword's path under one of them is found
    ours and taken out as the current spelling is (:meth:`spellings`), never written: a plan moves it
    to the prefix in use (:meth:`outdated`), untag takes it out."""

    prefix: str = ""
    former: tuple[str, ...] = ()

    def spell(self, tag: str, keyword: str, path: str | None = None) -> str:
        if tag in (IPTC, DC):
            return keyword
        nested = path is not None and path != keyword  # path levels are keywords without '|'
        levels = path.split("|") if nested and path is not None else [keyword]
        if tag == HIERARCHICAL:
            return "|".join([self.prefix, *levels] if self.prefix else levels)
        # digiKam splits TagsList on '/': a '/' inside a level (AC/DC, Biel/Bienne) would make false
        # levels, so it is written as the look-alike DIVISION SLASH there (see docs/keywords.md)
        levels = [*(self.prefix.split("|") if self.prefix else ()), *levels]
        return "/".join(level.replace("/", TAGS_LIST_SLASH) for level in levels)

    def spellings(self, tag: str, keyword: str, path: str | None = None) -> tuple[str, ...]:
        """:meth:`spell`, and in TagsList also the spelling tagwatch wrote before it kept a '/' inside
        a level (``band/AC/DC``, split by digiKam), each also under every :attr:`former` prefix: what
        is taken out, or found ours, is any of them."""
        own = self._spellings(tag, keyword, path)
        if not self.former or tag in (IPTC, DC):
            return own
        return tuple(dict.fromkeys([*own, *(v for prefix in self.former
                                            for v in Forms(prefix)._spellings(tag, keyword, path))]))

    def _spellings(self, tag: str, keyword: str, path: str | None) -> tuple[str, ...]:
        """:meth:`spellings` under this prefix alone."""
        spelled = self.spell(tag, keyword, path)
        if tag != TAGS_LIST:
            return (spelled,)
        body = path.replace("|", "/") if path is not None and path != keyword else keyword
        before = f"{self.prefix.replace('|', '/')}/{body}" if self.prefix else body
        return (spelled,) if before == spelled else (spelled, before)

    def outdated(self, keyword: str, existing: Keywords, path: str | None = None) -> bool:
        """Does a hierarchical field of ``existing`` hold ``keyword``'s path under a :attr:`former`
        prefix (and not as it is spelled now)?  Such a keyword of ours is re-spelled under the prefix
        in use, as a keyword whose parent changed is."""
        return any(value in existing.values(tag) for tag in (HIERARCHICAL, TAGS_LIST)
                   for value in self.spellings(tag, keyword, path)
                   if value not in self._spellings(tag, keyword, path))

    def ours(self, tag: str, paths: Mapping[str, Sequence[str]]) -> set[str]:
        """Every value in ``tag`` of these keywords (each → the paths it was written under)."""
        return {v for keyword, where in paths.items() for p in where for v in self.spellings(tag, keyword, p)}

    def present(self, keyword: str, existing: Keywords, path: str | None = None) -> bool:
        return any(value in existing.values(tag) for tag in _FIELDS
                   for value in self.spellings(tag, keyword, path))


@dataclass(frozen=True)
class Change:
    """What a plan does to every keyword field: entries to add and to take out, or (overwrite) the
    entries the fields must hold exactly.  A value both added and taken out stays: a keyword whose
    parent changed keeps its flat form and swaps only its hierarchical one."""

    add: tuple[Entry, ...] = ()
    remove: tuple[Entry, ...] = ()
    overwrite: bool = False
    filed: frozenset[tuple[str, str]] = frozenset()  # (field, keyword): filed there by the person

    @property
    def nested(self) -> bool:
        """Some keyword added has a parent, so the hierarchical field is worth writing."""
        return any(path != keyword for keyword, path in self.add)

    def values(self, forms: Forms, tag: str) -> tuple[list[str], list[str]]:
        add = list(dict.fromkeys(forms.spell(tag, k, p) for k, p in self.add if (tag, k) not in self.filed))
        remove = [v for v in dict.fromkeys(v for k, p in self.remove for v in forms.spellings(tag, k, p))
                  if v not in add]
        return add, remove

    def removal_only(self) -> Change:
        return Change((), self.remove)


@dataclass(frozen=True)
class Edit:
    """One file to rewrite, the photo itself or its sidecar, and what it must hold afterwards."""

    path: Path
    before: os.stat_result | None  # None: a sidecar that does not exist yet
    args: list[str]
    expect: dict[str, Expect]  # "Group:Tag" -> (values it must hold, values it must not)
    is_photo: bool
    fields: dict[str, str | None] = field(default_factory=dict)  # filled field → value (None: absent)
    note: str = ""  # what the write could not do, logged once it is done
    final: dict[str, list[str]] = field(default_factory=dict)  # keyword field → its values afterwards


@dataclass(frozen=True)
class WritePlan:
    path: Path
    before: os.stat_result  # the photo as it was read; the write is abandoned if it changes
    edits: list[Edit]  # empty when every file already holds what it should
    keywords: list[str]  # the predictions the files must carry afterwards
    ours: list[str]  # keywords that were nowhere before: these, and only these, become ours
    removed: list[str] = field(default_factory=list)  # our own keywords taken out (sync, untag)
    dropped: list[str] = field(default_factory=list)  # a person's keywords overwrite takes out
    restored: list[str] = field(default_factory=list)  # a person's keywords untag puts back
    unrestored: list[str] = field(default_factory=list)  # those it could not: the ledger keeps them
    # keyword → the hierarchical paths it is written under afterwards, for ``ours`` and ``respelled``
    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    respelled: list[str] = field(default_factory=list)  # our keywords whose parent changed
    # filled fields: the ledger's record to keep during the write (ahead) and after it (None: forget)
    fills_ahead: dict[str, Filled] = field(default_factory=dict)
    fills: dict[str, Filled | None] = field(default_factory=dict)

    @property
    def changes(self) -> bool:
        return bool(self.edits)


class KeywordWriter:
    """Puts keywords where photo apps look for them, in the photo (JPEG) and/or an XMP sidecar.

    Embedded: IPTC Keywords (UTF-8, declared) and XMP dc:subject, plus lr:hierarchicalSubject and
    digiKam TagsList when the file already has them or a hierarchy prefix is configured, because
    digiKam and Immich read those first and would not show keywords written elsewhere.  Sidecars get
    the same XMP fields.  Nothing else in any file changes, and a file is replaced only whole.
    """

    def __init__(self, exiftool: ExifTool, settings: WriteConfig | None = None) -> None:
        self.exiftool = exiftool
        self.settings = settings or WriteConfig()
        self.forms = Forms(self.settings.hierarchy_prefix)

    def use_prefix(self, prefix: str, recorded: Iterable[str] = ()) -> None:
        """Spell paths under ``prefix`` from now on, and find ours under every other ``recorded`` one
        (the prefixes tagwatch wrote under before, :meth:`tagwatch.store.Store.prefixes`): a changed
        ``[write] hierarchy_prefix`` moves tagwatch's paths, and untag takes out every one of them."""
        self.settings = replace(self.settings, hierarchy_prefix=prefix)
        self.forms = Forms(prefix, tuple(p for p in dict.fromkeys(recorded) if p != prefix))

    # -- reading -------------------------------------------------------------------------------

    # Every copy of a field (-a, -G1:4: a field written twice, a second IPTC record) and exiftool's
    # warnings, which say whether the XMP could be read whole
    _READ = ("-j", "-a", "-G1:4", "-charset", "iptc=Latin", "-IPTC:all", f"-{DC}", f"-{HIERARCHICAL}",
             f"-{TAGS_LIST}", "-Photoshop:IPTCDigest", "-File:CurrentIPTCDigest", "-ExifTool:Warning",
             "-ExifTool:Error",
             *(f"-{name}" for name in FILLABLE if not name.startswith("IPTC:")),
             *(f"-{name}#" for name in GPS_TAGS))

    def read(self, path: Path) -> Keywords:
        """The keywords in ``path`` (every copy of each field), and whether its XMP can be rewritten.

        An XMP packet exiftool cannot read whole (a format error such as a missing closing tag, an
        encoding error, a second packet, an incomplete extension: any XMP warning it does not call
        minor, and "Empty XMP", which is what it says of a packet that is not XML at all) would be
        rebuilt on write from the part it could read, and the rest, a person's keywords included,
        would be gone.  Such a packet is left exactly as it is: keywords go to IPTC only, and the
        write says so.  Minor XMP errors found only when writing are handled in :meth:`_replace`.
        """
        out, err = self.exiftool.execute(*self._READ, str(path))
        try:
            record = json.loads(out, parse_float=str, parse_int=str)[0] if out else {}
        except (ValueError, IndexError):
            record = {}
        if not record:
            raise MetadataError(_first_line(err) or "exiftool could not read the file")
        return _keywords(_fold(record))

    def read_many(self, paths: Sequence[Path]) -> dict[Path, Keywords | str]:
        """:meth:`read` for many files in one exiftool command (a page of the review grid: one round
        trip instead of one per photo); a file that cannot be read maps to the reason."""
        if not paths:
            return {}
        out, err = self.exiftool.execute(*self._READ, *(str(p) for p in paths))
        try:
            records = json.loads(out, parse_float=str, parse_int=str) if out else []
        except ValueError:
            records = []
        found: dict[Path, Keywords | str] = {}
        for record in records:
            source = Path(str(record.get("SourceFile", "")))
            try:
                found[source] = _keywords(_fold(record))
            except MetadataError as exc:
                found[source] = str(exc)
        reason = _first_line(err) or "exiftool could not read the file"
        return {path: found.get(path, reason) for path in paths}

    def _record(self, path: Path, *args: str) -> dict[str, object]:
        """exiftool's JSON record for ``args`` (tags to read, options), with exiftool's warnings as
        "ExifTool:Warning".  Every copy of a tag is read (a field written twice, or a second IPTC
        record) and folded into one list under ``Group:Tag``, values in file order."""
        out, err = self.exiftool.execute("-j", "-a", "-G1:4", "-charset", "iptc=Latin", *args,
                                         "-ExifTool:Warning", "-ExifTool:Error", str(path))
        try:
            raw = json.loads(out, parse_float=str, parse_int=str)[0] if out else {}
        except (ValueError, IndexError):
            raw = {}
        if not raw:
            raise MetadataError(_first_line(err) or "exiftool could not read the file")
        record = _fold(raw)
        if "ExifTool:Error" in record:
            raise MetadataError(str(_as_list(record["ExifTool:Error"])[0]))
        return record

    @property
    def stem_named(self) -> bool:
        """Sidecars are named ``photo.xmp`` (Lightroom, Capture One), not ``photo.jpg.xmp``."""
        return self.settings.sidecar == "photo.xmp"

    def sidecar_for(self, path: Path, spelling: str = SIDECAR_SUFFIX) -> Path:
        """``photo.jpg.xmp`` (digiKam, darktable, Immich) or ``photo.xmp`` (Lightroom, Capture One),
        as it is spelled where there is one (``IMG_1.XMP``): :func:`tagwatch.freshness.sidecar_of`."""
        return Path(sidecar_of(str(path), self.stem_named, spelling))

    def sidecar_gps(self, path: Path, sidecar: Keywords) -> Mapping[str, str]:
        """The GPS a geotagger wrote beside the photo: its sidecar's (``sidecar``, as read), else the
        other naming's, read only where that file exists: Lightroom geotags ``IMG.xmp``, digiKam
        ``IMG.jpg.xmp``, whichever ``[write] sidecar`` says, and freshness notices an edit of either."""
        if sidecar.gps:
            return sidecar.gps
        other = self._other_naming(path)
        try:  # one lstat where there is no such file, as for most photos
            if other == path or not stat.S_ISREG(other.lstat().st_mode):
                return {}
        except OSError:
            return {}
        try:
            return self.read(other).gps
        except MetadataError:
            return {}

    def _other_naming(self, path: Path) -> Path:
        """The sidecar the other ``[write] sidecar`` setting gives ``path`` (spelled as it is there)."""
        return Path(sidecar_of(str(path), not self.stem_named))

    def other_sidecar(self, path: Path) -> tuple[Path, Keywords] | None:
        """The sidecar of the other naming, read, where tagwatch may have written into it before
        ``[write] sidecar`` changed: untag reaches it too (:meth:`plan_untag`), or its keywords would stay
        there with no ledger left to take them out.  None where there is no such regular file, where
        it cannot be read whole (never rewritten then), or where it may be another photo's: ``IMG_1.xmp``
        while another picture has the stem ``IMG_1`` (a RAW+JPEG pair's shared sidecar)."""
        other = self._other_naming(path)
        try:  # one lstat where there is no such file, as for most photos
            if other == path or not stat.S_ISREG(other.lstat().st_mode):
                return None
        except OSError:
            return None
        if not self.stem_named and stem_files(str(path)):  # the other naming is photo.xmp: shared
            return None
        try:
            keywords = self.read(other)
        except StorageError:  # exiftool's or the disk's passing fault, ExifToolFault's too
            raise  # untag fails and is tried again: it never forgets what may be there
        except MetadataError:
            return None
        return None if keywords.xmp_error else (other, keywords)

    def embeds(self, path: Path) -> bool:
        """Keywords go into the photo itself: a JPEG by its bytes and its name (a PNG named
        ``.jpg`` is a PNG, see :func:`~tagwatch.formats.embeddable`), unless the target is sidecar.
        :meth:`destinations`' first answer, so that the rule is stated once."""
        return self.destinations(path)[0]

    def uses_sidecar(self, path: Path) -> bool:
        """Keywords go into the photo's XMP sidecar: every file but an embeddable JPEG, and that too
        unless the target is embedded only."""
        return self.settings.target != "embedded" or not embeddable(path)

    def destinations(self, path: Path) -> tuple[bool, bool]:
        """(:meth:`embeds`, :meth:`uses_sidecar`) from one look at a JPEG's first bytes: the log line
        and the review page that say where a photo's keywords are need both, and asking each read
        the file twice."""
        if self.settings.target == "sidecar":
            return False, True  # nothing read: every photo's keywords go into its sidecar
        jpeg = embeddable(path)
        return jpeg, self.settings.target != "embedded" or not jpeg

    # -- planning ------------------------------------------------------------------------------

    def plan(self, path: Path, keywords: list[str], before: os.stat_result | None = None,
             mode: str = "append", owned: Sequence[str] = (), *, paths: Mapping[str, str] | None = None,
             owned_paths: Mapping[str, Sequence[str]] | None = None,
             withdraw: Collection[str] = (), state: FileState | None = None,
             fill: Mapping[str, str | None] | None = None,
             filled: Mapping[str, Filled] | None = None, taken: Sequence[str] = (),
             side_keep: Collection[str] = ()) -> WritePlan:
        """Work out what tagging ``path`` with ``keywords`` changes, without changing anything yet.

        ``mode``: "append" adds; "sync" also takes out ``owned`` keywords (those tagwatch added
        earlier) that are no longer predicted; "overwrite" makes the keyword fields hold exactly
        ``keywords``.  ``before`` is the photo's stat when its pixels were read (default: now); if
        the photo is no longer that file, the predictions are about another picture and
        :class:`FileChanged` says so.

        Hierarchy: ``paths`` gives the tag list's path (``animal|dog|golden retriever``) of the
        keywords it knows (others are flat); ``owned_paths`` the paths each owned keyword was
        written under (the ledger's; absent: flat).  An owned keyword whose path changed is
        re-spelled in the hierarchical fields, in every mode.  ``withdraw``: owned keywords to take
        out whatever the mode (an override's ``remove``, a place the photo is no longer at).

        ``fill``: single-value fields (:data:`FILLABLE`) → the value tagwatch wants there, written only
        where the field is empty or holds our own earlier value (``filled``, the ledger's record);
        None takes ours out again, putting back what was there.  ``state``: the files as already
        read by :meth:`inspect` (default: read now).  ``taken``: the person's keywords earlier
        overwrites took out of the file (the ledger's removed rows), so that the record of a flat field
        an older build overwrote, which has none, says they were there (:func:`_overwritten`).
        ``side_keep``: keywords taken out of the photo itself but left in its sidecar, which another
        photo sharing it has them in from tagwatch (:meth:`tagwatch.writeback.Writeback._beside`).
        """
        paths = paths or {}
        owned_paths = owned_paths or {}
        before, photo, sidecar = ((state.before, state.photo, state.sidecar) if state is not None
                                  else self._state(path, before))
        apart = state is not None and state.apart
        files = (photo, sidecar)
        new = {k: paths.get(k, k) for k in keywords}
        had = {o: tuple(owned_paths.get(o) or (o,)) for o in owned}

        def present(keyword: str, where: str | None) -> bool:
            return any(self.forms.present(keyword, existing, where) for existing in files)

        mine = {tag: self.forms.ours(tag, had) for tag in _FIELDS}

        # the person's flat keywords, folded: their "RED" (or a decomposed "Élise") is already there
        theirs = folded(v for v in photo.all | sidecar.all if v not in owned)

        def persons(keyword: str) -> bool:  # in the file in a form that is not one of ours
            return fold(keyword) in theirs or any(
                value in existing.values(tag) and value not in mine[tag]
                for tag in _FIELDS for value in [self.forms.spell(tag, keyword, new[keyword])]
                for existing in files)

        ours = [k for k in keywords if not (present(k, new[k]) if k in owned else persons(k))]

        def filed(tag: str, keyword: str) -> bool:  # ours, re-filed there under a parent of theirs
            sep = "|" if tag == HIERARCHICAL else "/"
            values = [v for existing in files for v in existing.values(tag)]
            return self.forms.spell(tag, keyword, new[keyword]) not in values and any(
                sep in v and v.rsplit(sep, 1)[1].replace(TAGS_LIST_SLASH, "/") == keyword
                and v not in mine[tag] for v in values)

        # A keyword of ours a person re-filed under a parent of theirs (digiKam, Lightroom: green
        # dragged under "My colours") stays filed there: our path is not put back beside theirs
        refiled = frozenset((tag, k) for k in keywords if k in owned and new[k] != k
                            for tag in (HIERARCHICAL, TAGS_LIST) if filed(tag, k))
        # A keyword of ours the tag list now spells otherwise ("circle" → "Circle") is the same
        # keyword: the new spelling replaces ours in every mode, as a new path does; append kept both
        spelt = folded(new)
        gone = [o for o in owned if o not in new and (mode in ("sync", "overwrite") or o in withdraw
                                                      or fold(o) in spelt)]
        removed = [o for o in gone if any(present(o, p) for p in had[o])]
        targets = {o: new[o] if o in new else paths.get(o) for o in owned if o not in gone}
        respelled = {o: p for o, p in targets.items() if p is not None and set(had[o]) != {p}}
        if self.forms.former:  # ours still under a prefix of before: moved to the one in use
            respelled |= {o: had[o][0] if p is None else p for o, p in targets.items()
                          if o not in respelled and (p is not None or len(had[o]) == 1)
                          and any(self.forms.outdated(o, existing, q) for existing in files for q in had[o])}
        dropped = overwritten(photo.all | sidecar.all, keywords, owned) if mode == "overwrite" else []
        kept = [(o, p) for o, p in respelled.items()
                if o not in new and any(present(o, q) for q in had[o])]  # append keeps unpredicted ours
        # A predicted keyword the person has is theirs in every field: no path or field of ours is
        # added to it (untag could not tell it from theirs), unless overwrite sets every field
        added = keywords if mode == "overwrite" else [k for k in keywords if k in owned or k in ours]
        change = Change(tuple((k, new[k]) for k in added) + tuple(kept),
                        tuple((o, p) for o in [*removed, *respelled] for p in had[o]),
                        overwrite=mode == "overwrite", filed=refiled if mode != "overwrite" else frozenset())
        embeds = self.embeds(path)  # filled fields go where the keywords go: the photo, else its sidecar
        if embeds and photo.xmp_error:  # a packet we cannot read whole is never rewritten (see read)
            fill = {n: v for n, v in (fill or {}).items() if n.startswith("IPTC:")}
        assign, ahead, after = _fills(photo if embeds else sidecar, fill or {}, filled or {}, not embeds)
        edits = self._edits(path, before, photo, sidecar, change, *((assign, {}) if embeds else ({}, assign)),
                            apart=apart, side_keep=side_keep)
        written = {k: (new[k],) for k in ours} | {o: (p,) for o, p in respelled.items()}
        records = self._field_records(edits, photo, sidecar, owned_paths={**had, **written},
                                      filled=filled or {}, overwrite=change.overwrite,
                                      taken=[k for k in unclaimed(taken, filled or {})
                                             if k not in photo.all | sidecar.all])
        ahead |= records
        after |= records
        return WritePlan(path, before, edits, list(keywords), ours, removed, dropped, paths=written,
                         respelled=list(respelled), fills_ahead=ahead, fills=after)

    def _field_records(self, edits: list[Edit], photo: Keywords, sidecar: Keywords,
                       owned_paths: Mapping[str, Sequence[str]], filled: Mapping[str, Filled],
                       overwrite: bool, taken: Sequence[str] = ()) -> dict[str, Filled]:
        """The ledger's records of the keyword fields this write creates or overwrites, in the photo
        and in a sidecar that was there before, so that untag can give each field back as it was
        (see :func:`_undone`): a new field starts with the person's keywords from the others (see
        :meth:`_photo_edit`, :meth:`_xmp_fields`), and overwrite takes a person's keywords out of
        each field, in an order and a presence of its own (:func:`_overwritten`).  A sidecar's fields
        are recorded under their own names (:func:`_record_name`).  A sidecar tagwatch creates gets
        none: untag empties it of our keywords and keeps it, with the person's it started with.
        ``owned_paths``: every keyword of ours, before and after the write → its paths; ``taken``: the
        person's keywords an earlier overwrite took out that no record says where from (an older
        build wrote none): each flat field overwrite sets records them as held before."""
        records: dict[str, Filled] = {}
        for edit in edits:
            if not edit.is_photo and edit.before is None:
                continue
            existing = photo if edit.is_photo else sidecar
            for tag, final in edit.final.items():
                name = _record_name(tag, edit.is_photo)
                ours = self.forms.ours(tag, owned_paths)
                record = (_overwritten(tag, existing.values(tag), final, ours, filled.get(name),
                                       taken if tag in (IPTC, DC) else ()) if overwrite
                          else _created(tag, existing.values(tag), final, ours, filled.get(name)))
                if record is not None:
                    records[name] = record
        return records

    def plan_untag(self, path: Path, owned: list[str], dropped: list[str],
                   owned_paths: Mapping[str, Sequence[str]] | None = None,
                   filled: Mapping[str, Filled] | None = None, state: FileState | None = None,
                   side_keep: Collection[str] = (), other_naming: bool = False) -> WritePlan:
        """Take out exactly the keywords tagwatch added (under every path the ledger recorded), put
        back those overwrite took out, and give each field tagwatch filled, created or overwrote (in
        the photo and in its sidecar) its earlier value.  The plan's ``fills``: None for each record
        of ``filled``, but a sidecar's keyword field that stays (another photo sharing the sidecar
        has keywords in it from tagwatch) keeps its record, as it now stands, for that photo's untag.
        ``state``: the files as already read (default: read now); a deleted photo's sidecar alone,
        whose photo cannot be read (:meth:`tagwatch.writeback.Writeback.release`).  ``side_keep``:
        keywords of ``owned`` taken out of the photo itself only: the sidecar it shares keeps them for
        another photo that has them there from tagwatch."""
        owned_paths = owned_paths or {}
        before, photo, sidecar = ((state.before, state.photo, state.sidecar) if state is not None
                                  else self._state(path, None))
        apart = state is not None and state.apart
        had = {o: tuple(owned_paths.get(o) or (o,)) for o in owned}
        side_had = {o: p for o, p in had.items() if o not in side_keep}

        def present(keyword: str, where: str | None) -> bool:
            return self.forms.present(keyword, photo, where) or (
                keyword not in side_keep and self.forms.present(keyword, sidecar, where))

        removed = [o for o in owned if any(present(o, p) for p in had[o])]
        # Ours that neither the photo nor its sidecar holds may be in the sidecar of the naming used
        # before [write] sidecar changed: those, and only those, come out of it (a keyword of ours
        # that is here too may be a person's own in another app's sidecar: darktable's beside Lightroom's)
        # (``other_naming``: untag's own plan only; not a keyword kept in the shared sidecar for the
        # other photo, nor a mate's plan of a photo renamed or deleted, which never wrote there)
        missing = [o for o in owned if o not in removed and o not in side_keep]
        other = self.other_sidecar(path) if other_naming and missing else None
        stray = [o for o in missing if other is not None and any(self.forms.present(o, other[1], p)
                                                                 for p in had[o])]
        removed += stray
        restored = [k for k in dropped if not present(k, None)]
        filled = filled or {}
        # Put back flat, into IPTC Keywords and dc:subject; a hierarchical field never gets a person's
        # keyword under our prefix (auto|Anna): each one's values are set in the loop below
        change = Change(tuple((k, k) for k in restored), tuple((o, p) for o in removed for p in had[o]))
        # those no record places (an older build overwrote the photo) go into every flat field, a
        # field recorded as created too: a keyword untag says it restores must end up in the file
        anywhere = unclaimed(restored, filled)
        flat = Forms()
        assign, side = ({name: record.previous for name, record in filled.items()
                         if name not in KEYWORD_FIELDS and existing.fields.get(name) in record.ours
                         and not (existing is sidecar and name.startswith("IPTC:"))}
                        for existing in (photo, sidecar))
        exact: dict[bool, dict[str, list[str]]] = {True: {}, False: {}}  # photo?: its fields' values
        fills: dict[str, Filled | None] = dict.fromkeys(filled)
        for is_photo, existing in ((True, photo), (False, sidecar)):
            for tag in _FIELDS:
                name = _record_name(tag, is_photo)
                record = filled.get(name)
                current = existing.values(tag)
                ours = self.forms.ours(tag, had if is_photo else side_had)
                if record is None:
                    if tag in (HIERARCHICAL, TAGS_LIST) and restored:
                        # No record (an older build wrote it): the person's keywords put back join it
                        # flat, as Lightroom files a flat keyword, where it keeps a value of theirs;
                        # emptied of ours, it goes (an older build created it, or overwrite emptied it)
                        left = [v for v in current if v not in ours]
                        back = [flat.spell(tag, k, k) for k in restored] if left else []
                        exact[is_photo][tag] = [*left, *(v for v in dict.fromkeys(back) if v not in left)]
                    continue
                undone = _undone(record, current, ours)
                if tag in (IPTC, DC):
                    undone += [k for k in anywhere if k not in undone]
                elif undone and record.previous is None:
                    # a field we created that stays (a photo sharing the sidecar has keywords in it):
                    # the person's keywords put back join their copies there, flat copies themselves
                    back = [v for k in restored if (v := flat.spell(tag, k, k)) not in undone]
                    undone += back
                    record = Filled((*record.ours, *back), None)
                if undone != list(current):
                    exact[is_photo][tag] = undone
                if undone and not is_photo:  # what the photos sharing the sidecar give back on their untag
                    fills[name] = record
        edits = self._edits(path, before, photo, sidecar, change, assign, side, exact[True], exact[False],
                            apart=apart, side_keep=side_keep)
        if other is not None and stray:
            edits += self._other_edit(other, Change((), tuple((o, p) for o in stray for p in had[o])))
        # said restored only where it is in a flat field afterwards (the log line, the ledger's rows)
        back = {v for edit in edits for tag in (IPTC, DC) for v in edit.final.get(tag, ())}
        missed = [k for k in restored if k not in back]
        if missed:
            log.warning("%s: cannot put back %s, which overwrite took out", path, ", ".join(missed))
        return WritePlan(path, before, edits, [], [], removed, [], [k for k in restored if k in back],
                         fills=fills, unrestored=missed)

    def absent(self, state: FileState, keywords: Mapping[str, Sequence[str]]) -> list[str]:
        """Which of ``keywords`` (each → the hierarchical paths it was written under; empty: flat)
        are in no keyword field of the photo or its sidecar: not flat in IPTC or dc:subject, nor
        under any of those paths, nor flat, in lr:hierarchicalSubject or TagsList.  Exact values:
        a keyword a person re-spelled ("Dog" for our "dog") is theirs, and ours is gone."""
        return [keyword for keyword, paths in keywords.items()
                if not any(self.forms.present(keyword, existing, where)
                           for existing in (state.photo, state.sidecar) for where in (*paths, None))]

    def inspect(self, path: Path, before: os.stat_result | None = None, apart: bool = False) -> FileState:
        """Read the photo and its sidecar once, for a caller that needs their metadata (GPS) to
        decide what to plan; :class:`FileChanged` if the photo is no longer ``before``.  ``apart``:
        the sidecar is another photo's (see :class:`FileState`), not read."""
        return FileState(*self._state(path, before, apart), apart)

    def _state(self, path: Path, before: os.stat_result | None, apart: bool = False
               ) -> tuple[os.stat_result, Keywords, Keywords]:
        now = path.lstat()
        if stat.S_ISLNK(now.st_mode):
            raise MetadataError("a symbolic link; tagwatch writes only into regular files (tag its target)")
        if before is not None and _changed(before, now):
            raise FileChanged("the file changed since it was read; will retry")
        photo = self.read(path)
        sidecar = _NO_KEYWORDS
        if apart:
            return now, photo, sidecar
        side = self.sidecar_for(path)
        if side.is_symlink():
            raise MetadataError(f"its sidecar {side.name} is a symbolic link; tagwatch leaves it alone")
        if side.exists():
            try:
                sidecar = self.read(side)
            except MetadataError as exc:
                raise MetadataError(f"its sidecar {side.name} cannot be read ({exc})") from None
            if sidecar.xmp_error:  # a sidecar is all XMP: rewriting it would lose what is not read
                raise MetadataError(f"its sidecar {side.name} cannot be read whole ({sidecar.xmp_error}); "
                                    "tagwatch leaves it alone")
        return now, photo, sidecar

    def _edits(self, path: Path, before: os.stat_result, photo: Keywords, sidecar: Keywords,
               change: Change, assign: Mapping[str, str | None] | None = None,
               side_assign: Mapping[str, str | None] | None = None,
               exact: Mapping[str, list[str]] | None = None,
               side_exact: Mapping[str, list[str]] | None = None, *, apart: bool = False,
               side_keep: Collection[str] = ()) -> list[Edit]:
        """The photo's and the sidecar's edits.  Keywords are added only where the target says;
        removals reach every place tagwatch may have written (the target may have changed since; the
        sidecar's naming: :meth:`plan_untag`), but for ``apart`` the sidecar is another photo's (see
        :class:`FileState`) and is not touched, and ``side_keep`` stay in the sidecar (another photo
        sharing it has them there).
        ``assign``, ``side_assign``: filled fields to set (None: delete) in the photo, in the sidecar;
        ``exact``, ``side_exact``: the photo's, the sidecar's keyword fields to set to exactly these
        values (none: delete)."""
        edits: list[Edit] = []
        # The bytes decide, not only the name: exiftool refuses to write a PNG named .jpg (or a
        # JPEG named .png), so such a file is never edited itself and gets a sidecar like any PNG
        can_embed = embeddable(path)
        if can_embed:
            embedded = change if self.settings.target != "sidecar" else change.removal_only()
            edit = self._photo_edit(path, before, photo, embedded, assign or {}, exact or {})
            if edit is not None:
                edits.append(edit)
        side = self.sidecar_for(path)
        uses = self.settings.target != "embedded" or not can_embed
        if side_keep:
            change = replace(change, remove=tuple((k, p) for k, p in change.remove if k not in side_keep))
        if not apart and (uses or side.exists() or side_assign):
            sidecar_before = side.lstat() if side.exists() else None
            # A new sidecar starts with the photo's own keywords: apps that read the sidecar instead
            # of the photo must still see what a person tagged.
            seed = None if sidecar_before is not None else Keywords(
                xmp=tuple(dict.fromkeys(photo.xmp + photo.iptc_known)), hierarchical=photo.hierarchical,
                tags_list=photo.tags_list)
            # sidecar=uses: the lr:hierarchicalSubject every sidecar of ours carries is made only in
            # one that gets keywords; an embedded JPEG's (darktable's p.jpg.xmp) gets our removals
            # alone, and was rewritten with a copy of the person's keywords when there were none
            fields = self._xmp_fields(sidecar, change if uses else change.removal_only(), sidecar=uses,
                                      seed=seed, exact=side_exact if sidecar_before is not None else None)
            xmp_assign = {name: value for name, value in (side_assign or {}).items()
                          if not name.startswith("IPTC:")}
            args = [a for f in fields for a in f[1]] + [f"-{n}={v or ''}" for n, v in xmp_assign.items()]
            if args:
                edits.append(Edit(side, sidecar_before, args, {f[0]: f[2] for f in fields}, False,
                                  xmp_assign, final={f[0]: f[3] for f in fields}))
        return edits

    def _other_edit(self, other: tuple[Path, Keywords], change: Change) -> list[Edit]:
        """The removals ``change`` makes in the sidecar of the other naming (:meth:`other_sidecar`)."""
        fields = self._xmp_fields(other[1], change, sidecar=True)
        args = [a for f in fields for a in f[1]]
        if not args:
            return []
        return [Edit(other[0], other[0].lstat(), args, {f[0]: f[2] for f in fields}, False,
                     final={f[0]: f[3] for f in fields})]

    def refuses(self, photo: Path, st: os.stat_result) -> str | None:
        """Why a write of keywords into ``photo`` (as ``st`` finds it) would be refused, or None: a
        photo whose keywords go into its sidecar is never written itself, and a hard-linked one with
        ``target = "both"`` still gets its sidecar (see :meth:`refusal`).  A dry run says so, and the
        review page, instead of promising a correction that the write will refuse."""
        if not self.embeds(photo):
            return None
        if st.st_nlink > 1 and self.settings.target == "both":
            return None
        return self.refusal(st)

    def refusal(self, st: os.stat_result) -> str | None:
        """Why a photo cannot take keywords into itself (a write replaces the file), or None: the
        write refuses it, and a dry run says so instead of promising what the scan will not do."""
        if st.st_nlink > 1:
            return (f"the file has {st.st_nlink} hard links; replacing it would split them into separate "
                    "files, so it is left alone (with [write] target = \"sidecar\" or \"both\" its keywords "
                    "go into a sidecar)")
        if not st.st_mode & 0o222:
            return "the file is read-only (no write permission); tagwatch leaves it alone"
        return None

    def _photo_edit(self, path: Path, before: os.stat_result, existing: Keywords,
                    change: Change, assign: Mapping[str, str | None],
                    exact: Mapping[str, list[str]]) -> Edit | None:
        """The photo's edit.  A flat keyword field we create (IPTC Keywords, dc:subject) starts with
        the person's keywords from the other one (MWG: keep them in step): digiKam reads the first
        non-empty field and Apple Photos dc:subject only, so a field holding ours alone would hide them."""
        add, remove = change.values(self.forms, IPTC)
        seed = existing.xmp if add and not existing.iptc else ()
        # A person's keyword over IPTC's limit would be cut short there (exiftool truncates): a
        # misspelt copy in the field apps read first is worse than none
        long = [v for v in seed if len(v.encode("utf-8")) > KEYWORD_LIMIT]
        seed = tuple(v for v in seed if v not in long)
        if existing.iptc_frozen:  # see _iptc_charset, _recode: the IPTC stays byte for byte
            iptc_args, iptc_final, iptc_expect = [], list(existing.iptc), (frozenset(), frozenset())
        elif IPTC in exact:
            iptc_args, iptc_final, iptc_expect = _field(IPTC, existing.iptc, exact[IPTC], [], True)
        else:
            iptc_args, iptc_final, iptc_expect = _field(IPTC, existing.iptc, add, remove, change.overwrite,
                                                        seed=seed)
            if existing.trailer_iptc and iptc_args:
                # exiftool would put ours alone into a new APP13 copy, which readers take before the
                # trailer's (AFCP): every copy is set to the same list, the photographer's first
                iptc_args = [f"-{IPTC}={v}" for v in iptc_final] or [f"-{IPTC}="]
        iptc_fill = {n: v for n, v in assign.items() if n.startswith("IPTC:")}
        xmp_fill = {n: v for n, v in assign.items() if not n.startswith("IPTC:")}
        notes: list[str] = []
        if existing.iptc_frozen:
            if existing.xmp_error and (change.add or change.remove or assign):
                raise MetadataError(f"{existing.iptc_frozen}, and its XMP cannot be read whole "
                                    f"({existing.xmp_error}): neither can be written")
            stuck = [k for k, _ in change.remove if k in existing.iptc]  # ours there from before: stay
            if change.add or iptc_fill:
                notes.append(f"{existing.iptc_frozen}; keywords written to XMP only, the IPTC left as it was")
            elif stuck:  # an untag, a sync: said only where the IPTC keeps one of ours (never written
                notes.append(f"{existing.iptc_frozen}; {', '.join(stuck)} taken out of XMP only, the IPTC "
                             "left as it was")  # there while it was frozen, so most often none)
            iptc_fill = {}
            assign = xmp_fill
        if long and iptc_args:
            notes.append(f"the person's keyword{'s' if len(long) > 1 else ''} {', '.join(map(repr, long))} "
                         "left out of the IPTC Keywords tagwatch created: longer than IPTC's "
                         f"{KEYWORD_LIMIT} bytes, and a shortened copy would misspell it; kept in XMP only")
        if existing.xmp_error:  # rebuilding the packet would lose what exiftool cannot read of it
            xmp: list[FieldEdit] = []
            if change.add or change.remove or xmp_fill:
                notes.append(f"its XMP cannot be read whole ({existing.xmp_error}); keywords written to "
                             "IPTC only, the XMP left as it was")
            xmp_fill = {}
            assign = iptc_fill
        else:
            xmp = self._xmp_fields(existing, change, exact=exact)
        if not iptc_args and not any(f[1] for f in xmp) and not assign:
            return None
        why = self.refusal(before)
        if why is not None and before.st_nlink > 1 and self.settings.target == "both":
            # its sidecar can still carry them: that edit goes ahead
            log.warning("%s: the file has %d hard links; replacing it would split them into separate files, "
                        "so its keywords go into its sidecar only", path, before.st_nlink)
            return None
        if why is not None:
            raise MetadataError(why)
        args = ["-charset", "iptc=UTF8"]
        recoded: dict[str, Expect] = {}
        if iptc_args or iptc_fill:
            if existing.latin1_iptc:
                # Latin-1 text must become UTF-8 before 1:90 says UTF-8 (exiftool FAQ 10): each value
                # with non-ASCII text is written again as the text it was read as (see _iptc_charset),
                # UTF-8 ones included, as exiftool's re-reading of the whole block as Latin would
                # garble them; ASCII is the same bytes in both
                recode = {n: v for n, v in existing.recode.items() if n != IPTC and n not in iptc_fill}
                args += [f"-{n}={v}" for n, values in recode.items() for v in values]
                args += [f"-{IPTC}={k}" for k in iptc_final] or [f"-{IPTC}="]
                recoded = {n: (frozenset(values), frozenset()) for n, values in recode.items()}
            else:
                args += iptc_args
            if existing.record_version not in (None, _EXIFTOOL_RECORD_VERSION):
                # exiftool drops record 2 once a removal leaves only its mandatory version in it, so a
                # person's version (not exiftool's own 4) is written again: set, it is kept
                args.append(f"-IPTC:ApplicationRecordVersion={existing.record_version}")
            args += [f"-{n}={v or ''}" for n, v in iptc_fill.items()]
            args.append("-IPTC:CodedCharacterSet=UTF8")
            if existing.has_digest and not existing.stale_digest:
                # Refreshed only where it matched the IPTC (or there was none), as exiftool's MWG
                # module does: MWG readers (Lightroom, Photoshop) show the XMP while it matches and the
                # IPTC once it is stale, which says another program changed the IPTC after the XMP;
                # our write, which keeps the two in step, must not flip which one they show.
                args.append("-Photoshop:IPTCDigest=new")
        args += [a for f in xmp for a in f[1]]
        args += [f"-{n}={v or ''}" for n, v in xmp_fill.items()]
        expect = {**recoded, **({IPTC: iptc_expect} if not existing.iptc_frozen else {})}
        return Edit(path, before, args, {**expect, **{f[0]: f[2] for f in xmp}}, True, dict(assign),
                    "; ".join(notes), {IPTC: iptc_final, **{f[0]: f[3] for f in xmp}})

    def _xmp_fields(self, existing: Keywords, change: Change, sidecar: bool = False,
                    seed: Keywords | None = None, exact: Mapping[str, list[str]] | None = None
                    ) -> list[FieldEdit]:
        """dc:subject always; lr:hierarchicalSubject with a prefix or a keyword with a parent, where
        present, and in every sidecar (Immich reads no dc:subject); digiKam's TagsList where present.
        ``exact``: fields to set to exactly these values instead (untag putting a field back)."""
        base = existing if seed is None else seed
        fields = [DC]
        if self.forms.prefix or base.hierarchical or sidecar or change.nested:
            fields.append(HIERARCHICAL)
        if base.tags_list:
            fields.append(TAGS_LIST)
        seeds = {tag: () if seed is None else seed.values(tag) for tag in fields}
        if HIERARCHICAL in fields and not base.hierarchical and (sidecar or change.add):
            # A new hierarchical field: digiKam and Immich read it first, so a person's flat keywords
            # join ours there or those apps would hide them.
            seeds[HIERARCHICAL] = tuple(dict.fromkeys(base.xmp + base.iptc_known))
        if seed is None and not base.xmp and change.add:  # a new dc:subject: see _photo_edit
            seeds[DC] = base.iptc_known
        exact = exact or {}
        out = []
        for tag in fields:
            add, remove = change.values(self.forms, tag)
            args, final, expect = (_field(tag, existing.values(tag), exact[tag], [], True) if tag in exact
                                   else _field(tag, existing.values(tag), add, remove, change.overwrite,
                                               seed=() if change.overwrite else seeds[tag]))
            out.append((tag, args, expect, final))
        return out

    # -- writing -------------------------------------------------------------------------------

    def apply(self, plan: WritePlan) -> os.stat_result:
        """Carry out a plan: each file is replaced atomically, or left exactly as it was; returns the
        photo's stat as it now is on disk: the version written, or (nothing to write there) the one
        planned from.  That is what must be recorded as tagged: a stat taken afterwards may be of
        a version another program saved in the meantime, which lacks our keywords.

        A hidden temporary file in the same folder receives the new version; it is read back, given
        the original's permissions, owner (where allowed) and extended attributes, fsynced and put in
        place only if the file there is still the version planned from (:mod:`tagwatch.atomic`),
        and the folder is fsynced.  Otherwise nothing is replaced (:class:`FileChanged`).  A new
        sidecar never replaces one that another app created in the meantime.
        """
        photo = plan.before
        for edit in plan.edits:
            written = self._replace(edit, plan.before)
            if edit.is_photo:
                photo = written
        return photo

    def warm_up(self, data: Path) -> None:
        """Have exiftool read and write keywords (with a path) in a scrap photo of its own: its Perl
        start and the compiling of its writing code (~0.3 s of a core on the AVX2-only EPYC) then
        come before the first photo's write instead of in it.  Run on a thread of its own at the
        daemon's start, beside the model's: a photo dropped as it starts had its keywords ~0.25 s
        sooner.  Not at a scan's: there the cores are busy from the start, and scans of 60 photos ran
        ~0.1 s slower with it.  A problem is left for a real write to report.  A daemon whose start
        fails at once (no network for the model's download) exits while this still writes: its scrap
        is left for the next warm-up to remove (:func:`_warm_up_scrap`), and nothing here may end the
        error's one line with a traceback."""
        from PIL import Image  # already imported by the decoding, in every process that writes

        try:
            scrap = _warm_up_scrap(data)
            try:
                Image.new("RGB", (8, 8)).save(scrap, "JPEG")
                self.apply(self.plan(scrap, ["tagwatch", "warm-up"], paths={"warm-up": "tagwatch|warm-up"}))
            finally:
                scrap.unlink(missing_ok=True)
        except Exception as exc:
            log.debug("exiftool warm-up: %s: %s", type(exc).__name__, exc)

    def warm_up_aside(self, data: Path) -> None:
        """:meth:`warm_up` on a thread of its own (the exiftool lock orders it with real writes)."""
        threading.Thread(target=self.warm_up, args=(data,), name="tagwatch-exiftool-warm-up",
                         daemon=True).start()

    def add(self, path: Path, keywords: list[str]) -> list[str]:
        """Add the ``keywords`` missing from the file; returns those that were nowhere before."""
        plan = self.plan(path, keywords)
        self.apply(plan)
        return plan.ours

    def _shortfall(self, edit: Edit, written: Path) -> set[str]:
        """The fields ("Group:Tag") of the edit that ``written`` does not hold as planned: a list
        field missing a value it must hold or holding one it must not, a filled field with another
        value (a keyword field filled with None must be gone)."""
        record = self._record(written, *(f"-{tag}" for tag in (*edit.expect, *edit.fields)))
        wrong = {tag for tag, (must, must_not) in edit.expect.items()
                 if not must <= (values := set(_as_list(record.get(tag)))) or must_not & values}
        wrong |= {name for name, value in edit.fields.items()
                  if (bool(_as_list(record.get(name))) if name in _FIELDS else
                      _first(record.get(name)) != (value or None))}
        return wrong

    def _ignoring_minor_errors(self, edit: Edit, source: list[str], temp: Path, reason: str) -> str:
        """exiftool declines to rewrite a block that has a minor error (XMP with a property written
        twice, as GIMP 2.8 did) and says so only in a warning; with ``-m`` it rewrites the block
        without the duplicates.  That is kept only if it loses nothing: every tag of the new version
        is compared with the first (which left the block untouched) and must be the same but for
        the fields of the edit, where only values the edit takes out may go, and repeated equal
        values, which collapse.  Returns why not ("" when ``temp`` now holds the rewrite)."""
        candidate = temp_name(edit.path, sidecar=not edit.is_photo)
        try:
            with self.exiftool.output(candidate) as output:
                self.exiftool.execute("-m", *edit.args, "-o", output, *source)
            if not candidate.exists() or self._shortfall(edit, candidate):
                return reason
            lost = self._changes_beyond(edit, temp, candidate)
            if lost:
                return f"{reason}; rewriting it would also change {lost}"
            os.replace(candidate, temp)
            log.info("%s: %s; rewritten without the repetition, nothing else changed", edit.path, reason,
                     extra={"event": "repaired", "path": str(edit.path), "reason": reason})
            return ""
        finally:
            candidate.unlink(missing_ok=True)

    def _changes_beyond(self, edit: Edit, kept: Path, candidate: Path) -> str:
        """The first tag ``candidate`` changes compared with ``kept`` beyond ``edit``'s fields, as
        words ("" if none).  Binary blocks are compared byte for byte (base64)."""
        before, after = self._record(kept, "-all", "-b"), self._record(candidate, "-all", "-b")
        for tag in sorted(set(before) | set(after)):
            if tag.split(":")[0] in _NOT_METADATA or tag in _REWRITE_NORMALISES:
                continue
            old, new = _as_list(before.get(tag)), _as_list(after.get(tag))
            if tag in edit.fields and tag not in _FIELDS:  # a filled field: its new value, planned
                continue
            if tag in edit.expect:
                gone = [v for v in old if v not in new and v not in edit.expect[tag][1]]
                if gone:
                    return f"{tag}: {', '.join(gone)[:80]} would be lost"
            elif (set(old) != set(new)) if _family(tag) == "XMP" else (old != new):
                return f"{tag} ({', '.join(old)[:40] or 'absent'} -> {', '.join(new)[:40] or 'absent'})"
        return ""

    def _judge(self, edit: Edit, wrong: set[str], reason: str) -> None:
        """Fail the write if the new version lacks what it must hold: a sidecar's keywords, or the
        keywords (and filled fields) in every block.  If only one block (IPTC or XMP) missed them,
        the photo is written and the log says where they could not go."""
        reason = reason or "exiftool gave no reason"
        if not edit.is_photo and wrong:
            raise MetadataError(f"exiftool did not write the sidecar's keywords ({reason})")
        wrong = {_family(tag) for tag in wrong}
        families = {_family(tag) for tag in (*edit.expect, *edit.fields)}
        if wrong and wrong >= families:
            raise MetadataError(f"exiftool wrote neither {' nor '.join(sorted(wrong))} keywords ({reason})")
        if wrong:
            log.warning("%s: keywords written to %s only; exiftool left the %s untouched (%s)",
                        edit.path, " and ".join(sorted(families - wrong)), " and ".join(sorted(wrong)),
                        reason, extra={"event": "partial-write", "path": str(edit.path), "reason": reason})

    def _replace(self, edit: Edit, photo_before: os.stat_result) -> os.stat_result:
        """Write one file's new version beside it and put it in place if the file is still the
        version planned from (:mod:`tagwatch.atomic`); returns the stat of the new version."""
        path, before = edit.path, edit.before
        temp = temp_name(path, sidecar=not edit.is_photo)
        try:
            # exiftool's own message for an unwritable folder names our temp file; ask the OS first
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(temp)
        except OSError as exc:
            error = StorageError if exc.errno in TRANSIENT_ERRNOS else MetadataError
            raise error(f"cannot create a file in {path.parent}: {exc.strerror}") from None
        try:
            with contextlib.ExitStack() as stack:
                pin = stack.enter_context(Pin(path, before)) if before is not None else None
                source = [] if before is None else [str(path)]
                with self.exiftool.output(temp) as output:
                    out, err = self.exiftool.execute(*edit.args, "-o", output, *source)
                if not temp.exists():
                    message = _first_line(err) or _first_line(out) or "exiftool wrote nothing"
                    if message.startswith(_EXIFTOOL_IO_ERRORS):  # it gives no errno: look at the disk
                        raise StorageError(_storage_reason(path.parent, photo_before.st_size, message))
                    raise MetadataError(message)
                # Read the new version back before it replaces the original
                wrong, reason = self._shortfall(edit, temp), _warning(err)
                minor = _warning(err, minor=True)
                if wrong and minor:
                    reason = self._ignoring_minor_errors(edit, source, temp, minor)
                    wrong = wrong if reason else set()
                families = {_family(tag) for tag in (*edit.expect, *edit.fields)}
                if (wrong and edit.is_photo and pin is not None and {_family(tag) for tag in wrong} < families
                        and filecmp.cmp(temp, path, shallow=False)):
                    # One block could not be written and the other already held everything: the new
                    # version is the old one byte for byte.  Replacing it would only give it a new
                    # inode and time, and backups would copy it again after every re-score.
                    log.debug("%s: %s; the rest already holds every keyword: left as it was", path, reason)
                    return before
                self._judge(edit, wrong, reason)
                if pin is not None:
                    _copy_xattrs(pin.fd, temp)
                    os.chmod(temp, before.st_mode & 0o7777)
                    owner = before
                else:  # a new sidecar: readable like its photo, never executable
                    os.chmod(temp, photo_before.st_mode & 0o666)
                    owner = photo_before
                if (owner.st_uid, owner.st_gid) != (os.getuid(), os.getgid()):
                    try:
                        os.chown(temp, owner.st_uid, owner.st_gid)
                    except PermissionError:
                        log.debug("%s: cannot keep owner %d:%d", path, owner.st_uid, owner.st_gid)
                if edit.is_photo and self.settings.mtime == "keep":
                    os.utime(temp, ns=(before.st_atime_ns, before.st_mtime_ns))
                with open(temp, "rb+") as handle:
                    os.fsync(handle.fileno())
                written = create(temp, path) if pin is None else pin.replace(temp)
            fsync_folder(path.parent)
            if edit.note:
                log.warning("%s: %s", path, edit.note,
                            extra={"event": "partial-write", "path": str(path), "reason": edit.note})
            return written
        except Superseded as exc:
            raise FileChanged(f"{exc}; will retry") from None
        except FileNotFoundError as exc:
            if edit.is_photo or before is not None:
                raise FileChanged(f"{path.name} vanished while it was being written") from None
            raise MetadataError(f"cannot write: {exc.strerror}") from None
        except OSError as exc:
            error = StorageError if exc.errno in TRANSIENT_ERRNOS else MetadataError
            raise error(f"cannot write: {exc.strerror or exc}") from None
        finally:
            temp.unlink(missing_ok=True)


# exiftool's messages when the new copy could not be written out: the disk, not the photo
_EXIFTOOL_IO_ERRORS = ("Error writing", "Error creating", "Error closing")


def _fold(raw: dict[str, object]) -> dict[str, object]:
    """One exiftool ``-j -a -G1:4`` record with every copy of a tag (``Group:CopyN:Tag``) folded into
    one list under ``Group:Tag``, values in file order."""
    record: dict[str, object] = {}
    for key, value in raw.items():
        parts = key.split(":")
        name = f"{parts[0]}:{parts[-1]}" if len(parts) > 2 else key
        record[name] = _as_list(record[name]) + _as_list(value) if name in record else value
    return record


def _keywords(record: dict[str, object]) -> Keywords:
    """The keywords of one folded exiftool record (see :meth:`KeywordWriter.read`)."""
    if "ExifTool:Error" in record:
        raise MetadataError(str(_as_list(record["ExifTool:Error"])[0]))
    iptc, latin1, frozen = _iptc_charset({k: v for k, v in record.items() if k.startswith("IPTC")})
    recode: dict[str, tuple[str, ...]] = {}
    if latin1:
        recode, frozen = _recode(iptc)
    # A trailer (AFCP, FotoStation) may hold a second IPTC copy, "IPTC2"; exiftool edits every
    # copy, so a keyword in any copy is already in the file.
    copies = sorted((k for k in iptc if re.fullmatch(r"IPTC\d*:Keywords", k)), key=lambda k: (k != IPTC, k))
    xmp_error = next((w for w in _as_list(record.get("ExifTool:Warning")) if _unreadable_xmp(w)), "")

    def xmp(tag: str) -> tuple[str, ...]:
        return () if xmp_error else tuple(dict.fromkeys(_as_list(record.get(tag))))

    return Keywords(
        iptc=tuple(dict.fromkeys(v for k in copies for v in _as_list(iptc[k]))),
        trailer_iptc=bool(copies) and IPTC not in iptc,
        xmp=xmp(DC), hierarchical=xmp(HIERARCHICAL), tags_list=xmp(TAGS_LIST),
        latin1_iptc=latin1, recode=recode, iptc_frozen=frozen,
        record_version=_first(iptc.get("IPTC:ApplicationRecordVersion")),
        has_digest="Photoshop:IPTCDigest" in record,
        stale_digest=_stale_digest(record),
        xmp_error=xmp_error,
        fields={name: first for name in FILLABLE if (first := _first(
            (iptc if name.startswith("IPTC:") else record).get(name))) is not None},
        gps={name: first for name in GPS_TAGS if (first := _first(record.get(name))) is not None},
    )


def _stale_digest(record: dict[str, object]) -> bool:
    """Does Photoshop's IPTCDigest no longer match the IPTC?  Without IPTC there is nothing for it
    to be stale against (exiftool computes no current digest then; Photoshop stores zeros)."""
    stored, current = _first(record.get("Photoshop:IPTCDigest")), _first(record.get("File:CurrentIPTCDigest"))
    return stored is not None and current is not None and stored != current


def _storage_reason(folder: Path, size: int, message: str) -> str:
    """Why exiftool could not write a copy of a ``size``-byte file into ``folder``, in plain words."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return message
    free = st.f_bavail * st.f_frsize
    if free < size + (1 << 16):
        return (f"no space left on device ({free // 1024} KiB free in {folder}, "
                f"about {size // 1024 + 1} KiB needed)")
    return f"{message} (a disk, quota or network problem)"


def _field(tag: str, existing: tuple[str, ...], add: list[str], remove: list[str], overwrite: bool,
           seed: tuple[str, ...] = ()) -> tuple[list[str], list[str], Expect]:
    """exiftool arguments that edit one list field; returns (args, final values, expectations).

    ``add`` and ``remove`` are values already spelled for this field; ``overwrite``: the field must
    hold exactly ``add``.  ``seed``: values a new file starts with before ours."""
    if overwrite:
        final = list(add)
        gone = frozenset(existing) - frozenset(final)
        if list(existing) == final:
            return [], final, (frozenset(final), gone)
        return [f"-{tag}={v}" for v in final] or [f"-{tag}="], final, (frozenset(final), gone)
    taken = [v for v in remove if v in existing + seed]
    added = [v for v in dict.fromkeys([*seed, *add]) if v not in existing and v not in taken]
    final = [v for v in existing if v not in taken] + added
    args = [f"-{tag}-={v}" for v in taken if v in existing] + [f"-{tag}+={v}" for v in added]
    return args, final, (frozenset(added), frozenset(taken))


def _created(tag: str, existing: tuple[str, ...], final: list[str], ours: Collection[str],
             record: Filled | None) -> Filled | None:
    """The ledger's record of a keyword field this write creates, or None if there is nothing new to
    record: the person's keywords copied into it from the other fields (not ours), and what it held
    before (None: absent).  A record from an earlier write keeps what the field held before it."""
    copied = tuple(v for v in final if v not in existing and v not in ours)
    if record is not None:
        more = tuple(v for v in copied if v not in record.ours)
        return Filled((*record.ours, *more), record.previous) if more else None
    if existing or not final or (not copied and tag != HIERARCHICAL):
        return None
    return Filled(copied, None)


def _overwritten(tag: str, existing: tuple[str, ...], final: list[str], ours: Collection[str],
                 record: Filled | None, earlier: Sequence[str] = ()) -> Filled | None:
    """The ledger's record of a keyword field overwrite sets to ``final``, or None if it stays as it
    is: the person's keywords copied into it from the other fields, and (:func:`_before_text`) the
    person's values it held before tagwatch first changed it, in their order, with those a person
    added since after them, and which of those values an overwrite took out.

    ``earlier``: the person's flat keywords an earlier overwrite took out that no record places
    (:func:`unclaimed`).  A flat field with no record (an older build overwrote it, and kept none),
    or one recorded as created although an overwrite had taken a person's keyword out of the photo,
    held them: it was the person's field, and untag puts them back into it.  Without this, the field
    holding only ours now was recorded as created, and untag deleted it with the person's keyword."""
    if list(existing) == final:
        return None
    copied = tuple(dict.fromkeys((*(record.ours if record else ()),
                                  *(v for v in final if v not in existing and v not in ours))))
    values, taken = _before(record)
    if record is None or record.previous is None:
        values += [v for v in earlier if v not in values]
        taken += [v for v in earlier if v not in taken and v not in existing]
    values += [v for v in existing if v not in ours and v not in copied and v not in values]
    taken += [v for v in values if v in existing and v not in final and v not in taken]
    return Filled(copied, _before_text(values, taken))


def overwritten(present: Iterable[str], keywords: Collection[str], owned: Collection[str]) -> list[str]:
    """The person's flat keywords a write in overwrite mode takes out of a file holding ``present``
    (IPTC and XMP, the photo's and its sidecar's): each neither written now (``keywords``, as
    spelled: overwrite sets every field to exactly them) nor tagwatch's (``owned``).  The write
    (:meth:`KeywordWriter.plan`'s ``dropped``), a dry run and the review page's *Writing into the
    file* line decide with this; the page said nothing of them."""
    return sorted(k for k in present if k not in keywords and k not in owned)


def unclaimed(dropped: Sequence[str], filled: Mapping[str, Filled]) -> list[str]:
    """The person's keywords an overwrite took out (the ledger's removed rows) that no flat keyword
    field's record says it took (an older build's overwrite, before the ledger recorded fields): they
    were in IPTC Keywords or dc:subject, which one no record tells, so both get them back."""
    said = {v for name in (IPTC, DC, SIDECAR_RECORD + DC) for v in _before(filled.get(name))[1]}
    return [k for k in dict.fromkeys(dropped) if k not in said]


def _before(record: Filled | None) -> tuple[list[str], list[str]]:
    """A keyword field's record: (the person's values it held before tagwatch, those overwrite took
    out).  A field tagwatch created (previous None) held none."""
    if record is None or record.previous is None:
        return [], []
    try:
        before = json.loads(record.previous)
        return [str(v) for v in before["values"]], [str(v) for v in before["taken"]]
    except (ValueError, KeyError, TypeError):  # not a record of ours: nothing known
        return [], []


def _before_text(values: list[str], taken: list[str]) -> str | None:
    """The ledger's form of :func:`_before` (a keyword may hold any character but control ones)."""
    if not values and not taken:
        return None
    return json.dumps({"values": values, "taken": taken}, ensure_ascii=False)


def _undone(record: Filled, current: tuple[str, ...], ours: Collection[str]) -> list[str]:
    """What a keyword field tagwatch created or overwrote holds once untag has taken tagwatch's part
    out: the person's values it held before, in their order (those overwrite took out put back, not
    those a person took out since), then what a person added to it since; without ours, and without
    the person's keywords we copied in (they are still in the field they came from).  Empty: the
    field goes (it was absent, or held only ours).

    A field tagwatch created that keeps something (a correction's keyword, which untag leaves, or
    one a person added to it since) keeps the copies too: holding that alone, it would hide the
    person's other keywords from the apps that read it first (digiKam, Immich, Apple Photos)."""
    values, taken = _before(record)
    kept = [v for v in values if v not in ours and (v in current or v in taken)]
    since = [v for v in current if v not in values and v not in ours and v not in record.ours]
    if since and record.previous is None:
        return [v for v in current if v not in ours and (v in since or v in record.ours)]
    return kept + since


def _fills(existing: Keywords, fill: Mapping[str, str | None], filled: Mapping[str, Filled],
           sidecar: bool) -> tuple[dict[str, str | None], dict[str, Filled], dict[str, Filled | None]]:
    """What to do with each filled field of the file that gets them: (fields to set, None deleting;
    the ledger's records to keep during the write; the records afterwards, None forgetting one).

    A field is ours to set when it is empty (absent or blank) or still holds a value of ours; a value
    a person wrote (or changed ours into) is never touched, and our record of the field is dropped.
    A field whose twin (IPTC City and XMP City) holds a person's value gets that value, not ours:
    the two disagreed (their Firenze, our Florence), and readers show either.
    """
    assign: dict[str, str | None] = {}
    ahead: dict[str, Filled] = {}
    after: dict[str, Filled | None] = {}

    def persons(name: str) -> str | None:  # the value a person wrote in the field, if any
        value, record = existing.fields.get(name), filled.get(name)
        return value if value and value.strip() and (record is None or value not in record.ours) else None

    for name in dict.fromkeys([*fill, *filled]):
        if (sidecar and name.startswith("IPTC:")) or name in KEYWORD_FIELDS:  # IIM has no place in an XMP
            continue  # sidecar; a keyword field we created is the untag's business
        current, record = existing.fields.get(name), filled.get(name)
        want = fill.get(name)
        theirs = persons(TWINS[name]) if want and name in TWINS else None
        want = fit(name, theirs or want) if want else None
        ours = record is not None and current in record.ours
        if want is not None and (ours or current is None or not current.strip()):
            previous = record.previous if ours and record is not None else current
            if current != want:
                assign[name] = want
                ahead[name] = Filled((*record.ours, want) if ours and record else (want,), previous)
            if record != Filled((want,), previous):
                after[name] = Filled((want,), previous)
        elif ours and record is not None:  # ours, no longer wanted: put back what was there
            if current != record.previous:
                assign[name] = record.previous
            after[name] = None
        elif record is not None:  # a person's value now
            after[name] = None
    return assign, ahead, after


def _record_name(tag: str, photo: bool) -> str:
    """The name of a keyword field's record in the ledger: the field's own for the photo's, marked
    for its sidecar's, so that the two fields of one name never share (and overwrite) one record."""
    return tag if photo else SIDECAR_RECORD + tag


def _changed(before: os.stat_result, now: os.stat_result) -> bool:
    return (now.st_size, now.st_mtime_ns, now.st_ino, now.st_dev) != (
        before.st_size, before.st_mtime_ns, before.st_ino, before.st_dev)


def _family(tag: str) -> str:
    """"IPTC" or "XMP" (any of their groups), else the tag's group: how a user names the block."""
    group = tag.split(":")[0]
    return "IPTC" if group.startswith("IPTC") else "XMP" if group.startswith("XMP") else group


# Groups that describe the file or exiftool, not metadata in it; tags every rewrite of a block sets
_NOT_METADATA = frozenset({"SourceFile", "File", "System", "ExifTool", "Composite"})
_REWRITE_NORMALISES = frozenset({"XMP-x:XMPToolkit"})

# Warnings naming XMP that exiftool gives on reading and that are harmless to a rewrite: it read
# every property (the first: the IPTC changed since Photoshop's digest, which our write leaves so)
_HARMLESS_XMP_WARNINGS = ("IPTCDigest is not current", "[minor] XMP is missing xpacket wrapper",
                          "[minor] Boolean value for XMP", "[minor] Non-standard XMP at")


def _unreadable_xmp(warning: str) -> bool:
    """Does exiftool's read ``warning`` say it could not read the whole XMP packet?"""
    if "XMP" not in warning or warning.startswith(_HARMLESS_XMP_WARNINGS):
        return False
    return not warning.startswith("[minor]") or warning == "[minor] Empty XMP"


def _warning(text: str, minor: bool = False) -> str:
    """exiftool's first warning (``minor``: its first "[minor]" one), without the file name."""
    for line in text.splitlines():
        if line.startswith("Warning: "):
            warning = line.removeprefix("Warning: ").rsplit(" - ", 1)[0].strip()
            if not minor or warning.lower().startswith("[minor]"):
                return warning
    return ""


def _first_line(text: str) -> str:
    """exiftool's first line, without "Error: " and the file name it ends an error with (`` - /a/p.jpg``):
    the log line names the file already, so the path came twice."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Error: "):
            return line.removeprefix("Error: ").rsplit(" - ", 1)[0].strip()
        if line:
            return line
    return ""

