#!/usr/bin/env python3
"""tagwatch's burst benchmark: N photos of 12 MP dropped at once into a running daemon's folder.
Not a test: it asserts no duration.

    .venv/bin/python scripts/bench_burst.py               # 10,000 photos
    .venv/bin/python scripts/bench_burst.py --count 200   # a first look

The first 200 photos are bench.py's set (same generator, same cache); beyond them come lossless
jpegtran variants of those (flipped and cropped by 16-px steps to 3904x2928: different pixels, so the
content-keyed cache skips none, made in ~0.1 s each instead of drawing each from scratch), made once
and reused.  Each run copies them into a staging folder beside the watched one (not timed),
starts ``tagwatch run`` with the default model (ViT-B-32-256, random weights: nothing is downloaded),
waits until it runs, then renames every photo into the watched folder as fast as the file system
allows: a camera card copied in at once.  It reports the time from the first rename until the database
records the last photo done or failed, files/s, the peak RSS (VmHWM) of the daemon and of its exiftool,
photos tagged and failures; afterwards exiftool checks that every photo carries keywords.

Disk: the cache holds ~1.6-1.9 MB per photo (~16 GB for 10,000) and a run needs as much again for its
copies (not hard links: tagwatch leaves a hard-linked photo alone).  ``--cache`` puts both on a bigger disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from bench import (
    DEFAULT_CACHE,
    BenchError,
    DaemonProcess,
    Progress,
    TreeMemory,
    ensure_photos,
    keyword_counts,
    machine_facts,
    say,
    write_config,
)
from tagwatch.store import FAILED, Store

BASE_COUNT = 200  # bench.py's set, each photo drawn from scratch (seconds of CPU each)
CROP_STEPS = (7, 5)  # 16-px crop offsets across and down: with 4 flips, 140 variants per base photo


def variant_args(size: tuple[int, int], variant: int) -> list[str]:
    """jpegtran options for variant ``variant`` (>= 1) of a photo stored ``size`` pixels: a flip and a
    crop 96 x 72 px smaller (16-px steps: lossless), so its pixels differ from every other variant's."""
    flips = ([], ["-flip", "horizontal"], ["-flip", "vertical"], ["-rotate", "180"])[variant % 4]
    step = variant // 4
    across, down = step % CROP_STEPS[0], step // CROP_STEPS[0] % CROP_STEPS[1]
    width, height = size
    if width < height:  # stored turned (EXIF orientation 6): the same crop, transposed
        across, down = down, across
        crop = f"{width - 72}x{height - 96}+{16 * across}+{16 * down}"
    else:
        crop = f"{width - 96}x{height - 72}+{16 * across}+{16 * down}"
    return [*flips, "-trim", "-crop", crop]


def make_variant(base: Path, target: Path, variant: int) -> None:
    """A distinct photo from a cached one in ~0.1 s: jpegtran flips and crops the JPEG losslessly
    (no re-encoding, metadata kept), where drawing a new one takes seconds of CPU."""
    with Image.open(base) as image:
        size = image.size
    partial = target.with_name(f".{target.name}.part")
    subprocess.run(["jpegtran", "-copy", "all", *variant_args(size, variant), "-outfile", str(partial),
                    str(base)], check=True)
    os.replace(partial, target)


