"""Overrides: a person's corrections by path, merged after scoring.

Users of zero-shot taggers ask for "a manual override JSON that merges with the auto-generated tags";
this is it, as TOML with line numbers in its errors::

    [[override]]
    path = "holidays/2024/**"    # a glob relative to a watched folder, or an absolute path or glob
    add = ["holiday", "Anna"]
    remove = ["beach"]

Rules apply in file order, so a later rule can undo an earlier one for the files both match.  A rule
naming exactly one file (no glob) follows that file when the daemon sees it renamed or moved
(:func:`follow_moves`); a glob is a person's intent about a folder and stays as written.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import editing, write_atomic
from .casefold import fold, folded
from .vocabulary import (
    VocabularyError,
    check_keyword,
    not_one_level,
    read_list_file,
    read_toml,
    string_list,
    table_lines,
)

if TYPE_CHECKING:
    from tomlkit import TOMLDocument
    from tomlkit.items import Item, Table

_RULE_KEYS = ("path", "add", "remove")
OVERRIDE_SCORE = math.nan  # the "score" of a keyword an override adds: none, it was not predicted


class OverridesError(ValueError):
    """The overrides file cannot be used; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class Override:
    """What the overrides say about one file."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)

    def apply(self, tags: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """Predictions → what is written: removals dropped, additions appended (scored NaN).
        Whatever the case: ``remove = ["star"]`` takes out a tag the list now spells "Star", and an
        ``add`` of "Red" where red is predicted is that keyword, not a second spelling of it."""
        removing = self.removes()
        kept = [(k, s) for k, s in tags if fold(k) not in removing]
        have = {fold(k) for k, _ in kept}
        return kept + [(k, OVERRIDE_SCORE) for k in self.add if fold(k) not in have]

    def removes(self) -> set[str]:
        """The keywords (case-folded) the correction takes out."""
        return folded(self.remove)

    def kept_out(self, declined: Iterable[str]) -> set[str]:
        """What is never written into the photo, case-folded (a tag re-spelled "Star" is the "star"
        they took out): the keywords a person took out of it (the ledger's declined) but those a
        correction of theirs adds back, and those a correction removes.  None of them implies a
        level either.  The write, a dry run, expansion, explain and ``export`` decide with this;
        compare ``fold(keyword)`` with it."""
        added = folded(self.add)
        return (folded(declined) - added) | self.removes()


NO_OVERRIDE = Override()


def _segment(part: str) -> str:
    """One path level of a glob as a regular expression: ``*``, ``?`` and ``[…]`` stay inside it."""
    out: list[str] = []
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            if not out or out[-1] != "[^/]*":
                out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            j = i + 1
            if j < len(part) and part[j] == "!":
                j += 1
            if j < len(part) and part[j] == "]":
                j += 1
            end = part.find("]", j)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = part[i + 1:end].replace("\\", "\\\\").replace("[", "\\[")
                body = "^/" + body[1:] if body.startswith("!") else body
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over ``/``-separated paths: ``**`` spans any number of folders, a match of a folder
    covers everything inside it (as ``exclude`` does)."""
    parts = pattern.split("/")
    out = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(?:[^/]*/)*"
        else:
            out += _segment(part) + ("" if last else "/")
    return re.compile(out + r"(?:/.*)?\Z", re.DOTALL)


@dataclass(frozen=True)
class Rule:
    pattern: str  # as normalised: absolute, or relative to a watched folder
    add: tuple[str, ...]
    remove: tuple[str, ...]
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @property
    def absolute(self) -> bool:
        return self.pattern.startswith("/")


@dataclass(frozen=True)
class Overrides:
    rules: tuple[Rule, ...] = ()
    roots: tuple[str, ...] = ()  # the watched folders relative patterns start from
    source: Path | None = None
    warnings: tuple[str, ...] = ()

    def for_path(self, path: str) -> Override:
        """Every rule matching ``path``, merged in file order (a later rule wins)."""
        if not self.rules:
            return NO_OVERRIDE
        relative = [path[len(root) + 1:] for root in self.roots if path.startswith(root + "/")]
        add: dict[str, None] = {}
        remove: dict[str, None] = {}
        for rule in self.rules:
            if rule.absolute:
                hit = rule.regex.match(path) is not None
            else:
                hit = any(rule.regex.match(rel) for rel in relative)
            if not hit:
                continue
            for keyword in rule.remove:
                add.pop(keyword, None)
                remove[keyword] = None
            for keyword in rule.add:
                remove.pop(keyword, None)
                add[keyword] = None
        return Override(tuple(add), tuple(remove)) if add or remove else NO_OVERRIDE

    def fingerprint(self) -> str:
        """Changes with any rule (or the watched folders relative rules hang from); "" for none."""
        if not self.rules:
            return ""
        digest = hashlib.sha256()
        for root in self.roots:
            digest.update(root.encode() + b"\0")
        for rule in self.rules:
            digest.update("\1".join((rule.pattern, "\2".join(rule.add), "\2".join(rule.remove))).encode()
                          + b"\n")
        return digest.hexdigest()[:16]


def _keywords(value: Any, where: str, what: str) -> tuple[str, ...]:
    values = string_list(value, where, what, OverridesError)
    try:
        return tuple(dict.fromkeys(check_keyword(v, where) for v in values))
    except VocabularyError as exc:
        raise OverridesError(str(exc)) from None


def _pattern(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OverridesError(f"{where}: path must be a glob like \"holidays/**\" or an absolute path, "
                             f"got {value!r}")
    pattern = os.path.expanduser(value.strip())
    absolute = pattern.startswith("/")
    parts = [p for p in pattern.strip("/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OverridesError(f"{where}: path {value!r} must not contain '..'")
    if not parts:
        raise OverridesError(f"{where}: path {value!r} matches no file")
    return ("/" if absolute else "") + "/".join(parts)


def parse_overrides(text: str, source: Path, roots: Sequence[Path | str] = ()) -> Overrides:
    """Parse an overrides file; ``roots`` are the watched folders relative paths start from."""
    document = read_toml(text, source, OverridesError)
    unknown = sorted(set(document) - {"override"})
    if unknown:
        raise OverridesError(f"{source}: unknown key '{unknown[0]}' (an overrides file holds [[override]] "
                             "tables)")
    raw_rules = document.get("override", [])
    if not isinstance(raw_rules, list):
        raise OverridesError(f"{source}: 'override' must be a list of [[override]] tables")
    lines = table_lines(text, "override")
    if len(lines) != len(raw_rules):
        lines = []
    rules: list[Rule] = []
    for index, raw in enumerate(raw_rules):
        where = f"{source}:{lines[index]}" if lines else f"{source}: override #{index + 1}"
        if not isinstance(raw, dict):
            raise OverridesError(f"{where}: an override must be a table with path, add, remove")
        unknown = sorted(set(raw) - set(_RULE_KEYS))
        if unknown:
            raise OverridesError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(_RULE_KEYS)})")
        if "path" not in raw:
            raise OverridesError(f"{where}: the override has no path")
        pattern = _pattern(raw["path"], where)
        add = _keywords(raw.get("add", []), where, "add")
        remove = _keywords(raw.get("remove", []), where, "remove")
        if not add and not remove:
            raise OverridesError(f"{where}: the override neither adds nor removes a keyword")
        for keyword in add:  # as the review page refuses it: one already in a file can still go
            nested = not_one_level(keyword)
            if nested is not None:
                raise OverridesError(f"{where}: add {keyword!r} {nested}; add each level as a keyword of "
                                     "its own")
        removed = folded(remove)
        both = [k for k in add if fold(k) in removed]
        if both:
            raise OverridesError(f"{where}: {both[0]!r} is both added and removed")
        rules.append(Rule(pattern, add, remove, glob_regex(pattern)))
    root_paths = tuple(str(r).rstrip("/") or "/" for r in roots)
    warnings = ()
    if not root_paths and any(not r.absolute for r in rules):
        warnings = (f"{source}: relative paths match nothing here: no folder is watched "
                    "(use absolute paths, or set watch in the config)",)
    return Overrides(tuple(rules), root_paths, source, warnings)


def load_overrides(path: Path, roots: Sequence[Path | str] = ()) -> Overrides:
    """Read and parse the overrides file at ``path``.  A file that does not exist yet holds no rule
    (with a warning): the review page creates it with the first correction, and the daemon, which
    watches its folder, picks it up then."""
    if not os.path.lexists(path):
        return Overrides(source=path, warnings=(f"{path}: the overrides file does not exist yet; no "
                                                "overrides until it does (the review page creates it)",))
    return parse_overrides(read_list_file(path, "overrides file", OverridesError), path, roots)


# -- corrections from the review page --------------------------------------------------------------

CORRECTIONS = ("add", "remove", "undo")
_MARK = "# a correction made on the review page"


def glob_escape(path: str) -> str:
    """``path`` as a pattern that matches exactly it: ``*``, ``?`` and ``[`` become classes."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in path)


def _matches(rule: Rule, path: str, roots: Sequence[str]) -> bool:
    if rule.absolute:
        return rule.regex.match(path) is not None
    return any(path.startswith(root + "/") and rule.regex.match(path[len(root) + 1:]) for root in roots)


# -- the lines heading a rule ---------------------------------------------------------------------------
#
# tomlkit parses the blank lines and comments above an [[override]] header into the end of the table
# before it (the lines above the first header stay in the document, ahead of the array).  So a key
# appended to a rule with tomlkit alone lands below the next rule's comment, and a rule taken out takes
# the next rule's comment with it.  These keep those lines above the rule they head.

def _take_tail(table: Table) -> list[Item]:
    """Take the keyless lines (blank lines, comments) after ``table``'s last key off it: they head the
    next rule, or end the file."""
    body = table.value.body
    start = len(body)
    while start and body[start - 1][0] is None:
        start -= 1
    tail = [item for _, item in body[start:]]
    del body[start:]  # keyless: no index of tomlkit's key map points here
    return tail


def _put_tail(table: Table, tail: list[Item]) -> None:
    for item in tail:
        table.raw_append(None, item)  # raw: a comment is not re-indented like a key


def _add_key(table: Table, key: str, value: list[str]) -> None:
    """``key = value`` in ``table``, right under its last key, above the lines heading the next rule."""
    tail = _take_tail(table)
    table[key] = value
    _put_tail(table, tail)


def _unmarked(lines: list[Item]) -> list[Item]:
    """The lines heading a rule that goes, without the comment the review page wrote above it (and the
    blank lines that set that comment apart); a person's own comments stay."""
    from tomlkit.items import Comment, Null, Whitespace

    kept = [item for item in lines if not isinstance(item, Null)]
    if not kept or not isinstance(kept[-1], Comment) or kept[-1].as_string().strip() != _MARK:
        return kept
    kept.pop()
    while kept and isinstance(kept[-1], Whitespace):
        kept.pop()
    return kept


def _without_rules(doc: TOMLDocument, gone: Iterable[int]) -> str:
    """The text of the overrides file ``doc`` without its rules at the indexes ``gone``.  The lines
    heading the rule after each one stay above that rule; the review page's comment above a rule goes
    with it.  tomlkit keeps the lines above the first header ahead of the array, with no call to add
    lines there: when the first rule goes, the next rule's lines are put after them in the text, where
    tomlkit writes them (at the very start)."""
    import tomlkit

    rules = doc["override"]
    order = sorted(set(gone), reverse=True)
    lead: list[Item] = []  # the lines heading the first rule kept, when every rule before it goes
    for index in order:
        tail = _take_tail(rules[index])
        if index:
            _put_tail(rules[index - 1], _unmarked(_take_tail(rules[index - 1])) + tail)
        else:
            lead = tail
        del rules[index]
    if not rules:
        del doc["override"]
    result = tomlkit.dumps(doc)
    if 0 not in order:
        return result
    top = [item for key, item in doc.body if key is None]  # every key is in an [[override]] table
    written = "".join(item.as_string() for item in top)
    assert result.startswith(written), "tomlkit writes the lines above the first rule first"
    above = "".join(item.as_string() for item in _unmarked(top))
    heading = "".join(item.as_string() for item in lead)  # no blank line to start the file with
    return above + (heading if above else heading.lstrip("\n")) + result[len(written):]


def correct(text: str, source: Path, roots: Sequence[Path | str], path: str, keyword: str,
            action: str) -> str:
    """``text`` of an overrides file changed so that the photo at ``path`` gets ``keyword``
    (``add``), loses it (``remove``), or neither any more (``undo`` of an earlier correction).

    The correction goes into the rule for exactly this path (an absolute path, glob characters
    escaped) when that rule is the last one matching the photo, so it wins; otherwise a new rule is
    appended at the end.  tomlkit edits the document, so every comment and every other rule stays as
    the person wrote it; the result is parsed back and must do what was asked and change no other
    rule, or :class:`OverridesError` says why and nothing is written.
    """
    import tomlkit  # edits the person's file keeping every comment (the daemon's renames use it too)

    if action not in CORRECTIONS:
        raise ValueError(f"unknown correction {action!r}")
    keyword = check_keyword(keyword, f"{source}: the keyword")
    nested = not_one_level(keyword) if action == "add" else None  # one already there can still go
    if nested is not None:
        raise OverridesError(f"{source}: keyword {keyword!r} {nested}; add each level as a keyword of "
                             "its own")
    old = parse_overrides(text, source, roots)
    pattern = _pattern(glob_escape(path), f"{source}: {path}")
    matching = [i for i, rule in enumerate(old.rules) if _matches(rule, path, old.roots)]
    target = matching[-1] if matching and old.rules[matching[-1]].pattern == pattern else None
    if action == "undo":  # only a correction of this very photo can be taken back here
        says = [i for i in matching if keyword in (*old.rules[i].add, *old.rules[i].remove)]
        if not says:
            return text
        if says[-1] != target:
            other = old.rules[says[-1]].pattern
            raise OverridesError(f"{source}: {keyword!r} comes from the rule for {other!r}, not from a "
                                 "correction of this photo; edit that rule")
    kept = [(r.pattern, r.add, r.remove) for i, r in enumerate(old.rules) if i != target]
    changed: int | None = target  # where the rule for this photo is in the new file (None: deleted)
    if target is not None:
        doc = tomlkit.parse(text)
        table = doc["override"][target]
        drop, put = {"add": ("remove", "add"), "remove": ("add", "remove"),
                     "undo": ("add", None)}[action]
        for key in (drop, "remove") if action == "undo" else (drop,):
            if key in table and keyword in table[key]:
                table[key].remove(keyword)
        if put is not None:
            if put not in table:
                _add_key(table, put, [keyword])
            elif keyword not in table[put]:
                table[put].append(keyword)
        for key in ("add", "remove"):
            if key in table and not table[key]:
                del table[key]
        if "add" not in table and "remove" not in table:  # nothing left to say about this photo
            result = _without_rules(doc, [target])
            changed = None
        else:
            result = tomlkit.dumps(doc)
    else:
        table = tomlkit.table()
        table["path"] = glob_escape(path)
        table[action] = [keyword]
        doc = tomlkit.document()
        doc.add(tomlkit.comment(_MARK[2:]))
        doc.append("override", tomlkit.aot())
        doc["override"].append(table)
        result = (text.rstrip("\n") + "\n\n" if text.strip() else "") + tomlkit.dumps(doc)
        changed = len(old.rules)
    new = parse_overrides(result, source, roots)
    effect = new.for_path(path)
    done = {"add": keyword in effect.add, "remove": keyword in effect.remove,
            "undo": keyword not in effect.add and keyword not in effect.remove}[action]
    others = [(r.pattern, r.add, r.remove) for i, r in enumerate(new.rules) if i != changed]
    if not done or others != kept:
        raise OverridesError(f"{source}: could not place the correction safely in this file; add to it by "
                             f"hand: [[override]] path = {path!r}, {action} = [{keyword!r}]")
    return result


# -- rules that follow their photo -------------------------------------------------------------------

_ESCAPES = ("[*]", "[?]", "[[]")  # what glob_escape writes for the three glob characters


def literal_path(pattern: str) -> str | None:
    """The one path a rule's pattern names, its escapes undone (``a[[]1].jpg`` is ``a[1].jpg``); None
    for a glob (``*``, ``?`` or ``[…]`` other than those escapes)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i:i + 3] in _ESCAPES:
            out.append(pattern[i + 1])
            i += 3
            continue
        if pattern[i] in "*?[":
            return None
        out.append(pattern[i])
        i += 1
    return "".join(out)


def _followed(rule: Rule, roots: Sequence[str], src: str, dst: str, is_dir: bool) -> str | None:
    """The pattern ``rule`` takes when ``src`` is renamed to ``dst``: for a rule naming exactly that
    file, or a file inside that folder, its new path (relative to the same watched folder where it was
    relative and still lies inside it); None for any other rule (a glob, a folder, another file)."""
    named = literal_path(rule.pattern)
    if named is None:
        return None
    bases = [""] if rule.absolute else [root.rstrip("/") + "/" for root in roots]
    for base in bases:
        path = base + named
        if is_dir and path.startswith(src.rstrip("/") + "/"):
            moved = dst.rstrip("/") + path[len(src.rstrip("/")):]
            if os.path.isdir(moved):  # a rule about a folder inside it: a folder's rules stay
                return None
        elif not is_dir and path == src:
            moved = dst
        else:
            continue
        if any(os.path.lexists(other + named) for other in bases if other != base):
            return None  # a relative path names a photo in another watched folder too: not one photo's
        return glob_escape(moved[len(base):] if base and moved.startswith(base) else moved)
    return None


def follow_move(text: str, source: Path, roots: Sequence[Path | str], src: str, dst: str,
                is_dir: bool = False) -> tuple[str, list[tuple[str, str]]]:
    """``text`` of an overrides file with every rule naming exactly the renamed file ``src`` (or a
    file inside the renamed folder) naming it at ``dst``; returns the new text and each rule's (old,
    new) pattern.  Like :func:`correct`, tomlkit changes only those paths, every comment and other
    rule stays, and the result is parsed back: a layout that would change anything else raises
    :class:`OverridesError` and nothing is to be written."""
    import tomlkit

    old = parse_overrides(text, source, roots)
    changes = {index: pattern for index, rule in enumerate(old.rules)
               if (pattern := _followed(rule, old.roots, src, dst, is_dir)) is not None}
    if not changes:
        return text, []
    doc = tomlkit.parse(text)
    for index, pattern in changes.items():
        doc["override"][index]["path"] = pattern
    result = tomlkit.dumps(doc)
    expected = [(_pattern(changes[i], "") if i in changes else r.pattern, r.add, r.remove)
                for i, r in enumerate(old.rules)]
    if [(r.pattern, r.add, r.remove) for r in parse_overrides(result, source, roots).rules] != expected:
        raise OverridesError(f"{source}: could not change the rules' paths safely in this file")
    return result, [(old.rules[i].pattern, pattern) for i, pattern in changes.items()]


def _forgotten(rule: Rule, roots: Sequence[str], path: str) -> bool:
    """Does ``rule`` name exactly the photo at ``path``, and no other photo there is?  A relative
    path naming a file in another watched folder too is about that photo as well, and stays."""
    named = literal_path(rule.pattern)
    if named is None:
        return False
    bases = [""] if rule.absolute else [root.rstrip("/") + "/" for root in roots]
    return path in [base + named for base in bases] and not any(
        os.path.lexists(base + named) for base in bases if base + named != path)


def forget(text: str, source: Path, roots: Sequence[Path | str], path: str) -> tuple[str, list[Rule]]:
    """``text`` of an overrides file without the rules naming exactly the deleted photo ``path``,
    and those rules.  Kept, such a rule (the review page's correction) would correct the next,
    unrelated picture saved under that name (a camera's DSC_0100.jpg again), and write its added
    keyword, a person's, which sync and untag never take out.  Like :func:`follow_move`, tomlkit
    keeps every comment and other rule, and the result is parsed back."""
    import tomlkit

    old = parse_overrides(text, source, roots)
    gone = [index for index, rule in enumerate(old.rules) if _forgotten(rule, old.roots, path)]
    if not gone:
        return text, []
    result = _without_rules(tomlkit.parse(text), gone)
    expected = [(r.pattern, r.add, r.remove) for i, r in enumerate(old.rules) if i not in gone]
    if [(r.pattern, r.add, r.remove) for r in parse_overrides(result, source, roots).rules] != expected:
        raise OverridesError(f"{source}: could not take the rules out safely in this file")
    return result, [old.rules[i] for i in gone]


def forgets(overrides: Overrides, paths: Sequence[str]) -> bool:
    """Does a rule name exactly one of the deleted ``paths``?  Asked of the rules in memory, so a
    deletion that concerns none costs no read of the file."""
    return any(_forgotten(rule, overrides.roots, path) for rule in overrides.rules for path in paths)


def forget_deleted(overrides: Overrides, paths: Sequence[str]) -> tuple[Overrides, list[Rule]]:
    """Take the rules naming exactly one of the deleted photos ``paths`` out of the overrides file;
    returns the overrides as now written and the rules taken out.  Replaced atomically, and only if
    a rule went."""
    assert overrides.source is not None
    with editing(overrides.source):  # the review page may be saving a correction meanwhile
        text = original = read_list_file(overrides.source, "overrides file", OverridesError)
        gone: list[Rule] = []
        for path in paths:
            text, done = forget(text, overrides.source, overrides.roots, path)
            gone += done
        if text == original:
            return overrides, []
        write_atomic(overrides.source, text)
    return parse_overrides(text, overrides.source, overrides.roots), gone


def names_files(overrides: Overrides) -> bool:
    """Does a rule name one file (no glob)?  Only such a rule follows a photo that moves."""
    return any(literal_path(rule.pattern) is not None for rule in overrides.rules)


def follows(overrides: Overrides, moves: Sequence[tuple[str, str, bool]]) -> bool:
    """Does one of ``moves`` (src, dst, is_dir) take a rule along?  Asked of the rules in memory, so
    a rename that moves none costs no read of the file."""
    return any(_followed(rule, overrides.roots, *move) is not None
               for rule in overrides.rules for move in moves)


def follow_moves(overrides: Overrides, moves: Sequence[tuple[str, str, bool]]) -> tuple[Overrides,
                                                                                       list[tuple[str, str]]]:
    """Rewrite the overrides file so that its rules naming one file follow ``moves`` (src, dst,
    is_dir: what the daemon saw renamed); returns the overrides as now written and the rules moved
    (old, new pattern).  The file is replaced atomically, and only if a rule moved."""
    assert overrides.source is not None
    with editing(overrides.source):  # the review page may be saving a correction meanwhile
        text = original = read_list_file(overrides.source, "overrides file", OverridesError)
        moved: list[tuple[str, str]] = []
        for src, dst, is_dir in moves:
            text, done = follow_move(text, overrides.source, overrides.roots, src, dst, is_dir)
            moved += done
        if text == original:
            return overrides, []
        write_atomic(overrides.source, text)
    return parse_overrides(text, overrides.source, overrides.roots), moved
