#!/usr/bin/env python3
"""Build tagwatch's WordNet data file from the WordNet 3.0 database (Debian's ``wordnet-base``).

    .venv/bin/python scripts/build_wordnet.py [--wordnet /usr/share/wordnet] [--out FILE]

The file (default ``daemon/tagwatch/data/wordnet-nouns.tsv.gz``) holds WordNet's noun hierarchy and
nothing else tagwatch does not use: no glosses, no verbs or adjectives, no relations but hypernymy.
Three sections of tab-separated lines, each sorted so the file is the same whatever order the
database lists things in:

    S  offset  hypernym offsets (space separated; instance hypernyms too)  lemmas (| separated)
    L  lemma   its synsets in WordNet's sense order (offset, or offset:count where the sense was
               seen in the sense-tagged corpus; the counts tell a dominant sense from a rare one)
    X  inflected form  base forms (``mice`` → ``mouse``: noun.exc, for plural tags)

An offset is the 8-digit synset offset of ``data.noun`` (ImageNet's wnid without the ``n``); lemmas
keep WordNet's capitals with spaces for underscores; L keys are lower case.  The gzip stream carries
no time stamp, so the same database gives the same bytes with the same zlib; the test that rebuilds
the file compares the decompressed text.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

DEFAULT_SOURCE = Path("/usr/share/wordnet")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "daemon" / "tagwatch" / "data" / "wordnet-nouns.tsv.gz"
HEADER = """\
# WordNet 3.0 noun hierarchy for tagwatch, built by scripts/build_wordnet.py from the WordNet 3.0
# database files (data.noun, index.noun, cntlist.rev, noun.exc), e.g. Debian's wordnet-base.
# WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.
# Used and redistributed under the WordNet 3.0 licence: see WORDNET-LICENSE beside this file.
# S offset hypernyms lemmas | L lemma senses (offset[:tagged count]) | X inflected base forms
"""


class BuildError(ValueError):
    """The database files are missing or not what WordNet 3.0 writes."""


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="latin-1")  # WordNet's files are ASCII; never fail on a byte
    except OSError as exc:
        raise BuildError(f"{path}: cannot read ({exc.strerror}); install wordnet-base "
                         "(apt-get install wordnet-base) or pass --wordnet DIR") from None
    return [line for line in text.splitlines() if line and not line.startswith("  ")]  # licence lines


def _name(lemma: str) -> str:
    return lemma.replace("_", " ")


def synsets(source: Path) -> list[str]:
    """``S`` lines from ``data.noun``: offset, hypernyms (``@`` and ``@i``), lemmas."""
    out = []
    for line in _lines(source / "data.noun"):
        fields = line.split(" ")
        offset, count = fields[0], int(fields[3], 16)
        lemmas = [_name(fields[4 + 2 * i]) for i in range(count)]
        at = 4 + 2 * count
        pointers = int(fields[at])
        hypernyms = [fields[at + 1 + 4 * i + 1] for i in range(pointers)
                     if fields[at + 1 + 4 * i] in ("@", "@i") and fields[at + 1 + 4 * i + 2] == "n"]
        out.append(f"S\t{offset}\t{' '.join(hypernyms)}\t{'|'.join(lemmas)}")
    if len(out) < 80_000:
        raise BuildError(f"{source / 'data.noun'}: {len(out)} synsets; WordNet 3.0 has 82,115")
    return sorted(out)


def tagged_counts(source: Path) -> dict[tuple[str, int], int]:
    """(noun lemma, sense number) → how often the sense-tagged corpus used it (``cntlist.rev``)."""
    counts: dict[tuple[str, int], int] = {}
    for line in _lines(source / "cntlist.rev"):
        key, number, count = line.split(" ")
        lemma, _, rest = key.partition("%")
        if rest.startswith("1:"):  # ss_type 1: a noun
            counts[(lemma, int(number))] = int(count)
    return counts


def lemmas(source: Path) -> list[str]:
    """``L`` lines from ``index.noun``: each lemma's synsets in sense order, with tagged counts."""
    counts = tagged_counts(source)
    out = []
    for line in _lines(source / "index.noun"):
        fields = line.split()
        lemma, senses = fields[0], int(fields[2])
        offsets = fields[-senses:]
        listed = [f"{o}:{counts[(lemma, n)]}" if counts.get((lemma, n)) else o
                  for n, o in enumerate(offsets, start=1)]
        out.append(f"L\t{_name(lemma)}\t{' '.join(listed)}")
    return sorted(out)


def exceptions(source: Path) -> list[str]:
    """``X`` lines from ``noun.exc``: irregular plurals and their base forms."""
    out = []
    for line in _lines(source / "noun.exc"):
        inflected, *bases = line.split(" ")
        out.append(f"X\t{_name(inflected)}\t{'|'.join(_name(b) for b in bases)}")
    return sorted(out)


def build_text(source: Path) -> str:
    return HEADER + "\n".join([*synsets(source), *lemmas(source), *exceptions(source)]) + "\n"


def write(text: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(out.name + ".tmp")
    with open(temp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9,
                                                  mtime=0) as handle:
        handle.write(text.encode("utf-8"))
    temp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=DEFAULT_SOURCE,
                        help=f"folder with data.noun, index.noun, cntlist.rev, noun.exc "
                             f"(default {DEFAULT_SOURCE})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    try:
        text = build_text(args.wordnet)
    except BuildError as exc:
        print(f"build_wordnet: error: {exc}", file=sys.stderr)
        return 2
    write(text, args.out)
    kinds = {kind: sum(1 for line in text.splitlines() if line.startswith(kind + "\t")) for kind in "SLX"}
    print(f"{args.out}: {kinds['S']} synsets, {kinds['L']} lemmas, {kinds['X']} irregular plurals; "
          f"{len(text.encode()) / 1e6:.1f} MB of text, {args.out.stat().st_size / 1e6:.2f} MB compressed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