def ensure_burst_photos(cache: Path, count: int) -> list[Path]:
    """bench.py's first 200 photos, then lossless variants of them (~11.4 MP, every one different
    pixels: the content-keyed cache cannot skip any), cached beside them."""
    bases = ensure_photos(cache / "images-12mp", min(count, BASE_COUNT))
    if count <= BASE_COUNT:
        return bases
    if shutil.which("jpegtran") is None:
        raise BenchError("more than 200 photos are made with jpegtran "
                         "(Debian: apt-get install libjpeg-turbo-progs)")
    folder = cache / "burst-variants"
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"variant-{i:05d}.jpg" for i in range(BASE_COUNT, count)]
    missing = [(i, t) for i, t in zip(range(BASE_COUNT, count), targets, strict=True) if not t.exists()]
    if missing:
        say(f"making {len(missing)} variants of the {BASE_COUNT} photos in {folder} (cached)")
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(make_variant, [bases[i % BASE_COUNT] for i, _ in missing],
                          [t for _, t in missing], [i // BASE_COUNT for i, _ in missing], chunksize=64))
    return bases + targets


def burst(photos: list[Path], work: Path) -> dict[str, Any]:
    """One run: copy, start the daemon, drop everything at once, wait for the last photo."""
    staging, watched = work / "staging", work / "photos"
    staging.mkdir(parents=True)
    watched.mkdir()
    needed = sum(p.stat().st_size for p in photos)
    free = shutil.disk_usage(work).free
    if free < needed * 1.1:
        raise BenchError(f"{work}: {free / 1e9:.1f} GB free, the copies need {needed / 1e9:.1f} GB; "
                         "pass --cache on a bigger disk or a smaller --count")
    say(f"copying {len(photos)} photos ({needed / 1e9:.1f} GB) to {staging}")
    for photo in photos:  # not links: tagwatch leaves a hard-linked photo alone (a rewrite would split it)
        shutil.copyfile(photo, staging / photo.name)
    template = work / "template.db"
    Store(template).close()  # an empty database: the daemon encodes the tag list when it starts
    config = write_config(work / "conf", watched, template)
    progress = Progress(config.parent / "state" / "tagwatch.db")
    daemon = DaemonProcess(config)
    try:
        daemon.start()
        daemon.wait_log("tagwatch is running", timeout=600)
        assert daemon.proc is not None
        memory = TreeMemory(daemon.proc.pid)  # daemon, encoder child, exiftool: peaks sampled in a thread
        before = memory.by_name()["main"]
        say(f"daemon running ({before:.0f} MB); dropping {len(photos)} photos")
        started = time.perf_counter()
        for photo in photos:
            os.rename(staging / photo.name, watched / photo.name)
        dropped = time.perf_counter() - started
        failed, done, last_say = 0, 0, 0.0
        while done + failed < len(photos):
            daemon.alive()
            time.sleep(0.5)
            done = progress.done()
            failed = progress.db.execute("SELECT COUNT(*) FROM files WHERE state = ?",
                                         (FAILED,)).fetchone()[0]
            if time.perf_counter() - last_say > 30:
                last_say = time.perf_counter()
                say(f"{done} tagged, {failed} failed, {last_say - started:.0f} s")
        seconds = time.perf_counter() - started
        memory.stop()
        peaks = memory.by_name()
        failures = progress.db.execute("SELECT path, error FROM files WHERE state = ? LIMIT 5",
                                       (FAILED,)).fetchall()
    finally:
        daemon.stop()
        progress.close()
    say("checking every photo's keywords with exiftool")
    with_keywords = sum(1 for n in keyword_counts(watched).values() if n > 0)
    return {"photos": len(photos), "seconds": round(seconds, 1),
            "files_per_s": round(len(photos) / seconds, 2),
            "drop_s": round(dropped, 2), "tagged": done, "failed": failed, "with_keywords": with_keywords,
            "daemon_peak_rss_mb": round(peaks["main"], 1), "daemon_peak_before_drop_mb": round(before, 1),
            "encoder_peak_rss_mb": round(peaks.get("encoder", 0.0), 1),
            "exiftool_peak_rss_mb": round(peaks.get("exiftool", 0.0), 1),
            "sum_peak_rss_mb": round(memory.peak(), 1),
            "first_failures": failures,
            "log": str(daemon.log_path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, metavar="N", help="photos (default 10,000)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, metavar="DIR",
                        help=f"where the generated photos live and runs work (default {DEFAULT_CACHE})")
    parser.add_argument("--json", type=Path, default=Path("bench-burst.json"), metavar="PATH",
                        help="where the results go (default bench-burst.json)")
    parser.add_argument("--keep", action="store_true", help="keep the run folder (photos, log, database)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if shutil.which("exiftool") is None:
        say("exiftool is needed (Debian: apt-get install libimage-exiftool-perl)")
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="burst-", dir=args.cache))
    try:
        photos = ensure_burst_photos(args.cache, args.count)
        result = burst(photos, work)
    except BenchError as exc:
        say(str(exc))
        return 1
    finally:
        if args.keep:
            say(f"run folder kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    document = {"machine": machine_facts(), "result": result,
                "model": "ViT-B-32-256, pretrained none (random weights)",
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"burst of {result['photos']} photos (11.4-12 MP): {result['seconds']} s, "
          f"{result['files_per_s']} files/s "
          f"(dropped in {result['drop_s']} s); tagged {result['tagged']}, failed {result['failed']}, "
          f"with keywords {result['with_keywords']}; peak RSS daemon {result['daemon_peak_rss_mb']} MB "
          f"({result['daemon_peak_before_drop_mb']} MB before the drop), encoder child "
          f"{result['encoder_peak_rss_mb']} MB, exiftool {result['exiftool_peak_rss_mb']} MB; "
          f"sum {result['sum_peak_rss_mb']} MB")
    say(f"results written to {args.json}")
    return 0 if result["failed"] == 0 and result["with_keywords"] == result["photos"] else 1


if __name__ == "__main__":
    sys.exit(main())
