"""``tagwatch scan PATH…``: tag photos once, like rtag, and say how it went."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .. import logs, ray_driver
from ..casefold import fold
from ..config import Config
from ..encoder import LazyModel
from ..engine import Engine
from ..formats import ImageError
from ..freshness import is_unchanged
from ..metadata import ExifTool, KeywordWriter
from ..model import model_identity
from ..outcomes import Outcome, Status
from ..queue import backlog_batch, backlog_take
from ..store import Store
from ..vectors import Photo, ReadFailed, read_key
from ..wording import counted, listed, quoted
from .common import (
    SKIPPED,
    UsageError,
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
         progress: Callable[[int], Progress] = lambda total: Progress(total, "scan"),
         take_over: frozenset[str] = frozenset()) -> dict[str, int]:
    """Tag ``paths`` (photo files) through the overlapped engine, a backlog's batch at a time
    (:func:`~tagwatch.queue.backlog_batch`); count the outcomes by status.
    ``report`` sees each outcome (from the engine's write thread, one batch at a time)."""
    if not paths:  # nothing named is a photo: no store, tag list or model (a first download) for it
        return {}
    store = Store(config.database)
    exiftool = ExifTool()
    counts: dict[str, int] = {}
    model = LazyModel(config.model)
    try:
        if _first_new_needs_encoding(store, paths[:PEEK], model.identity):
            model.prefetch()  # the child's start (torch, the model: seconds) overlaps reading the tag list
        writer = KeywordWriter(exiftool, config.write)
        pipeline = make_pipeline(config, store, None if dry_run else writer, model=model, reader=writer)
        pipeline.writeback.take_over = take_over
        engine = Engine(pipeline)
        size = backlog_batch(config.batch.size, config.model.device)  # a scan is a backlog
        with progress(len(paths)) as bar:

            def done(outcomes: list[Outcome]) -> None:
                for outcome in outcomes:
                    _count(counts, outcome, dry_run)
                    report(outcome)
                if not dry_run:  # the daemon's re-scores then leave them until they change
                    pipeline.remember_failures(outcomes)
                bar.advance(len(outcomes))

            try:
                start = 0
                while start < len(paths):
                    take = backlog_take(len(paths) - start, size, first=start == 0)
                    engine.submit(paths[start:start + take], done, dry_run=dry_run, retry_failed=True)
                    start += take
            finally:
                finish(engine)  # every batch submitted is finished (an interrupted scan too)
        pipeline.close()
    finally:
        exiftool.close()
        store.close()
    return counts


def finish(engine: Engine) -> None:
    """Close the engine, every batch in flight finished, whatever Ctrl-C comes meanwhile (the
    store and exiftool are closed next: a batch still running would be cut off mid-record); the
    interrupt is raised again once it is done."""
    interrupted = False
    while True:
        try:
            engine.close()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt


PEEK = 64  # photos whose records are looked at for the first new or changed one


def _first_new_needs_encoding(store: Store, paths: Sequence[str], model_id: str) -> bool:
    """Does the first of ``paths`` that is new or changed since the store recorded it need encoding
    (its vector not cached)?  Then the scan starts the model at once instead of at the first cache
    miss, which comes after the tag list is read (half a second later).  Only that photo is read and
    keyed (the scan reads it anyway).  A library the store knows under other paths (moved or renamed
    while nothing watched it), or whose metadata another program edited, has its vectors cached: its
    rescan starts no model (that cost 1.3-1.9 CPU-seconds of a child that encoded nothing).  A later
    photo that needs the model starts it at its cache miss."""
    rows = store.files(paths)
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if is_unchanged(rows.get(path), st):
            continue
        photo = Photo(path, st)
        try:
            read_key(photo)
        except (ImageError, ReadFailed):  # not a photo, unreadable: the scan says so; the next one decides
            continue
        assert photo.key is not None
        return not store.image_vectors([photo.key], model_id)
    return False


NO_TAG = "with no tag above the threshold"  # the summary's count of photos checked that got none


def _count(counts: dict[str, int], outcome: Outcome, dry_run: bool) -> None:
    """Count ``outcome`` under the status the summary gives it.  A dry run's photo the scan would
    refuse (read-only, hard links) is no "tagged"; nor is a photo the scan checked and left as it
    was (no tag above the threshold, or only keywords it had already): "unchanged", as the log line
    says "nothing to write" or "(already in the file)" of it; a dry run's photo with nothing to
    write or take out is "unchanged" as the scan's is.  Of those, one with no tag at all is said so
    (a first index of 24,000 photos ended "1200 unchanged", read as 1,200 photos skipped)."""
    status: str = outcome.status
    if outcome.status == Status.TAGGED and dry_run and outcome.error:
        status = "would fail"
    elif outcome.status == Status.TAGGED and not (outcome.wrote if not dry_run else (
            outcome.tags or outcome.places or outcome.overridden or outcome.dropping or outcome.overwriting)):
        untagged = not (outcome.tags or outcome.places or outcome.overridden)
        status = NO_TAG if untagged else Status.UNCHANGED
    counts[status] = counts.get(status, 0) + 1
    if outcome.status == Status.WAIT:  # the daemon would retry later; a scan reports it
        log.warning("%s: not tagged: %s (run the scan again once that is fixed)", outcome.path, outcome.error,
                    extra={"event": "skipped", "path": outcome.path, "reason": outcome.error})


def scan_on_ray(config: Config, paths: Iterable[str], total: int, *, address: str | None, dry_run: bool,
                report: Callable[[Outcome], None] = lambda outcome: None,
                progress: Callable[[int], Progress] = lambda total: Progress(total, "scan"),
                take_over: frozenset[str] = frozenset()) -> tuple[dict[str, int], ray_driver.Summary]:
    """``scan`` with the expensive stages on a Ray cluster (``address``; docs/ray.md); ``paths`` is
    consumed lazily, ``total`` of them.  This process alone opens the store.  Returns the outcome
    counts and the run's summary (encoded, cached, failures, per node)."""
    ray_driver.prepare(address)
    try:
        connected = ray_driver.connect(address)  # a head that is not there: one line within 20 s
    except ray_driver.ClusterError as exc:
        raise UsageError(str(exc)) from None
    store = Store(config.database)
    exiftool = ExifTool()
    fleet = ray_driver.Fleet(config, model_identity(config.model), writes=not dry_run)
    counts: dict[str, int] = {}
    try:
        fleet.grow()
        writer = KeywordWriter(exiftool, config.write)
        pipeline = make_pipeline(config, store, None if dry_run else writer,
                                 model=ray_driver.RemoteModel(fleet), reader=writer)
        pipeline.writeback.take_over = take_over
        with progress(total) as bar:
            def finish(outcome: Outcome) -> None:
                _count(counts, outcome, dry_run)
                report(outcome)
                if not dry_run:  # as the local engine's scan does
                    pipeline.remember_failures([outcome])
                bar.advance()

            summary = ray_driver.run_scan(pipeline, fleet, paths, batch=config.batch.size, dry_run=dry_run,
                                          finish=finish)
        pipeline.close()
    except ray_driver.ClusterError as exc:
        raise UsageError(str(exc)) from None
    finally:
        fleet.close()
        exiftool.close()
        store.close()
        if connected:
            ray_driver.disconnect()
    return counts, summary


def dry_line(outcome: Outcome) -> str | None:
    """A dry run's line for a photo: the tags it would get with their scores (``override`` for a
    person's) and its place; for a photo tagged with these settings already, what it carries (the
    store keeps no scores), so that every photo shows its tags.  One line per photo whatever its
    name (escaped as the log escapes it) or its keywords (quoted as the log quotes them), so that a
    script can read the lines."""
    path = logs.shown(outcome.path)
    place = f"; place: {listed(outcome.places)}" if outcome.places else ""
    if outcome.status == Status.UNCHANGED and outcome.error is None:  # failed ones are said already
        # scores where this run has them (a photo whose keywords are all in it already), else none
        tags = ", ".join(quoted(k) if math.isnan(s) else f"{quoted(k)} ({s:.3f})" for k, s in outcome.tags)
        if not tags and not place:  # nothing in it to be found anywhere
            return f"{path}\t(no tag above threshold)"
        return f"{path}\t{tags or '(no tag above threshold)'}{place} (already in {outcome.where})"
    if outcome.status != Status.TAGGED:
        return None
    tags = ", ".join(f"{quoted(k)} ({'override' if math.isnan(s) else f'{s:.3f}'})" for k, s in outcome.tags)
    refused = f" (a scan would not write it: {outcome.error})" if outcome.error else ""
    removed = "; ".join(f"{what}: {listed(keywords)}" for what, keywords in (
        ("removed by an override", outcome.overridden),
        ("would take out tagwatch's no longer predicted", outcome.dropping),
        ("would take out, as overwrite mode does", outcome.overwriting)) if keywords)
    shown = "; ".join(part for part in (tags or ("" if outcome.overridden else "(no tag above threshold)"),
                                        removed) if part)
    return f"{path}\t{shown}{place}{refused}"


def scan_func(args: argparse.Namespace) -> int:
    if args.address and args.engine != "ray":
        raise UsageError("--address names a Ray cluster: it goes with --engine ray")
    config = with_flags(load(args), args)
    if args.engine == "ray" and config.captions.enabled:  # no caption stage there yet: none goes without
        raise UsageError("--engine ray does not write captions yet: scan with the local engine, or set "
                         "[captions] enabled = false")
    if args.engine == "ray":
        try:
            ray_driver.prepare(args.address)
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != "ray":
                raise
            raise UsageError(f"--engine ray needs Ray, on this machine and on every node: "
                             f"{ray_driver.INSTALL}") from None
    if not args.dry_run:
        require_exiftool()

    finished = [0]  # photos through every stage: said if the scan is interrupted

    def report(outcome: Outcome) -> None:
        finished[0] += 1
        name_retry(outcome)
        line = dry_line(outcome) if args.dry_run else None
        if line is not None:
            write(line)

    skipped: list[str] = []  # named paths that are no photo: said as they are met
    passed_over: Counter[str] = Counter()  # pictures of formats not read, met in the folders walked
    trouble = False  # ray: a node was left out (it could not read photos this machine reads)
    try:
        counts, total, trouble = _scan_all(args, config, skipped, report, passed_over)
    except KeyboardInterrupt as stop:  # Ctrl-C
        if args.engine == "ray":
            text = interrupted_on_ray(finished[0], stop)
        else:  # the batches in flight were finished and recorded
            text = (f"scan: interrupted with {finished[0]} or more photos done (the batches in flight were "
                    "finished); each one done is recorded: run the same command again to go on")
        print(logs.summary_line(args.log_format, text), file=sys.stderr)
        return 130
    # a named path that is no photo is not one of the photos counted: said apart
    text = f"scan: {counted(total, 'photo')}: {count_text(counts)}" + (
        f"; {len(skipped)} named {'path' if len(skipped) == 1 else 'paths'} {SKIPPED}" if skipped else "") + (
        _passed_over(passed_over)) + (" (dry run: no file written)" if args.dry_run else "")
    print(logs.summary_line(args.log_format, text), file=sys.stderr)
    return 1 if counts.get(Status.FAILED) or counts.get(Status.WAIT) or skipped or trouble else 0


def interrupted_on_ray(done: int, stop: KeyboardInterrupt) -> str:
    """The closing line of a Ray scan that Ctrl-C ended: how many photos are done (each recorded),
    and whether the stations finished and recorded what they held first (then no photo was written
    that is not counted) or were stopped mid-batch, the temporary files of their writes removed."""
    again = "each photo done is recorded: run the same command again to go on"
    if not isinstance(stop, ray_driver.Interrupted):  # before the stations had work
        return f"scan: interrupted with {counted(done, 'photo')} done; {again}"
    if stop.drained:
        return (f"scan: interrupted with {counted(done, 'photo')} done (the stations finished the batches "
                f"they held first); {again}")
    removed = (f", and the {counted(stop.removed, 'temporary file')} their writes in flight left beside "
               "photos removed" if stop.removed else "")
    return (f"scan: interrupted with {counted(done, 'photo')} done: the stations were stopped mid-batch "
            f"({stop.why}){removed}; a photo they were writing is whole, as before or as written; {again}")


def name_retry(outcome: Outcome) -> None:
    """A photo left to try again (changed while it was written): the daemon tries again by itself,
    a scan ends first, so it names the photo (its summary only counted "1 retry").  Without the
    reason's "will retry", the daemon's promise: the line said "…; will retry; the next scan tags
    it" of a photo the scan, ended, never tried again."""
    if outcome.status == Status.RETRY:
        reason = (outcome.error or "").removesuffix("; will retry")
        log.warning("%s: not tagged: %s; the next scan tags it", outcome.path, reason,
                    extra={"event": "retrying", "path": outcome.path, "reason": reason})


def _passed_over(counts: Counter[str]) -> str:
    """``; 3 pictures in formats tagwatch does not read left alone (.avif 2, .gif 1)``, or ""."""
    if not counts:
        return ""
    total = sum(counts.values())
    kinds = ", ".join(f"{suffix} {n}" for suffix, n in counts.most_common())
    noun = "picture" if total == 1 else "pictures"
    return f"; {total} {noun} in formats tagwatch does not read left alone ({kinds})"


def _scan_all(args: argparse.Namespace, config: Config, skipped: list[str],
              report: Callable[[Outcome], None], passed_over: Counter[str]
              ) -> tuple[dict[str, int], int, bool]:
    """The scan on the engine asked for: (counts by status, photos named, whether a Ray node was
    left out)."""
    trouble = False
    take_over = taken_over(args.take_over) if args.take_over else frozenset()
    if args.engine == "ray":
        total = sum(1 for _ in unique(expand(args.paths, config.exclude, quiet=True, watched=config.watch),
                                      len(args.paths)))
        named = expand(args.paths, config.exclude, skipped=skipped, watched=config.watch,
                       passed_over=passed_over)
        if not args.dry_run:
            named = cleaning(named)
        counts, summary = scan_on_ray(config, unique(named, len(args.paths)), total, address=args.address,
                                      dry_run=args.dry_run, report=report, take_over=take_over)
        for line in summary.lines():
            print(logs.summary_line(args.log_format, line), file=sys.stderr)
        trouble = summary.trouble
    else:
        paths = list(dict.fromkeys(expand(args.paths, config.exclude, clean_temp=not args.dry_run,
                                          watched=config.watch, passed_over=passed_over,
                                          skipped=skipped)))
        total = len(paths)
        counts = scan(config, paths, dry_run=args.dry_run, report=report, take_over=take_over)
    return counts, total, trouble



def taken_over(path: str) -> frozenset[str]:
    """The keywords ``--take-over`` names (folded): a plain list, one per line (rtag's tags file: a
    line may hold commas, as ImageNet's do, and is one keyword); ``#`` comments and blank lines
    skipped.  Unreadable, or naming nothing: one line and exit 2.  Not read as a tag list
    (:mod:`tagwatch.vocabulary`): rtag's ImageNet lines run past IPTC's 64 bytes, which a tag list
    refuses, and these keywords are only looked up, never written."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"--take-over {path}: cannot read it: {reason}") from None
    words = frozenset(fold(line.strip()) for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#"))
    if not words:
        raise UsageError(f"--take-over {path}: names no keyword (one per line)")
    return words


def cleaning(paths: Iterable[str]) -> Iterator[str]:
    """``paths``, each folder they lie in rid first of the temporary files a write killed midway left
    there, by a Ray station or driver (:func:`ray_driver.remove_left_temp_files`: on this machine or
    another); the local engine's walk does this for its own writers."""
    folder = None
    for path in paths:
        if os.path.dirname(path) != folder:
            folder = os.path.dirname(path)
            ray_driver.remove_left_temp_files(folder)
        yield path


def unique(paths: Iterable[str], sources: int) -> Iterator[str]:
    """Each path once.  One folder or file given yields each path once already; only several, which
    may overlap, need the set of paths seen (memory grows with the archive only then)."""
    if sources <= 1:
        yield from paths
        return
    seen: set[str] = set()
    for path in paths:
        if path not in seen:
            seen.add(path)
            yield path


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    scan = sub.add_parser("scan", parents=[common], help="tag photos once, like rtag")
    scan.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders (recursive)")
    scan.add_argument("--dry-run", action="store_true",
                      help="print each photo's tags with scores and its place (a photo tagged already: what "
                           "it carries); write no photo (vectors are still cached)")
    scan.add_argument("--engine", choices=("local", "ray"), default="local",
                      help="local (this machine) or ray: read, encode and write on the nodes of a Ray "
                           "cluster that see the photos at the same paths (pip install 'tagwatch[ray]')")
    scan.add_argument("--address", metavar="ADDR",
                      help="the Ray cluster's head, HOST:PORT (default: RAY_ADDRESS, or the cluster "
                           "`ray start` began on this machine, else a Ray for this scan alone)")
    scan.add_argument("--take-over", metavar="LIST",
                      help="keywords another tagger (rtag) wrote: those in LIST (a tags file, one per line) "
                           "that the photos hold become tagwatch's, so that sync can take them out and "
                           "untag removes them; without it they are the person's, kept for good")
    add_tagging_flags(scan, writing=True)
    scan.set_defaults(func=scan_func)
