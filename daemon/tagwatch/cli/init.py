"""``tagwatch init [FOLDER…]``: write a commented starter config and a tag list to edit."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..config import builtin_tag_list, default_config_path
from ..store import private_folder
from .common import UsageError


def init(target: Path, folders: Sequence[str], *, force: bool) -> Path:
    """Write the example config at ``target`` watching ``folders``, and a tag list beside it unless
    one is there; returns the tag list's path."""
    if target.exists() and not force:
        raise UsageError(f"{target} already exists (use --force to overwrite it)")
    example = Path(str(builtin_tag_list())).with_name("config.example.toml").read_text(encoding="utf-8")
    if folders:
        resolved = [str(Path(f).expanduser().resolve()) for f in folders]
        for folder in resolved:
            if not Path(folder).is_dir():
                raise UsageError(f"{folder}: not a folder")
        listed = json.dumps(resolved, ensure_ascii=False)
        example = example.replace('watch = ["~/Pictures"]', f"watch = {listed}")
    private_folder(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(example)
    tags = target.parent / "tags.txt"
    if not tags.exists():
        shutil.copyfile(builtin_tag_list(), tags)
    return tags


def init_func(args: argparse.Namespace) -> int:
    target = Path(args.config).expanduser() if args.config else default_config_path()
    tags = init(target, args.folders, force=args.force)
    print(f"wrote {target}\ntag list {tags} (edit it while tagwatch runs; changes apply at once)\n"
          f"next: tagwatch run{'' if args.config is None else f' --config {target}'}")
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    init = sub.add_parser("init", parents=[common], help="write a commented starter config")
    init.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to watch")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.set_defaults(func=init_func)
