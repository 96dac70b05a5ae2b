#!/usr/bin/env python3
"""The review page's server time on a large library (not a test: it asserts no duration).

    .venv/bin/python scripts/bench_web.py                # 10,000 photos
    .venv/bin/python scripts/bench_web.py --count 500    # a first look

It builds a library of N real JPEGs (small ones: the grid's server time does not depend on the
pixels, thumbnails are timed apart), each carrying two keywords of the person's and two of ours, and
a store that knows every photo as tagged, with a vector of its own (random, 512 dimensions as
ViT-B-32's) and the ledger of our keywords, against the shipped photo vocabulary of 1,171 tags (text
vectors random too: nothing is encoded, nothing downloaded).  Then it serves the page in-process on
127.0.0.1 and times, over HTTP, each page a person opens: the grid's first, middle and last page of 60,
cold (exiftool reads the page's keywords) and warm, each filter, a tag's page (the histogram over every
photo), the tag list, a photo, the status, and a thumbnail made and then cached.  Reported as the median
of ``--repeat`` requests (the cold figure is the first), printed and written to ``bench-web.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "daemon"))

from tagwatch.config import builtin_tag_list, load_config  # noqa: E402
from tagwatch.model import model_identity  # noqa: E402
from tagwatch.precision import cpu_facts  # noqa: E402
from tagwatch.store import DONE, FAILED, Store  # noqa: E402
from tagwatch.vocabulary import load_configured  # noqa: E402
from tagwatch.web.server import WebServer  # noqa: E402

DIM = 512
PERSONS = ["Anna", "holiday"]


def build(folder: Path, count: int) -> Path:
    """The photos, the config and the store (made once per folder and count)."""
    photos, conf = folder / "photos", folder / "conf"
    marker = folder / f".built-{count}"
    config = conf / "config.toml"
    if marker.exists():
        return config
    shutil.rmtree(folder, ignore_errors=True)
    conf.mkdir(parents=True)
    photos.mkdir()
    tags = conf / ("tags" + builtin_tag_list().suffix)  # the shipped list, rich (.toml) since 2026-12
    shutil.copyfile(builtin_tag_list(), tags)
    config.write_text(f'watch = ["{photos}"]\ntags = "{tags.name}"\ndatabase = "state/tagwatch.db"\n'
                      '[model]\nname = "ViT-B-32-256"\npretrained = "none"\n', encoding="utf-8")
    cfg = load_config(config)
    vocabulary = load_configured(cfg.tags, cfg.tagging)
    keywords = vocabulary.keywords
    rng = np.random.default_rng(7)
    # a few distinct base photos with keywords, copied (not linked: each its own file and mtime)
    bases = []
    for n in range(8):
        base = folder / f"base{n}.jpg"
        Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((160, 120)).save(base)
        ours = [keywords[(n * 37) % len(keywords)], keywords[(n * 53 + 5) % len(keywords)]]
        subprocess.run(["exiftool", "-q", "-overwrite_original", "-codedcharacterset=utf8",
                        *(f"-IPTC:Keywords+={k}" for k in PERSONS + ours),
                        *(f"-XMP-dc:Subject+={k}" for k in PERSONS + ours), str(base)], check=True)
        bases.append((base, ours))
    identity = model_identity(cfg.model)
    store = Store(cfg.database)
    prompts = vocabulary.prompts()
    text = rng.standard_normal((len(prompts), DIM)).astype(np.float32)
    store.put_text_vectors(dict(zip(prompts, text, strict=True)), identity)
    started = time.monotonic()
    for start in range(0, count, 1000):
        vectors = {}
        with store.transaction():
            for n in range(start, min(start + 1000, count)):
                base, ours = bases[n % len(bases)]
                path = photos / f"{n // 500:03d}" / f"IMG_{n:05d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(base, path)
                st = path.stat()
                key = n.to_bytes(8, "big") + b"bench"  # one vector per photo: scores differ
                failed = n % 997 == 3
                file_id = store.record_file(str(path), key=key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                            state=FAILED if failed else DONE,
                                            error="cannot decode: truncated" if failed else None)
                if not failed:
                    store.add_ledger(file_id, ours)
                    store.record_tagged(file_id, ours, "bench", st.st_size, st.st_mtime_ns)
                vectors[key] = rng.standard_normal(DIM).astype(np.float32)
        store.put_image_vectors(vectors, identity)
        print(f"  {min(start + 1000, count)} photos ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    store.close()
    marker.touch()
    return config


def timed(port: int, token: str, path: str, repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        started = time.perf_counter()
        connection.request("GET", path, headers={"Authorization": f"token {token}"})
        response = connection.getresponse()
        body = response.read()
        times.append(time.perf_counter() - started)
        connection.close()
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}: {body[:300]!r}")
    return {"first_ms": round(times[0] * 1000, 1), "median_ms": round(statistics.median(times) * 1000, 1),
            "bytes": len(body)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="photos in the library (10,000)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "tagwatch-bench-web",
                        help="where the library is built and kept for the next run")
    parser.add_argument("--repeat", type=int, default=5, help="requests per page (5)")
    parser.add_argument("--out", type=Path, default=Path("bench-web.json"))
    args = parser.parse_args()
    if shutil.which("exiftool") is None:
        raise SystemExit("exiftool is needed (apt-get install libimage-exiftool-perl)")
    print(f"library of {args.count} photos in {args.dir}", file=sys.stderr)
    config = load_config(build(args.dir, args.count))
    server = WebServer(config, port=0, apply_corrections=False)
    server.start()
    pages = max(1, -(-args.count // 60))
    tag = load_configured(config.tags, config.tagging).keywords[37]
    rows = [
        ("grid, page 1", "/"),
        (f"grid, page {pages // 2}", f"/?page={pages // 2}"),
        (f"grid, page {pages} (the last)", f"/?page={pages}"),
        ("grid, one folder", "/?folder=0/001"),
        (f"grid, tag {tag!r}", f"/?tag={tag.replace(' ', '+')}"),
        ("grid, recently tagged", "/?show=recent"),
        ("grid, failed", "/?show=failed"),
        ("grid, near a threshold (±0.03, every tag)", "/?show=near"),
        (f"grid, near the threshold of {tag!r}", f"/?show=near&tag={tag.replace(' ', '+')}"),
        (f"tag page {tag!r} (histogram over every photo)", f"/tag/{tag.replace(' ', '%20')}"),
        ("tag list with counts", "/tags"),
        ("photo page", "/photo/0/000/IMG_00001.jpg"),
        ("status", "/status"),
        ("thumbnail (made, then cached)", "/thumb/0/000/IMG_00002.jpg"),
    ]
    results = {}
    try:
        for label, path in rows:
            results[label] = timed(server.port, server.token, path, args.repeat)
            print(f"{label:<48} first {results[label]['first_ms']:>8.1f} ms   "
                  f"median {results[label]['median_ms']:>8.1f} ms", flush=True)
    finally:
        server.stop()
    report = {"count": args.count, "repeat": args.repeat, "cpu": cpu_facts()[0], "cores": os.cpu_count(),
              "python": platform.python_version(), "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
