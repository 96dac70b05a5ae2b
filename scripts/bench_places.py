#!/usr/bin/env python3
"""Offline reverse geocoders side by side: accuracy on landmarks, install size, load time, memory.

    .venv/bin/python scripts/bench_places.py [--python OTHER_VENV/bin/python ...]

Each candidate runs in a fresh child process, so its load time and resident memory are its own:
``tagwatch`` (places.Geocoder: reverse_geocode's GeoNames data in flat arrays, great-circle search,
the most populous place whose extent holds the point) and, where importable in the interpreter
given, ``reverse_geocode.get`` and ``reverse_geocoder.search`` (mode 1, no worker processes).
The landmark list names the town a person would type for each photo spot; a candidate scores a
country hit and a town hit per landmark.  Sizes are the installed files of each distribution.
Timings mean something only on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from importlib import metadata

# (name, lat, lon, ISO country, towns a person would search for)
LANDMARKS = [
    ("Eiffel Tower", 48.8584, 2.2945, "FR", {"Paris"}),
    ("Versailles palace", 48.8049, 2.1204, "FR", {"Versailles"}),
    ("Colosseum", 41.8902, 12.4922, "IT", {"Rome"}),
    ("Ponte Vecchio", 43.7680, 11.2531, "IT", {"Florence"}),
    ("Puerta del Sol", 40.4169, -3.7035, "ES", {"Madrid"}),
    ("Brandenburg Gate", 52.5163, 13.3777, "DE", {"Berlin"}),
    ("Trafalgar Square", 51.5080, -0.1281, "GB", {"London"}),
    ("Hagia Sophia", 41.0086, 28.9802, "TR", {"Istanbul"}),
    ("Times Square", 40.7580, -73.9855, "US", {"New York City"}),
    ("Brooklyn Bridge Park", 40.7003, -73.9967, "US", {"New York City", "Brooklyn"}),
    ("Golden Gate Park", 37.7694, -122.4862, "US", {"San Francisco"}),
    ("Waikiki", 21.2766, -157.8260, "US", {"Honolulu"}),
    ("Anchorage downtown", 61.2181, -149.9003, "US", {"Anchorage"}),
    ("Copacabana", -22.9711, -43.1822, "BR", {"Rio de Janeiro"}),
    ("Ushuaia port", -54.8019, -68.3030, "AR", {"Ushuaia"}),
    ("Sydney Opera House", -33.8568, 151.2153, "AU", {"Sydney"}),
    ("Shibuya crossing", 35.6595, 139.7005, "JP", {"Tokyo", "Shibuya"}),
    ("Kinkaku-ji", 35.0394, 135.7292, "JP", {"Kyoto"}),
    ("Marina Bay", 1.2834, 103.8607, "SG", {"Singapore"}),
    ("Central, Hong Kong", 22.2819, 114.1582, "HK", {"Hong Kong"}),
    ("Pyramids of Giza", 29.9792, 31.1342, "EG", {"Giza"}),
    ("Table Mountain cable car", -33.9486, 18.4031, "ZA", {"Cape Town"}),
    ("Reykjavik harbour", 64.1500, -21.9400, "IS", {"Reykjavík", "Reykjavik"}),
    ("Nuuk", 64.1814, -51.6941, "GL", {"Nuuk"}),
    ("Tromsø bridge", 69.6492, 18.9553, "NO", {"Tromsø"}),
    ("Longyearbyen", 78.2232, 15.6267, "SJ", {"Longyearbyen"}),
    ("Suva", -18.1416, 178.4419, "FJ", {"Suva"}),
    ("Labasa, west of the antimeridian", -16.4300, 179.3800, "FJ", {"Labasa"}),
    ("Egvekinot across the antimeridian", 66.3200, -179.1000, "RU", {"Egvekinot"}),
    ("Sheffield (corpus Apple.jpg)", 53.3828, -1.4567, "GB", {"Sheffield"}),
]

CHILD = r"""
import json, sys, time
def rss():
    d = {}
    for line in open('/proc/self/status'):
        if line.startswith(('VmRSS', 'VmHWM')):
            d[line.split(':')[0]] = int(line.split()[1]) / 1024
    return d
