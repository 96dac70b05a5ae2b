"""Places: GPS coordinates → country, region and locality keywords and location fields, offline.

Real JPEGs (the shared corpus's six photos with GPS, and photos the tests geotag with exiftool), the
real GeoNames data loaded once per session, a real store and exiftool to read back what was written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    CORPUS,
    Daemon,
    Env,
    exif_keywords,
    exiftool_read,
    noise_jpeg,
    status,
    tagwatch,
    wait_for,
    write_config,
)
from procstats import status_mb
from tagwatch.config import ConfigError, PlacesConfig, TaggingConfig, WriteConfig, parse_config
from tagwatch.formats import content_key
from tagwatch.geotag import Places
from tagwatch.metadata import DESCRIPTION_FIELDS, ExifTool, FileChanged, Filled, KeywordWriter
from tagwatch.outcomes import Status
from tagwatch.overrides import parse_overrides
from tagwatch.pipeline import Pipeline
from tagwatch.places import Coordinates, Geocoder, coordinates
from tagwatch.queue import Move
from tagwatch.rebuild import rebuild
from tagwatch.store import Store
from tagwatch.vocabulary import parse_tag_list
from tagwatch.writeback import TagRules, Writeback, WriteJob, write_file
from test_encoder import IDLE_RSS_LIMIT_MB
from test_web import page_alone

LOCATION = ("IPTC:City", "IPTC:Province-State", "IPTC:Country-PrimaryLocationName",
            "IPTC:Country-PrimaryLocationCode", "XMP-photoshop:City", "XMP-photoshop:State",
            "XMP-photoshop:Country", "XMP-iptcCore:CountryCode")
FLORENCE = ["-GPSLatitude=43.7731", "-GPSLatitudeRef=N", "-GPSLongitude=11.2560", "-GPSLongitudeRef=E"]
ROME = ["-GPSLatitude=41.8986", "-GPSLatitudeRef=N", "-GPSLongitude=12.4769", "-GPSLongitudeRef=E"]

# The six corpus photos with GPS, each checked by hand against a map once:
#  Apple: Sheffield city centre (Fargate), 0.6 km from GeoNames' Sheffield point.
#  GPS: the Tyne valley west of Newcastle, between Horsley (4.2 km) and Prudhoe (5.1 km).
#  GoPro: Sunset Park, Brooklyn; GeoNames' nearest point is "Sunset Park"-sized districts, and the
#    place whose extent holds the photo with the most people is New York City (6.3 km from its point).
#  Google: Madrid's Carabanchel/Arganzuela edge, 2.1 km south-west of the Puerta del Sol.
#  Ricoh2: fields of the Hoya de Huesca, 6.2 km east of Almudévar (Aragon).
#  ultrahdr: Anji county, Huzhou, Zhejiang.  Anji's county town is not in GeoNames' cities1000; the
#    nearest place there is Deqing, 23 km away, beyond the 15 km default: country and region only.
CORPUS_PLACES = {
    "exiftool__Apple.jpg": ["United Kingdom", "England", "Sheffield"],
    "exiftool__GPS.jpg": ["United Kingdom", "England", "Horsley"],
    "exiftool__GoPro.jpg": ["United States", "New York", "New York City"],
    "exiftool__Google.jpg": ["Spain", "Madrid"],  # region and city are both Madrid: one level
    "exiftool__Ricoh2.jpg": ["Spain", "Aragon", "Almudévar"],
    "pillow__ultrahdr.jpg": ["China", "Zhejiang"],
}
CITIES = {"exiftool__Apple.jpg": "Sheffield", "exiftool__GPS.jpg": "Horsley",
          "exiftool__Google.jpg": "Madrid", "exiftool__GoPro.jpg": "New York City",
          "exiftool__Ricoh2.jpg": "Almudévar"}
# GPS blocks that hold no usable coordinates (the corpus has two)
CORPUS_MALFORMED = {
    "exiftool__InfiRay.jpg": "EXIF GPSLatitude is missing or empty",
    "pillow__exif_gps.jpg": "EXIF GPSLatitudeRef is missing",
}


@pytest.fixture(scope="session")
def geocoder() -> Geocoder:
    """One gazetteer for the session (~1 s to load)."""
    return Geocoder()


@pytest.fixture(scope="module")
def exiftool() -> ExifTool:
    tool = ExifTool()
    yield tool
    tool.close()


def places(tmp_path: Path, geocoder: Geocoder, **settings: object) -> Places:
    return Places(PlacesConfig(**settings), Store(tmp_path / "places.db"), geocoder)  # type: ignore[arg-type]


def geotag(exiftool: ExifTool, photo: Path, *args: str) -> Path:
    out, err = exiftool.execute("-overwrite_original", *args, str(photo))
    assert "1 image files updated" in out, err
    return photo


def read_fields(photo: Path, *tags: str) -> dict[str, object]:
    out = exiftool_read("-j", "-G1", "-charset", "iptc=UTF8", *(f"-{t}" for t in tags), str(photo))
    record = json.loads(out)[0]
    record.pop("SourceFile")
    return record


def as_list(value: object) -> list[str]:
    return [] if value is None else [str(v) for v in value] if isinstance(value, list) else [str(value)]


def copy(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


# -- coordinates → place -----------------------------------------------------------------------

def test_every_gps_photo_in_the_corpus_gets_its_hand_checked_place(
        tmp_path: Path, geocoder: Geocoder, exiftool: ExifTool, caplog: pytest.LogCaptureFixture) -> None:
    finder = places(tmp_path, geocoder)
    reader = KeywordWriter(exiftool)
    found = {}
    for name in [*CORPUS_PLACES, *CORPUS_MALFORMED]:
        with caplog.at_level(logging.DEBUG, logger="tagwatch.geotag"):
            placed = finder.decide(name, None, reader.read(CORPUS / name).gps, {})
        found[name] = placed.claim.levels()
    assert found == {**CORPUS_PLACES, **{name: [] for name in CORPUS_MALFORMED}}
    for name, reason in CORPUS_MALFORMED.items():  # one debug line each, naming the file and why
        assert any(r.message.startswith(f"{name}: no place: {reason}") for r in caplog.records)


NO_FIX = ["-GPSLatitude=0", "-GPSLatitudeRef=N", "-GPSLongitude=0", "-GPSLongitudeRef=E"]
PARIS_XMP = ["-XMP-exif:GPSLatitude=48.8530 N", "-XMP-exif:GPSLongitude=2.3499 E"]
# Each case: exiftool arguments, then what it must give (levels) or why not (a reason)
EDGES = {
    "ocean": (["-GPSLatitude=30", "-GPSLatitudeRef=N", "-GPSLongitude=40", "-GPSLongitudeRef=W"], []),
    "zero-zero": (["-GPSLatitude=0", "-GPSLatitudeRef=N", "-GPSLongitude=0", "-GPSLongitudeRef=E"],
                  "EXIF coordinates are 0/0"),
    "north pole": (["-GPSLatitude=90", "-GPSLatitudeRef=N", "-GPSLongitude=0", "-GPSLongitudeRef=E"], []),
    "south pole": (["-GPSLatitude=90", "-GPSLatitudeRef=S", "-GPSLongitude=0", "-GPSLongitudeRef=E"], []),
    "south and east": (["-GPSLatitude=33.8568", "-GPSLatitudeRef=S", "-GPSLongitude=151.2153",
                        "-GPSLongitudeRef=E"], ["Australia", "New South Wales", "Sydney"]),
    "the same, north": (["-GPSLatitude=33.8568", "-GPSLatitudeRef=N", "-GPSLongitude=151.2153",
                         "-GPSLongitudeRef=E"], []),  # the Pacific: the reference decides
    "south and west": (["-GPSLatitude=22.9068", "-GPSLatitudeRef=S", "-GPSLongitude=43.1729",
                        "-GPSLongitudeRef=W"], ["Brazil", "Rio de Janeiro"]),
    # 179.95° E, its nearest place (Egvekinot, 179.12° W) 42 km away across the antimeridian
    "antimeridian east": (["-GPSLatitude=66.32", "-GPSLatitudeRef=N", "-GPSLongitude=179.95",
                           "-GPSLongitudeRef=E"], ["Russia", "Chukotka"]),
    # 179.99° W, Labasa (179.36° E, Fiji's Northern division) 69 km away; a search on plain degrees
    # would find Tubou (Eastern division, 230 km) instead
    "antimeridian west": (["-GPSLatitude=16.43", "-GPSLatitudeRef=S", "-GPSLongitude=179.99",
                           "-GPSLongitudeRef=W"], ["Fiji", "Northern"]),
    "XMP signed": (["-XMP-exif:GPSLatitude=33.8568 S", "-XMP-exif:GPSLongitude=151.2153 E"],
                   ["Australia", "New South Wales", "Sydney"]),
    # A camera's EXIF without a fix must not hide the position a geotagger wrote into XMP
    "EXIF 0/0 beside XMP": ([*NO_FIX, *PARIS_XMP], ["France", "Île-de-France", "Paris"]),
    "EXIF without reference beside XMP": (["-GPSLatitude=48.8530", "-GPSLongitude=2.3499",
                                           "-GPSLongitudeRef=E", *PARIS_XMP],
                                          ["France", "Île-de-France", "Paris"]),
    "EXIF 0/0 beside XMP 0/0": ([*NO_FIX, "-XMP-exif:GPSLatitude=0", "-XMP-exif:GPSLongitude=0"],
                                "EXIF coordinates are 0/0"),
    "no reference": (["-GPSLatitude=43.7731", "-GPSLongitude=11.2560", "-GPSLongitudeRef=E"],
                     "EXIF GPSLatitudeRef is missing"),
    "bad reference": (["-GPSLatitude=43.7731", "-GPSLatitudeRef#=X", "-GPSLongitude=11.2560",
                       "-GPSLongitudeRef=E"], "EXIF GPSLatitudeRef 'X' is not N or S"),
    "latitude only": (["-GPSLatitude=43.7731", "-GPSLatitudeRef=N"], "EXIF GPSLongitude is missing"),
    "out of range": (["-GPSLatitude=95", "-GPSLatitudeRef=N", "-GPSLongitude=11.2560",
                      "-GPSLongitudeRef=E"], "EXIF coordinates 95.0, 11.256 are out of range"),
}


def test_sea_poles_antimeridian_hemispheres_and_malformed_tags(
        tmp_path: Path, geocoder: Geocoder, exiftool: ExifTool, caplog: pytest.LogCaptureFixture) -> None:
    finder = places(tmp_path, geocoder, country_distance_km=100.0)  # Fiji's case needs 69 km
    reader = KeywordWriter(exiftool)
    source = noise_jpeg(tmp_path / "source.jpg", seed=1, size=(32, 24))
    found: dict[str, object] = {}
    for i, (case, (args, _)) in enumerate(EDGES.items()):
        photo = tmp_path / f"edge-{i}.jpg"
        shutil.copyfile(source, photo)
        geotag(exiftool, photo, *args)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="tagwatch.geotag"):
            placed = finder.decide(str(photo), None, reader.read(photo).gps, {})
        found[case] = (placed.claim.levels() if placed.where is not None else
                       next(r.message.split(": no place: ")[1] for r in caplog.records))
    expected = {case: want if isinstance(want, list) else found[case] if str(found[case]).startswith(want)
                else want for case, (_, want) in EDGES.items()}
    assert found == expected


def test_distance_rules_and_the_country_names_people_search_for(tmp_path: Path, geocoder: Geocoder) -> None:
    finder = places(tmp_path, geocoder, max_distance_km=2.0, country_distance_km=30.0)
    near_madrid = Coordinates(40.4168, -3.7038)  # the Puerta del Sol
    assert finder.claim(near_madrid)[1].levels() == ["Spain", "Madrid"]
    desert = Coordinates(23.0, 5.52)  # the Ahaggar, 24 km north of Tamanrasset's centre
    place, found = finder.claim(desert)
    assert place is not None and 20 < place.distance_km < 30
    assert (found.country, found.region, found.locality) == ("Algeria", "Tamanrasset", "")  # no town
    assert not places(tmp_path, geocoder, max_distance_km=2.0, country_distance_km=20.0).claim(desert)[1]
    seoul = finder.claim(Coordinates(37.5665, 126.978))[1]
    moscow = finder.claim(Coordinates(55.7558, 37.6173))[1]
    assert (seoul.country, seoul.code, moscow.country, moscow.code) == ("South Korea", "KOR", "Russia", "RUS")


# A big city's disc reaches across borders: Rome's holds the Vatican, Shenzhen's the north of Hong
# Kong, Ciudad Juárez's downtown El Paso.  Each point was checked on a map; the country (and so the
# region and the location fields) must be the one the photo was taken in.
BORDERS = {
    "St Peter's Basilica": (41.9029, 12.4534, ["Vatican City"], "VAT"),
    "St Peter's Square": (41.9022, 12.4572, ["Vatican City"], "VAT"),
    "Vatican Museums": (41.9065, 12.4536, ["Vatican City"], "VAT"),
    "Castel Sant'Angelo": (41.9031, 12.4663, ["Italy", "Lazio", "Rome"], "ITA"),
    "Piazza Navona": (41.8992, 12.4731, ["Italy", "Lazio", "Rome"], "ITA"),
    "Monte Carlo casino": (43.7393, 7.4277, ["Monaco", "Municipality of Monaco"], "MCO"),
    "San Marino": (43.9356, 12.4473, ["San Marino"], "SMR"),
    "Vaduz": (47.1410, 9.5209, ["Liechtenstein", "Vaduz"], "LIE"),
    "Andorra la Vella": (42.5063, 1.5218, ["Andorra", "Andorra la Vella"], "AND"),
    "downtown El Paso": (31.7587, -106.4869, ["United States", "Texas", "El Paso"], "USA"),
    "Yuen Long, Hong Kong": (22.4451, 114.0228, ["Hong Kong", "New Territories"], "HKG"),
    "Basel": (47.5596, 7.5886, ["Switzerland", "Basel-City", "Basel"], "CHE"),
    "Weil am Rhein": (47.5950, 7.6100, ["Germany", "Baden-Wurttemberg", "Weil am Rhein"], "DEU"),
}


def test_a_photo_gets_the_country_it_was_taken_in_not_the_big_city_next_door(
        tmp_path: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    finder = places(tmp_path, geocoder, fill_location=True)
    reader = KeywordWriter(exiftool)
    source = noise_jpeg(tmp_path / "source.jpg", seed=2, size=(32, 24))
    found, expected = {}, {}
    for i, (spot, (lat, lon, levels, code)) in enumerate(BORDERS.items()):
        photo = tmp_path / f"border-{i}.jpg"
        shutil.copyfile(source, photo)
        geotag(exiftool, photo, f"-GPSLatitude={abs(lat)}", f"-GPSLatitudeRef={'N' if lat >= 0 else 'S'}",
               f"-GPSLongitude={abs(lon)}", f"-GPSLongitudeRef={'E' if lon >= 0 else 'W'}")
        placed = finder.decide(str(photo), None, reader.read(photo).gps, {})
        found[spot] = (placed.claim.levels(), placed.fill["XMP-photoshop:Country"],
                       placed.fill["XMP-iptcCore:CountryCode"])
        expected[spot] = (levels, levels[0], code)
    assert found == expected
    # A point answered under the rules of before (Rome for St Peter's) is not taken from the cache
    store = Store(tmp_path / "upgraded.db")
    earlier = finder.geocoder.source.split(",")[0]  # the data's name and version alone, as it was keyed
    store.put_place(41.9029, 12.4534, earlier, ("IT", "Lazio", "Rome", 4.947))
    upgraded = Places(PlacesConfig(), store, geocoder)
    assert upgraded.find(Coordinates(41.9029, 12.4534)).locality == "Vatican City"  # type: ignore[union-attr]
    assert upgraded.fingerprint != PlacesConfig().fingerprint()  # photos placed before are placed again


# Photos 15-20 km from a very large city's GeoNames point, inside its (20 km) estimated extent but
# beyond the 15 km claim distance, each standing in a town of its own (xO #1): the big city must not
# win as the town only to be refused, leaving no town at all.  Each: the levels above the town, and
# the town where the disc rule gives the one a person names (else any town within reach).
RING = {
    # Tai Po (274,100 people, its point 0.13 km away); Hong Kong's point 19.1 km.  Tai Po lies inside
    # the extent of GeoNames' "New Territories" (3.98 million people, 6.7 km), which may claim it
    "Tai Po": (22.45, 114.17, ["Hong Kong"], None),
    # Kingston upon Thames (0.2 km), in Greater London; London's point 16.2 km
    "Kingston upon Thames": (51.4123, -0.3007, ["United Kingdom", "England"], "Kingston upon Thames"),
    # Kawasaki, Kanagawa (its point 1.7 km away), inside Yokohama's extent (11.8 km); Tokyo's 17.7 km
    "Kawasaki": (35.5308, 139.7029, ["Japan", "Kanagawa"], None),
}


def test_a_photo_near_a_big_citys_edge_gets_the_town_it_stands_in_not_no_town(
        tmp_path: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    finder = places(tmp_path, geocoder, fill_location=True)
    reader = KeywordWriter(exiftool)
    source = noise_jpeg(tmp_path / "source.jpg", seed=3, size=(32, 24))
    for i, (spot, (lat, lon, above, town)) in enumerate(RING.items()):
        photo = tmp_path / f"ring-{i}.jpg"
        shutil.copyfile(source, photo)
        geotag(exiftool, photo, f"-GPSLatitude={lat}", "-GPSLatitudeRef=N", f"-GPSLongitude={abs(lon)}",
               f"-GPSLongitudeRef={'E' if lon >= 0 else 'W'}")
        placed = finder.decide(str(photo), None, reader.read(photo).gps, {})
        lines = finder.describe(placed)
        assert placed.place is not None and placed.place.distance_km <= 15, (spot, lines)
        assert placed.claim.locality, (spot, lines)  # a town, never nothing with one right there
        assert not any("locality not claimed" in line for line in lines), (spot, lines)
        assert placed.fill["XMP-photoshop:City"] == placed.claim.locality
        assert placed.claim.levels()[:len(above)] == above, (spot, lines)
        if town is not None:  # Greater London's edge: the borough's town, as a person says it
            assert placed.claim.levels() == [*above, town], (spot, lines)
    # With a shorter claim distance a city's extent reaches only that far: 9 km from Paris' point,
    # at the basilica of Saint-Denis, max_distance_km = 5 gives Saint-Denis, not Paris refused
    near = places(tmp_path, geocoder, max_distance_km=5.0)
    assert near.claim(Coordinates(48.9356, 2.3597))[1].levels() == ["France", "Île-de-France", "Saint-Denis"]
    # ... the default gives Paris there, and each answer is cached under its own claim distance
    assert places(tmp_path, geocoder).claim(Coordinates(48.9356, 2.3597))[1].locality == "Paris"
    assert near.claim(Coordinates(48.9356, 2.3597))[1].locality == "Saint-Denis"


def test_each_point_is_looked_up_once_and_cached_by_its_coordinates(tmp_path: Path) -> None:
    store = Store(tmp_path / "tw.db")
    finder = Places(PlacesConfig(), store)  # its own gazetteer, not loaded yet
    assert not finder.geocoder.loaded
    first = finder.find(Coordinates(43.7731, 11.2560))
    assert finder.geocoder.loaded and first is not None and first.locality == "Florence"
    again = Places(PlacesConfig(), store)  # a restart: same store, new process state
    assert again.find(Coordinates(43.7731, 11.2560)) == first
    assert not again.geocoder.loaded  # answered by the store
    assert coordinates({"GPS:GPSLatitude": "nan", "GPS:GPSLatitudeRef": "N", "GPS:GPSLongitude": "1",
                        "GPS:GPSLongitudeRef": "E"})[0] is None


@pytest.mark.parametrize(("section", "message"), [
    ("enabled = 'yes'", "places.enabled must be true or false"),
    ("root = '|places'", "places.root must be a keyword path"),
    ("max_distance_km = 0", "places.max_distance_km must be more than 0 and at most 250 km"),
    ("country_distance_km = 400", "places.country_distance_km must be more than 0 and at most 250 km"),
    ("max_distance_km = 80", "places.max_distance_km must keep max_distance_km (80) at most "
                             "country_distance_km (50)"),
    ("fill_location = 1", "places.fill_location must be true or false"),
    ("radius = 3", "unknown key 'places.radius'"),
])
def test_places_config_errors_name_the_key(section: str, message: str, tmp_path: Path) -> None:
    import tomllib

    with pytest.raises(ConfigError, match=f"^conf.toml: {re.escape(message)}"):
        parse_config(tomllib.loads(f"[places]\n{section}\n"), tmp_path, "conf.toml")
    config = parse_config(tomllib.loads("[places]\nroot = ''\nfill_location = true\n"), tmp_path, "c")
    assert (config.places.root, config.places.fill_location, config.places.enabled) == ("", True, True)


# -- through the pipeline ------------------------------------------------------------------------

def place_env(tmp_path: Path, checkpoint: Path, geocoder: Geocoder | None, **settings: object) -> Env:
    env = Env(tmp_path, checkpoint, TaggingConfig(threshold=-1.0, top_k=2),
              places=PlacesConfig(**settings))  # type: ignore[arg-type]
    if geocoder is not None:
        env.pipeline.places.geocoder = geocoder
    return env


def test_corpus_photos_get_their_places_in_iptc_xmp_the_hierarchy_and_empty_location_fields(
        tmp_path: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    """What the pipeline hands the writer for each corpus photo (its GPS read, its place decided),
    written and read back; the pipeline's own path is the GPS-edit test below."""
    finder = places(tmp_path, geocoder, fill_location=True)
    writer = KeywordWriter(exiftool)
    # pillow__ultrahdr.jpg is a truncated JPEG (Pillow's test sample): never tagged, places included
    photos = [copy(CORPUS / name, tmp_path / "in") for name in CORPUS_PLACES if "ultrahdr" not in name]
    for photo in photos:
        state = writer.inspect(photo)
        placed = finder.decide(str(photo), None, state.photo.gps, state.sidecar.gps)
        writer.apply(writer.plan(photo, ["beach", *placed.keywords], paths=placed.keywords, state=state,
                                 fill=placed.fill))
    for photo in photos:
        levels = CORPUS_PLACES[photo.name]
        got = read_fields(photo, "IPTC:Keywords", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", *LOCATION)
        assert set(levels) <= set(as_list(got["IPTC:Keywords"])), photo.name
        assert set(levels) <= set(as_list(got["XMP-dc:Subject"])), photo.name
        assert "places|" + "|".join(levels) in as_list(got["XMP-lr:HierarchicalSubject"]), photo.name
        country = levels[0]
        assert (got["XMP-photoshop:Country"], got["IPTC:Country-PrimaryLocationName"]) == (country, country)
        code = {"United Kingdom": "GBR", "United States": "USA", "Spain": "ESP"}[country]
        assert (got["IPTC:Country-PrimaryLocationCode"], got["XMP-iptcCore:CountryCode"]) == (code, code)
        assert got["XMP-photoshop:City"] == got["IPTC:City"] == CITIES[photo.name]
    # exiftool__GPS.jpg came with IPTC City and Province-State blank and its country filled in
    gps = read_fields(tmp_path / "in" / "exiftool__GPS.jpg", "IPTC:City", "IPTC:Province-State")
    assert gps == {"IPTC:City": "Horsley", "IPTC:Province-State": "England"}


def test_a_gps_edit_moves_the_places_without_encoding_and_untag_restores_the_photo(
        tmp_path: Path, tiny_checkpoint: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    env = place_env(tmp_path, tiny_checkpoint, geocoder, fill_location=True)
    fields = ("IPTC:Keywords", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", *LOCATION)
    try:
        photo = noise_jpeg(tmp_path / "in" / "trip.jpg", seed=7)
        geotag(exiftool, photo, *FLORENCE, "-IPTC:Keywords=Anna", "-XMP-dc:Subject=Anna",
               "-IPTC:Province-State=Toscana")  # a person's keyword and region, no hierarchical field
        before = read_fields(photo, *fields)
        assert env.run(photo) == {"trip.jpg": Status.TAGGED}
        encoded = env.encoded()
        got = read_fields(photo, *fields)
        assert {"Anna", "Italy", "Tuscany", "Florence"} <= set(as_list(got["IPTC:Keywords"]))
        assert "places|Italy|Tuscany|Florence" in as_list(got["XMP-lr:HierarchicalSubject"])
        # the person's IPTC region stays, and its empty XMP twin gets that, not "Tuscany": readers take
        # either for the region, and the two disagreed
        assert (got["IPTC:City"], got["IPTC:Province-State"], got["XMP-photoshop:State"]) == (
            "Florence", "Toscana", "Toscana")

        geotag(exiftool, photo, *ROME)  # a metadata edit: same pixels
        assert env.run(photo) == {"trip.jpg": Status.TAGGED}
        assert env.encoded() == encoded  # no image encoded again
        got = read_fields(photo, *fields)
        keywords = set(as_list(got["IPTC:Keywords"]))
        assert {"Anna", "Italy", "Lazio", "Rome"} <= keywords and not {"Tuscany", "Florence"} & keywords
        assert set(as_list(got["XMP-dc:Subject"])) == keywords
        hierarchy = as_list(got["XMP-lr:HierarchicalSubject"])
        assert "places|Italy|Lazio|Rome" in hierarchy and not [h for h in hierarchy if "Florence" in h]
        assert (got["IPTC:City"], got["XMP-photoshop:City"], got["IPTC:Province-State"]) == (
            "Rome", "Rome", "Toscana")

        assert "Anna" in hierarchy  # the field we created carries the person's keyword too

        assert env.pipeline.untag(str(photo)).status == Status.UNTAGGED
        assert read_fields(photo, *fields) == before  # keywords and location fields exactly as they were
        assert "XMP-lr:HierarchicalSubject" not in before
    finally:
        env.close()


def test_a_photo_without_gps_gets_its_places_when_it_is_geotagged_later(
        tmp_path: Path, tiny_checkpoint: Path, exiftool: ExifTool) -> None:
    env = place_env(tmp_path, tiny_checkpoint, None, root="where")  # its own gazetteer: lazy
    try:
        photo = noise_jpeg(tmp_path / "in" / "beach.jpg", seed=8)
        assert env.run(photo) == {"beach.jpg": Status.TAGGED}
        predicted = set(as_list(read_fields(photo, "IPTC:Keywords")["IPTC:Keywords"]))
        assert len(predicted) == 2
        assert not env.pipeline.places.geocoder.loaded  # no coordinates: GeoNames never loaded

        geotag(exiftool, photo, "-GPSLatitude=33.8568", "-GPSLatitudeRef=S", "-GPSLongitude=151.2153",
               "-GPSLongitudeRef=E")  # geotagged from a track log
        assert env.run(photo) == {"beach.jpg": Status.TAGGED}
        got = read_fields(photo, "IPTC:Keywords", "XMP-lr:HierarchicalSubject")
        assert set(as_list(got["IPTC:Keywords"])) == predicted | {"Australia", "New South Wales", "Sydney"}
        assert "where|Australia|New South Wales|Sydney" in as_list(got["XMP-lr:HierarchicalSubject"])
        assert env.encoded() == 1

        geotag(exiftool, photo, "-GPS:all=")  # the geotag undone: our place keywords go, nothing else
        assert env.run(photo) == {"beach.jpg": Status.TAGGED}
        assert set(as_list(read_fields(photo, "IPTC:Keywords")["IPTC:Keywords"])) == predicted
    finally:
        env.close()


def test_a_correction_removing_a_place_takes_it_out_with_the_levels_below_until_it_is_undone(
        tmp_path: Path, tiny_checkpoint: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    """xW #1: ✕ on a place keyword on the review page wrote `remove = ["England"]`, and the log said
    "re-scored 13 photos, rewrote 0": the place stayed in IPTC, XMP and the hierarchy, through
    restarts and edits of the photo.  A correction removing a level takes it out with the levels below
    it (Florence lies in Tuscany: `places|Italy|Tuscany|Florence` would still name it), their location
    fields too, in append mode as in any; the photo read again keeps them out; undo puts them back."""
    env = place_env(tmp_path, tiny_checkpoint, geocoder, fill_location=True)
    fields = ("IPTC:Keywords", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", *LOCATION)
    root = tmp_path / "in"
    photo = geotag(exiftool, noise_jpeg(root / "duomo.jpg", seed=14), *FLORENCE)

    def correct(rule: str) -> tuple[int, int]:
        """The overrides file edited (as the review page does), and the re-score the daemon runs."""
        env.pipeline.use_overrides(parse_overrides(rule, tmp_path / "overrides.toml", [root]))
        return env.pipeline.retag()

    def where() -> tuple[set[str], list[str], dict[str, object]]:
        got = read_fields(photo, *fields)
        flat = set(as_list(got.pop("IPTC:Keywords")))
        assert set(as_list(got.pop("XMP-dc:Subject"))) == flat
        return flat, [h for h in as_list(got.pop("XMP-lr:HierarchicalSubject")) if "|" in h], got

    try:
        assert env.run(photo) == {"duomo.jpg": Status.TAGGED}
        flat, _, located = where()
        predicted = flat - {"Italy", "Tuscany", "Florence"}
        assert located["IPTC:City"] == "Florence"
        assert correct(f'[[override]]\npath = "{photo}"\nremove = ["tuscany"]\n') == (1, 1)
        taken_out = where()
        flat, hierarchy, located = taken_out
        assert flat == predicted | {"Italy"}
        assert hierarchy == ["places|Italy"]
        assert located == {"IPTC:Country-PrimaryLocationName": "Italy", "XMP-photoshop:Country": "Italy",
                           "IPTC:Country-PrimaryLocationCode": "ITA", "XMP-iptcCore:CountryCode": "ITA"}
        geotag(exiftool, photo, "-XMP-dc:Title=edited")  # an edit: the photo is read and placed again
        assert env.run(photo) == {"duomo.jpg": Status.TAGGED}
        assert where() == taken_out

        assert correct(f'[[override]]\npath = "{photo}"\nremove = ["Florence"]\n') == (1, 1)
        flat, hierarchy, located = where()
        assert flat == predicted | {"Italy", "Tuscany"}
        assert hierarchy == ["places|Italy", "places|Italy|Tuscany"]
        assert "IPTC:City" not in located and located["IPTC:Province-State"] == "Tuscany"

        assert correct("") == (1, 1)  # undone: the places come back, whole
        flat, hierarchy, located = where()
        assert flat == predicted | {"Italy", "Tuscany", "Florence"}
        assert "places|Italy|Tuscany|Florence" in hierarchy and located["IPTC:City"] == "Florence"
    finally:
        env.close()


def test_scan_explain_export_and_the_review_page_leave_out_a_place_a_correction_removes(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """xW #1 through the CLI, with the rule the review page's ✕ writes: `scan` takes `England` and
    the `Sheffield` below it out of the photo, `explain` says the override removed them, `export`
    leaves them out, and the page shows England rejected with its ↺ (it kept a plain ✕).  A folder
    rule's removal of a place is shown where it keeps the place out, not as changing nothing there."""
    root = tmp_path / "photos"
    photo = copy(CORPUS / "exiftool__Apple.jpg", root)
    walk = copy(CORPUS / "exiftool__GPS.jpg", root / "walks")  # United Kingdom, England, Horsley
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=2)
    text = config.read_text().replace('tags = "tags.txt"', 'tags = "tags.txt"\noverrides = "o.toml"')
    config.write_text(text)
    assert tagwatch("scan", "--config", str(config), str(root)).returncode == 0
    assert {"United Kingdom", "England", "Sheffield"} <= set(exif_keywords(photo)["iptc"])
    (config.parent / "o.toml").write_text(f'[[override]]\npath = "{photo}"\nremove = ["England"]\n'
                                          '[[override]]\npath = "walks/**"\nremove = ["Horsley"]\n')
    result = tagwatch("scan", "--config", str(config), str(root))
    assert result.returncode == 0, result.stderr
    assert "took out, as a correction asks: England, Sheffield" in result.stderr, result.stderr
    got = read_fields(photo, "IPTC:Keywords", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject")
    for field in got.values():
        assert not {"England", "Sheffield"} & set(as_list(field)), got
    assert [h for h in as_list(got["XMP-lr:HierarchicalSubject"]) if "|" in h] == ["places|United Kingdom"]

    explained = tagwatch("explain", "--config", str(config), str(photo)).stdout
    assert "place: Sheffield, England, United Kingdom (Sheffield's centre 0.6 km away)" in explained
    assert "  keywords: United Kingdom (hierarchy: places|United Kingdom)" in explained, explained[:600]
    assert "  removed by an override: England, Sheffield" in explained
    exported = tagwatch("export", "--config", str(config), str(photo))
    (keywords,) = json.loads(exported.stdout).values()
    assert keywords[-1] == "United Kingdom" and not {"England", "Sheffield"} & set(keywords)

    assert "Horsley" not in exif_keywords(walk)["iptc"]

    with page_alone(config, root) as site:
        page = site.request("GET", f"/photo/0/{photo.name}")[1].decode()
        walked = site.request("GET", f"/photo/0/walks/{walk.name}")[1].decode()
    assert 'data-keyword="England" data-owner="rejected"' in page
    assert 'data-action="undo" data-keyword="England"' in page.replace("\n", " ")
    assert 'data-keyword="Sheffield"' not in page
    assert 'data-keyword="Horsley" data-owner="rejected"' in walked and 'id="idle-removals"' not in walked

    # the photo page reads the photo's recorded coordinates once (the struck-through England and what
    # is on its way both come from them: it read them twice)
    from tagwatch.config import load_config
    from tagwatch.web.library import Library

    store, exiftool = Store(config.parent / "state" / "tagwatch.db"), ExifTool()
    read: list[list[int]] = []
    located = store.located
    store.located = lambda ids: located(read.append(list(ids)) or read[-1])  # type: ignore[method-assign]
    try:
        loaded = load_config(config)
        view = Library(loaded, store, KeywordWriter(exiftool, loaded.write), lambda: True).photo(str(photo))
        assert read == [[store.file(str(photo)).id]], read
    finally:
        exiftool.close()
        store.close()
    assert "England" in view.rejected and view.pending == [], (view.rejected, view.pending)


KYOTO_XMP = ["-XMP-exif:GPSLatitude=35.0116", "-XMP-exif:GPSLongitude=135.7681"]
SAPPORO_XMP = ["-XMP-exif:GPSLatitude=43.0621", "-XMP-exif:GPSLongitude=141.3544"]


def noise_png(path: Path, seed: int) -> Path:
    """A real PNG (its keywords go into its XMP sidecar), made from a noise JPEG's picture."""
    from PIL import Image

    with Image.open(noise_jpeg(path.with_suffix(".src.jpg"), seed=seed)) as image:
        image.save(path)
    path.with_suffix(".src.jpg").unlink()
    return path


@pytest.mark.parametrize("naming", ["photo.jpg.xmp", "photo.xmp"])
def test_a_geotag_written_into_the_sidecar_later_moves_the_places_without_encoding(
        naming: str, tmp_path: Path, tiny_checkpoint: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    """Geotaggers put the coordinates of a RAW (or PNG) into its sidecar; the photo itself never
    changes.  The sidecar's edit is the photo's metadata edit: read again, never encoded; tagwatch's
    own sidecar write does not make the photo look edited again.  A JPEG's camera 0/0 gives way to a
    position in its sidecar."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), WriteConfig(sidecar=naming),
              PlacesConfig(fill_location=True))
    env.pipeline.places.geocoder = geocoder
    try:
        png = noise_png(tmp_path / "in" / "temple.png", seed=12)
        jpeg = geotag(exiftool, noise_jpeg(tmp_path / "in" / "street.jpg", seed=13), *NO_FIX)
        sides = [png.parent / f"temple{'.png' if naming == 'photo.jpg.xmp' else ''}.xmp",
                 jpeg.parent / f"street{'.jpg' if naming == 'photo.jpg.xmp' else ''}.xmp"]
        assert env.run(png, jpeg) == {"temple.png": Status.TAGGED, "street.jpg": Status.TAGGED}
        assert env.run(png, jpeg) == {"temple.png": Status.UNCHANGED, "street.jpg": Status.UNCHANGED}
        picture, encoded = png.read_bytes(), env.encoded()

        assert sides[0].exists() and not sides[1].exists()  # the JPEG's keywords are in the JPEG
        for side in sides:  # a geotagger writes the position into each sidecar (making the JPEG's)
            subprocess.run(["exiftool", "-q", "-overwrite_original", *KYOTO_XMP, str(side)], check=True)
        assert env.run(png, jpeg) == {"temple.png": Status.TAGGED, "street.jpg": Status.TAGGED}
        got = read_fields(sides[0], "XMP-dc:Subject", "XMP-photoshop:City")
        assert {"Japan", "Kyoto"} <= set(as_list(got["XMP-dc:Subject"]))
        assert got["XMP-photoshop:City"] == "Kyoto"
        assert {"Japan", "Kyoto"} <= set(exif_keywords(jpeg)["iptc"])  # the JPEG's keywords stay in it
        assert env.run(png, jpeg) == {"temple.png": Status.UNCHANGED, "street.jpg": Status.UNCHANGED}

        geotag(exiftool, sides[0], *SAPPORO_XMP)  # moved again: the old place comes out
        assert env.run(png, jpeg) == {"temple.png": Status.TAGGED, "street.jpg": Status.UNCHANGED}
        subject = set(as_list(read_fields(sides[0], "XMP-dc:Subject")["XMP-dc:Subject"]))
        assert {"Japan", "Hokkaido", "Sapporo"} <= subject and "Kyoto" not in subject
        assert env.run(png, jpeg) == {"temple.png": Status.UNCHANGED, "street.jpg": Status.UNCHANGED}
        assert env.encoded() == encoded and png.read_bytes() == picture  # nothing encoded or re-saved
    finally:
        env.close()


def test_a_geotag_in_the_other_sidecar_naming_is_read(tmp_path: Path, tiny_checkpoint: Path,
                                                      geocoder: Geocoder) -> None:
    """Lightroom geotags a RAW's ``IMG.xmp`` while tagwatch writes ``IMG.png.xmp`` (the default): the
    edit was noticed (freshness watches both namings) but its position never read."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2), WriteConfig(),
              PlacesConfig())
    env.pipeline.places.geocoder = geocoder
    try:
        png = noise_png(tmp_path / "in" / "temple.png", seed=14)
        assert env.run(png) == {"temple.png": Status.TAGGED}
        lightroom = png.with_suffix(".xmp")
        subprocess.run(["exiftool", "-q", "-o", str(lightroom), *KYOTO_XMP, str(png)], check=True)
        assert env.run(png) == {"temple.png": Status.TAGGED}
        subject = set(as_list(read_fields(png.parent / "temple.png.xmp", "XMP-dc:Subject")["XMP-dc:Subject"]))
        assert {"Japan", "Kyoto"} <= subject
    finally:
        env.close()


def test_a_geotag_in_a_sidecar_two_photos_share_reaches_both_and_is_not_passed_back_and_forth(
        tmp_path: Path, tiny_checkpoint: Path, geocoder: Geocoder) -> None:
    """``IMG_1.jpg`` and ``IMG_1.png`` share ``IMG_1.xmp`` (Lightroom's naming), which tagwatch writes
    for each.  In overwrite mode each photo's write sets the keyword list in its own order (the PNG's
    correction takes out its forest, which the JPG's keeps), so were one photo's write taken for an
    edit of the other's sidecar, the two would rewrite it for ever."""
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2, mode="overwrite"),
              WriteConfig(target="sidecar", sidecar="photo.xmp"), PlacesConfig())
    env.pipeline.places.geocoder = geocoder
    try:
        env.use(["beach", "forest"])
        jpg = noise_jpeg(tmp_path / "in" / "IMG_1.jpg", seed=15)
        png = noise_png(tmp_path / "in" / "IMG_1.png", seed=16)
        side = tmp_path / "in" / "IMG_1.xmp"
        env.pipeline.use_overrides(parse_overrides(f'[[override]]\npath = "{png}"\nremove = ["forest"]\n',
                                                   tmp_path / "o.toml", [tmp_path / "in"]))
        assert env.run(jpg, png) == {"IMG_1.jpg": Status.TAGGED, "IMG_1.png": Status.TAGGED}
        subprocess.run(["exiftool", "-q", "-overwrite_original", *KYOTO_XMP, str(side)], check=True)
        assert env.run(jpg, png) == {"IMG_1.jpg": Status.TAGGED, "IMG_1.png": Status.TAGGED}
        assert {"Japan", "Kyoto"} <= set(as_list(read_fields(side, "XMP-dc:Subject")["XMP-dc:Subject"]))
        changed = side.stat().st_ctime_ns
        for _ in range(2):  # each photo's write came before the other's record: neither looks edited
            assert env.run(jpg, png) == {"IMG_1.jpg": Status.UNCHANGED, "IMG_1.png": Status.UNCHANGED}
        assert side.stat().st_ctime_ns == changed

        # Renamed, the JPG takes its keywords into IMG_3.xmp and out of IMG_1.xmp: tagwatch's writes,
        # no edit of either photo
        renamed = jpg.rename(jpg.with_name("IMG_3.jpg"))
        assert env.pipeline.apply([Move(str(jpg), str(renamed))]) == []
        assert (tmp_path / "in" / "IMG_3.xmp").exists()
        assert env.run(renamed, png) == {"IMG_3.jpg": Status.UNCHANGED, "IMG_1.png": Status.UNCHANGED}
    finally:
        env.close()


def test_sync_keeps_the_places_and_a_new_root_respells_them_without_encoding(
        tmp_path: Path, tiny_checkpoint: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    sync = TaggingConfig(threshold=-1.0, top_k=2, mode="sync")
    env = Env(tmp_path, tiny_checkpoint, sync, places=PlacesConfig())
    env.pipeline.places.geocoder = geocoder
    try:
        photo = geotag(exiftool, noise_jpeg(tmp_path / "in" / "duomo.jpg", seed=9), *FLORENCE)
        assert env.run(photo) == {"duomo.jpg": Status.TAGGED}
        first = set(as_list(read_fields(photo, "IPTC:Keywords")["IPTC:Keywords"])) - {"Italy", "Tuscany",
                                                                                         "Florence"}
        # the [places] root changes (a restart) and the tag list changes: one retag does both
        again = Pipeline(env.store, env.model, KeywordWriter(env.exiftool), sync,
                         places=PlacesConfig(root="where"))
        again.places.geocoder = geocoder
        try:
            again.use_vocabulary(parse_tag_list("harbour\nsnow\n", ("a photo of a {}.",), tmp_path / "t.txt"))
            assert again.retag() == (1, 1)
            assert again.retag() == (0, 0)  # recorded with the new settings: nothing left to do
        finally:
            again.close()
        got = read_fields(photo, "IPTC:Keywords", "XMP-lr:HierarchicalSubject")
        assert set(as_list(got["IPTC:Keywords"])) == {"harbour", "snow", "Italy", "Tuscany", "Florence"}
        assert not first & set(as_list(got["IPTC:Keywords"]))  # sync took out the old predictions only
        hierarchy = as_list(got["XMP-lr:HierarchicalSubject"])
        assert "where|Italy|Tuscany|Florence" in hierarchy and not [h for h in hierarchy if "places|" in h]
        assert env.encoded() == 1
    finally:
        env.close()


def test_places_come_with_the_write_steps_run_apart_as_another_engine_runs_them(
        tmp_path: Path, tiny_checkpoint: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    """An engine that runs the write's three steps itself (the Ray driver plans, a worker writes, the
    driver records) gets the places too: they are decided in plan_ahead, from the metadata it reads."""
    env = place_env(tmp_path, tiny_checkpoint, geocoder, fill_location=True)
    wb, rules, writer = env.pipeline.writeback, env.pipeline.rules, env.pipeline.writer
    assert writer is not None
    try:
        photo = geotag(exiftool, noise_jpeg(tmp_path / "in" / "ponte.jpg", seed=11), *FLORENCE)
        job = WriteJob(str(photo), content_key(photo.read_bytes()), os.lstat(photo), [("beach", 0.3)])
        wb.plan_ahead(job, rules)
        row = env.store.file(str(photo))
        assert row is not None and row.state == "pending"
        assert {"beach", "Italy", "Tuscany", "Florence"} <= set(env.store.ledger(row.id))
        assert env.store.filled(row.id)["IPTC:City"] == (("Florence",), None)  # recorded ahead
        assert "IPTC:City" not in read_fields(photo, "IPTC:City")  # planned, not written yet
        outcome = wb.record_done(job, write_file(writer, job), rules)
        assert outcome.status == Status.TAGGED
        got = read_fields(photo, "IPTC:Keywords", "IPTC:City")
        assert {"beach", "Italy", "Tuscany", "Florence"} <= set(as_list(got["IPTC:Keywords"]))
        assert got["IPTC:City"] == "Florence"
        located = env.store.located([row.id])[row.id]
        assert located.keywords == ("Italy", "Tuscany", "Florence") and located.lat == pytest.approx(43.7731)

        # A save between the plan and the write: the ledger's keywords and fields are withdrawn
        other = geotag(exiftool, noise_jpeg(tmp_path / "in" / "roma.jpg", seed=12), *ROME)
        job = WriteJob(str(other), content_key(other.read_bytes()), os.lstat(other), [("beach", 0.3)])
        wb.plan_ahead(job, rules)
        file_id = env.store.file(str(other)).id
        assert env.store.filled(file_id)["IPTC:City"] == (("Rome",), None)
        geotag(exiftool, other, "-XMP-dc:Title=edited")
        with pytest.raises(FileChanged) as raised:
            write_file(writer, job)
        assert wb.failed(job, raised.value).status == Status.RETRY
        assert env.store.ledger(file_id) == [] and env.store.filled(file_id) == {}
        assert "IPTC:City" not in read_fields(other, "IPTC:City")
    finally:
        env.close()


def test_a_dry_run_shows_the_places_a_scan_writes_and_what_a_tagged_photo_carries(
        tmp_path: Path, tiny_checkpoint: Path, exiftool: ExifTool) -> None:
    """Issue: `scan --dry-run` of a photo with GPS printed `(no tag above threshold)` where the scan
    wrote its place, and a photo already tagged printed nothing (`1 unchanged`)."""
    config = write_config(tmp_path / "conf", tiny_checkpoint)
    photo = geotag(exiftool, noise_jpeg(tmp_path / "photos" / "florence.jpg", seed=31), *FLORENCE)
    data = photo.read_bytes()

    def dry(*flags: str) -> tuple[str, str]:
        result = tagwatch("scan", "--dry-run", *flags, "--config", str(config), str(photo))
        assert result.returncode == 0, result.stderr
        path, line = result.stdout.rstrip("\n").split("\t")
        assert path == str(photo)
        return line, result.stderr

    line, _ = dry("--threshold", "1")
    assert line == "(no tag above threshold); place: Italy, Tuscany, Florence"
    line, _ = dry()
    tags, place = line.split("; place: ")
    assert place == "Italy, Tuscany, Florence"
    predicted = [entry.rsplit(" (", 1)[0] for entry in tags.split(", ")]
    assert len(predicted) >= 3 and photo.read_bytes() == data
    assert tagwatch("scan", "--config", str(config), str(photo)).returncode == 0
    assert set(exif_keywords(photo)["iptc"]) == {*predicted, "Italy", "Tuscany", "Florence"}
    line, stderr = dry()
    assert line == f"{', '.join(predicted)}; place: Italy, Tuscany, Florence (already in the file)"
    assert "scan: 1 photo: 1 unchanged" in stderr


def test_places_leave_a_description_tagwatch_filled_to_its_own_stage(
        tmp_path: Path, geocoder: Geocoder, exiftool: ExifTool) -> None:
    """The ledger's filled fields hold a caption's description beside the location fields.  The places
    stage decides only its own: a photo written with places on and captions off (turned off since)
    keeps the description tagwatch wrote earlier, and untag still takes it out."""
    caption = "a red circle above a blue square"
    photo = geotag(exiftool, noise_jpeg(tmp_path / "in" / "ponte.jpg", seed=13), *FLORENCE,
                   f"-XMP-dc:Description={caption}", f"-IPTC:Caption-Abstract={caption}")
    store = Store(tmp_path / "tw.db")
    try:
        st, key = os.lstat(photo), content_key(photo.read_bytes())
        file_id = store.record_file(str(photo), key=key, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                    state="done")
        ours = {name: Filled((caption,), None) for name in DESCRIPTION_FIELDS}
        store.set_filled(file_id, ours)
        finder = Places(PlacesConfig(fill_location=True), store, geocoder)
        decided = finder.decide(str(photo), file_id, {}, {})
        assert not set(decided.filled) & set(DESCRIPTION_FIELDS)
        wb = Writeback(store, KeywordWriter(exiftool), finder)
        outcome = wb.finish(WriteJob(str(photo), key, st, [("beach", 0.3)]), TagRules())
        assert outcome.status == Status.TAGGED
        got = read_fields(photo, *DESCRIPTION_FIELDS, "IPTC:City")
        assert got == {"XMP-dc:Description": caption, "IPTC:Caption-Abstract": caption,
                       "IPTC:City": "Florence"}
        assert store.filled(file_id)["XMP-dc:Description"] == ((caption,), None)  # still ours
        assert wb.untag(str(photo)).status == Status.UNTAGGED
        assert read_fields(photo, *DESCRIPTION_FIELDS, "IPTC:City") == {}
    finally:
        store.close()


def test_db_rebuild_carries_the_filled_fields_located_files_and_place_cache(tmp_path: Path) -> None:
    """The filled fields are ledger (what untag puts back); located files and the place cache save a
    GPS re-read and a gazetteer load.  A database from before places (no such tables) rebuilds too."""
    database = tmp_path / "state" / "tagwatch.db"
    store = Store(database)
    kept = store.record_file("/p/kept.jpg", key=b"k", size=1, mtime_ns=1, state="done")
    store.set_filled(kept, {"IPTC:City": (("Florence",), " ")})
    store.set_located(kept, 43.7731, 11.256, ["Italy", "Tuscany", "Florence"])
    store.put_place(43.7731, 11.256, "test", ("Italy", "Tuscany", "Florence", 1.0))
    lost = store.record_file("/p/lost.jpg", key=b"l", size=1, mtime_ns=1, state="done")
    store.set_filled(lost, {"IPTC:City": (("Rome",), None)})
    store.close()
    with sqlite3.connect(database) as db:  # the file row of one photo is lost, its other rows are not
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("DELETE FROM files WHERE id = ?", (lost,))

    aside, counts, problems = rebuild(database)
    assert problems == [] and aside.exists()
    assert (counts["filled"], counts["located"], counts["places"]) == (1, 1, 1)
    store = Store(database)
    try:
        assert store.filled(kept) == {"IPTC:City": (("Florence",), " ")}
        assert store.located([kept])[kept].keywords == ("Italy", "Tuscany", "Florence")
        assert store.place(43.7731, 11.256, "test") == ("Italy", "Tuscany", "Florence", 1.0)
        assert store.filled(lost) == {}  # a record that names no file is dropped
    finally:
        store.close()

    with sqlite3.connect(database) as db:  # as a tagwatch before places left it
        db.executescript("DROP TABLE filled; DROP TABLE located; DROP TABLE places; PRAGMA user_version = 3;")
    aside, counts, problems = rebuild(database)
    assert problems == [] and counts["files"] == 1 and "filled" not in counts


# -- the daemon, explain, export -----------------------------------------------------------------

def test_the_daemon_loads_places_for_the_first_gps_photo_and_places_a_geotag_edit(
        tmp_path: Path, tiny_checkpoint: Path, exiftool: ExifTool) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos], top_k=2,
                          extra="[places]\nfill_location = true")
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        assert daemon.proc is not None
        photo = noise_jpeg(photos / "walk.jpg", seed=11)
        wait_for(lambda: exif_keywords(photo)["iptc"])
        assert "places: loaded" not in daemon.log()  # no coordinates yet: GeoNames not loaded

        geotag(exiftool, photo, *FLORENCE)  # geotagged in place: the watcher sees a metadata edit
        wait_for(lambda: "Florence" in exif_keywords(photo)["iptc"])
        assert "places: loaded" in daemon.log()
        rss = status_mb(daemon.proc.pid).get("VmRSS")
        assert rss is not None, f"no VmRSS for {daemon.proc.pid}"
        assert rss < IDLE_RSS_LIMIT_MB  # the model lives in its child
        assert status(config)["encoded"] == 1
    finally:
        assert daemon.stop() == 0
    assert set(exif_keywords(photo)["iptc"]) >= {"Italy", "Tuscany", "Florence"}
    assert read_fields(photo, "XMP-photoshop:City")["XMP-photoshop:City"] == "Florence"

    explained = tagwatch("explain", "--config", str(config), str(photo))
    assert explained.returncode == 0, explained.stderr
    assert "GPS 43.77310°N 11.25600°E" in explained.stdout
    assert "place: Florence, Tuscany, Italy (Florence's centre 1.0 km away)" in explained.stdout, \
        explained.stdout[:600]
    assert "places|Italy|Tuscany|Florence" in explained.stdout
    exported = tagwatch("export", "--config", str(config), str(photo))
    assert exported.returncode == 0, exported.stderr
    (keywords,) = json.loads(exported.stdout).values()
    assert keywords[-3:] == ["Italy", "Tuscany", "Florence"] and len(keywords) == 5


def test_the_daemon_places_a_geotag_written_into_a_sidecar_live_and_after_a_restart(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The user's case: a PNG tagged through its sidecar, then geotagged in that sidecar (exiftool, as
    a geotagger does) while the daemon runs and while it is stopped.  Each edit moves the places,
    with no image encoded again, and tagwatch's own sidecar writes are not taken for edits."""
    photos = tmp_path / "photos"
    photos.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[photos], top_k=2,
                          extra='[places]\nfill_location = true\n[write]\ntarget = "sidecar"')
    png = noise_png(photos / "purple-circle.png", seed=14)
    side = photos / "purple-circle.png.xmp"

    def subject() -> set[str]:
        if not side.exists():
            return set()
        return set(as_list(read_fields(side, "XMP-dc:Subject").get("XMP-dc:Subject")))

    picture = png.read_bytes()
    daemon = Daemon(config, tmp_path / "daemon.log").start()
    try:
        wait_for(subject)
        subprocess.run(["exiftool", "-q", "-overwrite_original", *KYOTO_XMP, str(side)], check=True)
        wait_for(lambda: {"Japan", "Kyoto"} <= subject())
        daemon.wait_log("place: Japan, Kyoto")
        time.sleep(1.5)  # five settle times: an event of tagwatch's own sidecar write would be handled
    finally:
        assert daemon.stop() == 0
    tagged = daemon.log().count("tagged ")
    assert tagged == 2, daemon.log()[-3000:]  # the first tagging and the geotag; none for its own writes

    subprocess.run(["exiftool", "-q", "-overwrite_original", *SAPPORO_XMP, str(side)], check=True)
    mark = len(daemon.log())
    daemon.start()  # the start-up scan finds the sidecar edited while no daemon ran
    try:
        wait_for(lambda: {"Hokkaido", "Sapporo"} <= subject() and "Kyoto" not in subject())
        daemon.wait_log("took out", since=mark)
    finally:
        assert daemon.stop() == 0
    assert daemon.log()[mark:].count("tagged ") == 1, daemon.log()[mark:]
    assert status(config)["encoded"] == 1 and png.read_bytes() == picture
