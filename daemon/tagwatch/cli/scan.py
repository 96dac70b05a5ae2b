"""``tagwatch scan PATH…``: tag photos once, like rtag, and say how it went."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

from .. import logs
from ..config import Config
from ..metadata import ExifTool, KeywordWriter
from ..outcomes import Outcome, Status
from ..store import Store
from .common import (
    add_tagging_flags,
    count_text,
    expand,
    load,
    log,
    make_pipeline,
    require_exiftool,
    with_flags,
)
from .progress import Progress, write


def scan(config: Config, paths: Sequence[str], *, dry_run: bool,
         report: Callable[[Outcome], None] = lambda outcome: None,
         progress: Callable[[int], Progress] = lambda total: Progress(total, "scan")) -> dict[str, int]:
    """Tag ``paths`` (photo files) in batches of the config's size; count the outcomes by status.
    ``report`` sees each outcome; the progress shown counts photos once the model is ready."""
    store = Store(config.database)
    exiftool = ExifTool()
    counts: dict[str, int] = {}
    try:
        pipeline = make_pipeline(config, store, None if dry_run else KeywordWriter(exiftool, config.write))
        size = config.batch.size
        with progress(len(paths)) as bar:
            for start in range(0, len(paths), size):
                batch = paths[start:start + size]
                for outcome in pipeline.process(batch, dry_run=dry_run, retry_failed=True):
                    counts[outcome.status] = counts.get(outcome.status, 0) + 1
                    if outcome.status == Status.WAIT:  # the daemon would retry later; a scan reports it
                        log.warning("%s: not tagged: %s (run the scan again once that is fixed)",
                                    outcome.path, outcome.error,
                                    extra={"event": "skipped", "path": outcome.path, "reason": outcome.error})
                    report(outcome)
                bar.advance(len(batch))
        pipeline.close()
    finally:
        exiftool.close()
        store.close()
    return counts


def dry_line(outcome: Outcome) -> str | None:
    """A dry run's line for a photo: its tags with their scores (``override`` for a person's)."""
    if outcome.status != Status.TAGGED:
        return None
    tags = ", ".join(f"{k} ({'override' if math.isnan(s) else f'{s:.3f}'})" for k, s in outcome.tags)
    return f"{outcome.path}\t{tags or '(no tag above threshold)'}"


def scan_func(args: argparse.Namespace) -> int:
    config = with_flags(load(args), args)
    if not args.dry_run:
        require_exiftool()
    paths = list(dict.fromkeys(expand(args.paths, config.exclude)))

    def report(outcome: Outcome) -> None:
        line = dry_line(outcome) if args.dry_run else None
        if line is not None:
            write(line)

    counts = scan(config, paths, dry_run=args.dry_run, report=report)
    text = f"scan: {len(paths)} photos: {count_text(counts)}" + (
        " (dry run: no file written)" if args.dry_run else "")
    print(logs.summary_line(args.log_format, text), file=sys.stderr)
    return 1 if counts.get(Status.FAILED) or counts.get(Status.WAIT) else 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    scan = sub.add_parser("scan", parents=[common], help="tag photos once, like rtag")
    scan.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders (recursive)")
    scan.add_argument("--dry-run", action="store_true",
                      help="print each photo's tags with scores; write no photo (vectors are still cached)")
    add_tagging_flags(scan, writing=True)
    scan.set_defaults(func=scan_func)