import numpy
which, points = sys.argv[1], json.loads(sys.argv[2])
base = rss()
started = time.perf_counter()
if which == 'tagwatch':
    from tagwatch.config import PlacesConfig
    from tagwatch.places import Coordinates, Geocoder
    geocoder, town_km = Geocoder(), PlacesConfig().max_distance_km  # extents as the daemon's default
    first = geocoder.find(Coordinates(*points[0]), town_km)
    def one(lat, lon):
        p = geocoder.find(Coordinates(lat, lon), town_km)
        return (p.country, p.locality) if p else ('', '')
elif which == 'reverse_geocode':
    import reverse_geocode
    reverse_geocode.get(tuple(points[0]))
    def one(lat, lon):
        p = reverse_geocode.get((lat, lon))
        return p['country_code'], p['city']
else:
    import reverse_geocoder
    reverse_geocoder.search([tuple(points[0])], mode=1, verbose=False)
    def one(lat, lon):
        p = reverse_geocoder.search([(float(lat), float(lon))], mode=1, verbose=False)[0]
        return p['cc'], p['name']
load = time.perf_counter() - started
loaded = rss()
answers = [one(lat, lon) for lat, lon in points]
started = time.perf_counter()
for i in range(2000):
    one(points[i % len(points)][0] + 1e-4 * (i // len(points)), points[i % len(points)][1])
per = (time.perf_counter() - started) / 2000
print(json.dumps({'load_s': load, 'rss_mb': loaded['VmRSS'] - base['VmRSS'],
                  'peak_mb': loaded['VmHWM'] - base['VmRSS'], 'lookup_ms': per * 1000,
                  'answers': answers}))
"""


def installed_mb(distribution: str) -> float | None:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for f in files:
        with contextlib.suppress(OSError):
            total += f.locate().stat().st_size
    return total / 1e6


def run(python: str, which: str) -> dict | None:
    points = [(lat, lon) for _, lat, lon, _, _ in LANDMARKS]
    done = subprocess.run([python, "-c", CHILD, which, json.dumps(points)], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", action="append", default=[],
                        help="another interpreter whose reverse_geocode/reverse_geocoder to measure too")
    args = parser.parse_args()
    print("installed size (MB): " + ", ".join(
        f"{name} {size:.1f}" for name in ("reverse_geocode", "reverse_geocoder", "scipy", "pycountry")
        if (size := installed_mb(name)) is not None))
    rows = []
    for python in [sys.executable, *args.python]:
        for which in ("tagwatch", "reverse_geocode", "reverse_geocoder"):
            if which == "tagwatch" and python != sys.executable:
                continue
            result = run(python, which)
            if result is None or any(r["which"] == which for r in rows):
                continue
            result["which"] = which
            rows.append(result)
    print(f"{'candidate':<18} {'load s':>7} {'RSS MB':>7} {'peak MB':>8} {'lookup ms':>10} {'country':>8} "
          f"{'town':>6}")
    for r in rows:
        countries = sum(a[0] == want for a, (*_, want, _) in zip(r["answers"], LANDMARKS, strict=True))
        towns = sum(a[1] in names for a, (*_, names) in zip(r["answers"], LANDMARKS, strict=True))
        print(f"{r['which']:<18} {r['load_s']:>7.2f} {r['rss_mb']:>7.0f} {r['peak_mb']:>8.0f} "
              f"{r['lookup_ms']:>10.3f} {countries:>5}/{len(LANDMARKS)} {towns:>3}/{len(LANDMARKS)}")
    print("\nwhere a candidate's town differs from what a person would search for:")
    for i, (name, *_, names) in enumerate(LANDMARKS):
        misses = [f"{r['which']}: {r['answers'][i][1] or '-'} ({r['answers'][i][0]})" for r in rows
                  if r["answers"][i][1] not in names]
        if misses:
            print(f"  {name} ({' / '.join(sorted(names))}): " + "; ".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
