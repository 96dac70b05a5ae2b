"""``tagwatch untag PATH…``: remove exactly the keywords tagwatch added, as its ledger records them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import Config
from ..encoder import LazyModel
from ..metadata import ExifTool, KeywordWriter
from ..outcomes import Status
from ..pipeline import Pipeline
from ..store import Store
from ..wording import counted
from .common import SKIPPED, count_text, load, log, photo_path, remove_stale_temp_files, require_exiftool


def untag(config: Config, given: Sequence[str]) -> dict[str, int]:
    """Untag each named photo and every recorded photo under each named folder; counts by status."""
    store = Store(config.database)
    exiftool = ExifTool()
    counts: dict[str, int] = {}
    try:
        pipeline = Pipeline(store, LazyModel(config.model), KeywordWriter(exiftool, config.write),
                            config.tagging)
        paths: list[str] = []
        for name in given:
            path = Path(name).expanduser().absolute()
            if not os.path.lexists(path):  # a typo, or a drive not plugged in: nothing there to untag
                log.warning("%s: skipped: no such file or folder", path,
                            extra={"event": "skipped", "path": str(path), "reason": "no such file or folder"})
                counts[SKIPPED] = counts.get(SKIPPED, 0) + 1
                continue
            paths += sorted(store.files_under(str(path.resolve()))) if path.is_dir() else [photo_path(name)]
        remove_stale_temp_files(os.path.dirname(path) for path in paths)
        for path in paths:
            outcome = pipeline.untag(path)
            if outcome.status != Status.UNTAGGED and outcome.error:
                log.info("%s: %s", path, outcome.error)
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        pipeline.close()
    finally:
        exiftool.close()
        store.close()
    return counts


def untag_func(args: argparse.Namespace) -> int:
    config = load(args)
    require_exiftool()
    counts = untag(config, args.paths)
    skipped = counts.pop(SKIPPED, 0)  # named paths with nothing there: said apart, as scan says them
    print(f"untag: {counted(sum(counts.values()), 'file')}: {count_text(counts)}"
          + (f"; {skipped} named {'path' if skipped == 1 else 'paths'} {SKIPPED}" if skipped else ""),
          file=sys.stderr)
    return 1 if counts.get(Status.FAILED) or skipped else 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    untag = sub.add_parser("untag", parents=[common],
                           help="remove exactly the keywords tagwatch added; the daemon then leaves "
                                "those files alone until `scan` names them")
    untag.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders (recursive)")
    untag.set_defaults(func=untag_func)
