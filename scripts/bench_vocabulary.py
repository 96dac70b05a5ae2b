#!/usr/bin/env python3
"""What the WordNet hierarchy and the photo vocabulary cost: size, load time, memory, re-scoring.

    .venv/bin/python scripts/bench_vocabulary.py [--vectors 100000] [--repeat 5] [--json FILE]

Each load is timed in a fresh Python process (what a daemon start or a tag-list reload pays; the
interpreter and tagwatch's imports excluded), best of ``--repeat``:

- the WordNet data file: decompressed and opened;
- the shipped photo vocabulary (``photo-tags.toml``), placed in WordNet as the daemon loads it;
- rtag's ImageNet-1k plain list with expansion on (each word matched in WordNet), and off;
- the resident memory a process keeps after loading the photo vocabulary (VmRSS growth, after a
  garbage collection) and its peak while loading (VmHWM growth).

Then re-scoring ``--vectors`` random unit vectors against the photo vocabulary's random tag vectors
(what a tag-list edit does to every cached photo), with expansion off and on: the cost expansion
adds per photo.  Timings mean something only on a quiet machine; the CPU is printed with them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tagwatch.config import TaggingConfig, builtin_tag_list
from tagwatch.precision import cpu_facts
from tagwatch.tagger import Expansion, TagMatrix, predict
from tagwatch.vocabulary import load_configured
from tagwatch.wordnet import data_path

CHILD = """
import gc, json, sys, time
from pathlib import Path
from tagwatch.config import TaggingConfig, builtin_tag_list
from tagwatch.vocabulary import load_configured
from tagwatch.wordnet import WordNet

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) / 1024

what = sys.argv[1]
gc.collect()
rss, hwm = status("VmRSS"), status("VmHWM")
start = time.perf_counter()
if what == "wordnet":
    WordNet()
elif what == "photo-tags":
    vocabulary = load_configured(builtin_tag_list(), TaggingConfig())
else:
    expand = "parents" if what == "imagenet-expand" else "none"
    vocabulary = load_configured(builtin_tag_list("imagenet-1k"), TaggingConfig(expand=expand))
seconds = time.perf_counter() - start
gc.collect()
print(json.dumps({"s": seconds, "rss_mb": status("VmRSS") - rss, "peak_mb": status("VmHWM") - hwm}))
"""


def load(what: str, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, what], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    best = min(runs, key=lambda r: r["s"])
    return {"s": best["s"], "rss_mb": max(r["rss_mb"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs)}


def rescore(count: int, repeat: int) -> dict[str, float]:
    vocabulary = load_configured(builtin_tag_list(), TaggingConfig())
    rng = np.random.default_rng(0)
    dim = 512
    prompt_vectors = {p: rng.standard_normal(dim).astype(np.float32) for p in vocabulary.prompts()}
    tags = TagMatrix.build(vocabulary, prompt_vectors)
    images = rng.standard_normal((count, dim)).astype(np.float32)
    threshold = np.float32(0.05)  # random vectors: a threshold that lets a few tags through per photo
    out = {}
    for name, expansion in (("off", Expansion()), ("on", Expansion.of(vocabulary, TaggingConfig()))):
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for lo in range(0, count, 4096):
                predict(images[lo:lo + 4096], tags, threshold, 10, expansion)
            best = min(best, time.perf_counter() - start)
        out[name] = best
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000,
                        help="cached vectors re-scored (default 100,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure, best kept (default 5)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures: dict[str, object] = {"cpu": cpu_facts()[0], "data_gz_mb": data_path().stat().st_size / 1e6}
    figures["data_text_mb"] = len(gzip.decompress(data_path().read_bytes())) / 1e6
    for what in ("wordnet", "photo-tags", "imagenet-expand", "imagenet-flat"):
        figures[what] = load(what, args.repeat)
    figures["rescore_s"] = rescore(args.vectors, args.repeat)
    print(f"CPU: {figures['cpu']}")
    print(f"WordNet data file: {figures['data_gz_mb']:.2f} MB compressed, "
          f"{figures['data_text_mb']:.1f} MB of text")
    labels = {"wordnet": "open the WordNet data",
              "photo-tags": "load the photo vocabulary (1,171 tags, placed)",
              "imagenet-expand": "load ImageNet-1k .txt, expansion on (words matched)",
              "imagenet-flat": "load ImageNet-1k .txt, expansion off"}
    for what, label in labels.items():
        f = figures[what]
        print(f"{label:<55} {f['s']:6.3f} s   kept {f['rss_mb']:5.1f} MB   peak +{f['peak_mb']:5.1f} MB")
    r = figures["rescore_s"]
    print(f"re-score {args.vectors:,} vectors against the photo vocabulary: expansion off {r['off']:.2f} s, "
          f"on {r['on']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
