"""``tagwatch init [FOLDER…]``: write a commented starter config and a tag list to edit.

Run in a terminal it asks the one question a newcomer should answer before any photo is touched:
keywords into the photos themselves, or into sidecar files beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import TARGETS, builtin_tag_list, default_config_path
from ..store import private_folder
from .common import UsageError

CHOICES = {  # target → what a person is told it means
    "embedded": "into the photos themselves (IPTC and XMP: every photo app sees them)",
    "sidecar": "into sidecar files beside them (photo.jpg.xmp; the photos stay byte for byte as they are)",
    "both": "both: into the photos and into sidecar files",
}
_TARGET_LINE = re.compile(r'^# target = "embedded"( *)#', re.M)
DEFAULT_FOLDER = "~/Pictures"  # what the starter config watches when init is given no folder


def ask_target(ask: Callable[[str], str] = input, say: Callable[[str], None] = print) -> str:
    """Ask where keywords go; Enter keeps the default (into the photos)."""
    say("Where should tagwatch write the keywords?")
    for number, (target, meaning) in enumerate(CHOICES.items(), start=1):
        say(f"  {number}) {meaning}" + ("  [default]" if target == "embedded" else ""))
    while True:
        answer = ask("Choice [1]: ").strip().lower()
        if not answer:
            return "embedded"
        for number, target in enumerate(CHOICES, start=1):
            if answer in (str(number), target):
                return target
        say("please answer 1, 2 or 3")


def init(target: Path, folders: Sequence[str], *, force: bool, where: str = "embedded") -> Path:
    """Write the example config at ``target`` watching ``folders`` and writing keywords ``where``
    ([write] target), and a tag list beside it unless one is there; returns the tag list's path."""
    if target.exists() and not force:
        raise UsageError(f"{target} already exists (use --force to overwrite it)")
    example = Path(str(builtin_tag_list())).with_name("config.example.toml").read_text(encoding="utf-8")
    if folders:
        resolved = [str(Path(f).expanduser().resolve()) for f in folders]
        for folder in resolved:
            if not Path(folder).is_dir():
                raise UsageError(f"{folder}: not a folder")
        listed = json.dumps(resolved, ensure_ascii=False)
        example = example.replace(f'watch = ["{DEFAULT_FOLDER}"]', f"watch = {listed}")
    if where != "embedded":  # set the commented default's line, its explanation kept beside it
        line = f'target = "{where}"'
        example, found = _TARGET_LINE.subn(lambda m: line.ljust(len(m.group(0)) - 1) + "#", example)
        assert found == 1, "config.example.toml lost its [write] target line"
    private_folder(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(example)
    tags = target.parent / "tags.toml"  # the shipped photo vocabulary, to edit
    if not tags.exists():  # the user's alone, as the config is (faults.md), whatever the umask
        fd = os.open(tags, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle, open(builtin_tag_list(), "rb") as shipped:
            shutil.copyfileobj(shipped, handle)
    return tags


def init_func(args: argparse.Namespace) -> int:
    # absolute: the next/undo lines below are kept and pasted into other terminals and units
    target = Path(args.config).expanduser().absolute() if args.config else default_config_path()
    if target.exists() and not args.force:  # before asking anything
        raise UsageError(f"{target} already exists (use --force to overwrite it)")
    where = args.target or (ask_target() if sys.stdin.isatty() else "embedded")
    tags = init(target, args.folders, force=args.force, where=where)
    config = "" if args.config is None else f" --config {shlex.quote(str(target))}"
    # the folder as the config holds it: the lines below work from any folder, not only this one
    folder = (shlex.quote(str(Path(args.folders[0]).expanduser().absolute())) if args.folders
              else DEFAULT_FOLDER)
    watching = "" if args.folders else (f"watch: {DEFAULT_FOLDER} (no FOLDER given; edit watch in {target} "
                                        "to change it)\n")
    print(f"wrote {target}: keywords go {CHOICES[where]}\n{watching}"
          f"tag list {tags} (edit it while tagwatch runs; changes apply at once)\n"
          f"config edits apply when the daemon is told: pkill -HUP -u $USER -f 'tagwatch run' (or restart)\n"
          f"next: tagwatch scan --dry-run{config} {folder}   # the tags it would write; writes nothing\n"
          f"      tagwatch run{config}   # watch the folders and tag new or changed photos\n"
          f"undo: tagwatch untag{config} {folder}   # takes out exactly the keywords tagwatch wrote")
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    init = sub.add_parser("init", parents=[common], help="write a commented starter config")
    init.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to watch")
    init.add_argument("--target", choices=TARGETS,
                      help="where keywords go: embedded (into the photos), sidecar or both; asked when "
                           "run in a terminal, else embedded")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.set_defaults(func=init_func)
