"""The places stage: a photo's coordinates → the place keywords and location fields it should carry.

Places are derived from metadata, so they are keyed by it (never by pixels): the gazetteer's answer
is cached in the store by coordinates, each file's last coordinates and place keywords are kept, and
a GPS edit (a metadata edit, same content key) changes the places without encoding the image.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from .casefold import folded
from .config import PlacesConfig
from .metadata import Filled
from .places import (
    LEVELS,
    LOCATION_FIELDS,
    NO_GPS,
    RULES,
    Claim,
    Coordinates,
    Geocoder,
    Place,
    PlacesUnavailable,
    claim,
    coordinates,
    keywords,
    location_fields,
)
from .store import NOWHERE, Located, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """What the places stage decided for one photo."""

    where: Coordinates | None = None
    place: Place | None = None
    claim: Claim = field(default_factory=Claim)  # the gazetteer's, before a correction cuts it
    keywords: dict[str, str] = field(default_factory=dict)  # keyword → hierarchical path, as written
    withdraw: tuple[str, ...] = ()  # place keywords given earlier that no longer apply
    fill: dict[str, str | None] = field(default_factory=dict)  # location field → value (None: not ours)
    filled: dict[str, Filled] = field(default_factory=dict)  # the ledger's record of filled fields
    why: str = ""  # why there are no coordinates
    rejected: tuple[str, ...] = ()  # levels of the claim a correction takes out (see Claim.without)


class Places:
    """Coordinates → place keywords under the ``[places]`` settings, through the store's cache."""

    def __init__(self, settings: PlacesConfig, store: Store, geocoder: Geocoder | None = None) -> None:
        self.settings, self.store = settings, store
        self.geocoder = geocoder or Geocoder()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def fingerprint(self) -> str:
        """The settings and the rules that pick a place: photos placed under other rules (an upgrade
        that changed them) have their GPS read again at the next start, like a settings change."""
        fingerprint = self.settings.fingerprint()
        return fingerprint if fingerprint == "off" else f"{fingerprint}:{RULES}"

    def find(self, where: Coordinates) -> Place | None:
        """The gazetteer's answer for ``where``: from the store when this point was seen before
        under the same claim distance (a town's extent reaches no farther, so it picks the place)."""
        town_km = self.settings.max_distance_km
        key = f"{self.geocoder.source}, towns within {town_km:g} km"
        cached = self.store.place(where.lat, where.lon, key)
        if cached is not None:
            return None if cached == NOWHERE else Place(*cached)
        place = self.geocoder.find(where, town_km)
        self.store.put_place(where.lat, where.lon, key,
                             None if place is None else (place.country, place.region, place.locality,
                                                         place.distance_km))
        return place

    def claim(self, where: Coordinates | None) -> tuple[Place | None, Claim]:
        if where is None:
            return None, Claim()
        try:
            place = self.find(where)
        except PlacesUnavailable as exc:
            if not self._warned:
                log.error("places: %s", exc)
                self._warned = True
            return None, Claim()
        s = self.settings
        return place, claim(place, s.max_distance_km, s.country_distance_km)

    def keywords(self, found: Claim) -> dict[str, str]:
        return keywords(found, self.settings.root)

    def decide(self, path: str, file_id: int | None, photo_gps: Mapping[str, str],
               sidecar_gps: Mapping[str, str], out: Collection[str] = ()) -> Placement:
        """The place keywords and fields of one photo, from the GPS tags read from it (the photo's
        own first, its sidecar's where the photo has none: geotaggers write RAW files' sidecars),
        without the levels its corrections remove (``out``, case-folded: see :meth:`Claim.without`)."""
        where, why = coordinates(photo_gps)
        if where is None and sidecar_gps:
            where, why_sidecar = coordinates(sidecar_gps)
            why = why if where is None and why != NO_GPS else why_sidecar
        if where is None:
            log.debug("%s: no place: %s", path, why)
        place, found = self.claim(where)
        if where is not None and not found:
            log.debug("%s: no place: nothing within %g km of %s", path, self.settings.country_distance_km,
                      where)
        kept = found.without(out)
        given = self.keywords(kept)
        rejected = tuple(k for k in found.levels() if k not in given)
        before = self.store.located([file_id]).get(file_id) if file_id is not None else None
        withdraw = tuple(k for k in (before.keywords if before else ()) if k not in given)
        # The location fields' records only: the ledger's other filled fields (a caption's description,
        # a hierarchical field tagwatch created) are other stages' to keep or take out
        records = self.store.filled(file_id) if file_id is not None else {}
        filled = {name: Filled(*records[name]) for name in LOCATION_FIELDS if name in records}
        fill = location_fields(kept) if self.settings.fill_location else {}
        return Placement(where, place, found, given, withdraw, fill, filled, why, rejected)

    def describe(self, placed: Placement) -> list[str]:
        """Lines for ``explain``: the coordinates, the place found and its distance, what is written."""
        if placed.where is None:  # a photo without any GPS block gets no line: most photos
            return [f"place: none ({placed.why})"] if placed.why != NO_GPS else []
        lines = [f"GPS {placed.where}"]
        place, found = placed.place, placed.claim
        if place is None:
            lines.append(f"place: none (no GeoNames place within {self.settings.country_distance_km:g} km)")
            return lines
        nearest = f"{place.locality}, {place.region}" if place.region else place.locality
        if not found:
            lines.append(f"place: none (the nearest, {nearest}, is {place.distance_km:.1f} km away, beyond "
                         f"country_distance_km = {self.settings.country_distance_km:g})")
            return lines
        lines.append(f"place: {', '.join(reversed(found.levels()))} ({place.locality}'s centre "
                     f"{place.distance_km:.1f} km away)")
        if not found.locality:
            lines.append(f"  locality not claimed: {place.locality} is beyond max_distance_km = "
                         f"{self.settings.max_distance_km:g}")
        paths = list(placed.keywords.values())
        if paths:
            lines.append(f"  keywords: {', '.join(placed.keywords)} (hierarchy: {paths[-1]})")
        if placed.rejected:
            lines.append(f"  removed by an override: {', '.join(placed.rejected)} (the levels below one "
                         "it removes go with it)")
        fields = ", ".join(f"{name}={value}" for name, value in placed.fill.items() if value)
        if fields:
            lines.append(f"  location fields, where empty: {fields}")
        return lines

    def of_files(self, located: Mapping[int, Located], file_ids: Mapping[str, int],
                 out: Mapping[str, Collection[str]] | None = None) -> dict[str, list[str]]:
        """The place keywords of recorded files (``export``), from their last coordinates, without
        the levels each one's corrections remove (``out``: path → case-folded removes); a point the
        store never looked up loads the gazetteer."""
        out = out or {}
        found: dict[str, list[str]] = {}
        for path, file_id in file_ids.items():
            spot = located.get(file_id)
            if spot is not None and spot.lat is not None and spot.lon is not None:
                found[path] = self.at(Coordinates(spot.lat, spot.lon), out.get(path, ()))
        return found

    def at(self, where: Coordinates, out: Collection[str] = ()) -> list[str]:
        """The place keywords of a photo taken at ``where``, without the levels ``out`` removes."""
        return list(self.keywords(self.claim(where)[1].without(out)))

    def outdated(self, spot: Located, out: Collection[str]) -> bool:
        """Are the place keywords last written at ``spot`` not those the photo's corrections (``out``,
        case-folded removes) leave now?  A correction of a place, or its undo, changes no predicted
        tag, so a re-score asks this.  Three levels written and none removed now: nothing was cut and
        nothing is, so no look-up (the place cache answers the others; a settings change is read
        again anyway, see ``Pipeline._places_stale``)."""
        if spot.lat is None or spot.lon is None:
            return False
        if len(spot.keywords) == LEVELS and not folded(spot.keywords) & set(out):
            return False
        return list(spot.keywords) != self.at(Coordinates(spot.lat, spot.lon), out)
