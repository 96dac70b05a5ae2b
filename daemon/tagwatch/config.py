"""The TOML config file turned into frozen dataclasses.

Every problem is reported as one line that names the file and the key, so a user who mistypes
``treshold`` learns exactly that instead of silently getting the default.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .retry import DATABASE_LOCK_WAIT_S

DEFAULT_MODEL = "ViT-B-32-256"
DEFAULT_PRETRAINED = "datacomp_s34b_b86k"
MODES = ("append", "sync", "overwrite")
TARGETS = ("embedded", "sidecar", "both")
SIDECAR_NAMES = ("photo.jpg.xmp", "photo.xmp")  # digiKam/darktable/Immich style, Lightroom style
MTIME_POLICIES = ("update", "keep")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
PRECISION_CACHE_NAME = "precision.json"  # beside the database: auto's measured choice per model/CPU/torch
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# Pictures larger than this are refused undecoded (a decompression bomb: a few KB of file whose
# header promises gigabytes of pixels).  180 MP is Pillow's own hard limit and above any camera's.
DEFAULT_MAX_MEGAPIXELS = 180.0
# The tag lists shipped in the package (copies of config/*), by the name a config may give instead of
# a path: the photo vocabulary is the default; ImageNet-1k (rtag's list) stays available.
BUILTIN_TAG_LISTS = {"photo-tags": "photo-tags.toml", "imagenet-1k": "imagenet-1k.txt"}
DEFAULT_TAG_LIST = "photo-tags"
EXPAND_MODES = ("none", "parents")
# WordNet's upper levels, never a useful keyword: not used as a level of the hierarchy, nor written
DEFAULT_EXPAND_STOP = (
    "entity", "physical entity", "abstraction", "abstract entity", "thing", "object", "physical object",
    "whole", "unit", "artifact", "artefact", "organism", "being", "living thing", "animate thing",
    "causal agent", "cause", "matter", "substance", "part", "portion", "piece", "group", "grouping",
    "collection", "attribute", "relation", "measure", "quantity", "psychological feature", "event",
    "act", "action", "activity", "human action", "human activity", "instrumentality", "device",
    "container", "structure", "construction", "covering", "commodity", "location", "region", "area",
    "natural object", "geological formation", "formation", "communication", "state", "process",
    "phenomenon", "natural phenomenon", "kind", "type", "sort", "creation", "product", "equipment",
)


class ConfigError(ValueError):
    """A config problem; the message is one line naming the file and the key."""


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def default_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "tagwatch" / "config.toml"


CONFIG_ENV = "TAGWATCH_CONFIG"  # names the config file where no --config does (scripts/run, containers)


def named_config(given: str | None) -> str | None:
    """The config file a command is told of: ``--config``, else ``$TAGWATCH_CONFIG`` (so that every
    command of a shell that set it, not only the daemon's, looks at the same database); None: the
    default file."""
    return given or os.environ.get(CONFIG_ENV) or None


def default_database_path() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "tagwatch" / "tagwatch.db"


def default_model_cache() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "tagwatch" / "models"


def builtin_tag_list(name: str = DEFAULT_TAG_LIST) -> Path:
    """A tag list shipped with the package: ``photo-tags`` (the default, a copy of
    ``config/photo-tags.toml``) or ``imagenet-1k`` (``config/imagenet-1k.txt``)."""
    return Path(str(resources.files("tagwatch") / "data" / BUILTIN_TAG_LISTS[name]))


def is_builtin_tag_list(path: Path) -> bool:
    """``path`` is one of the lists inside the installed package (never written into)."""
    return any(path == builtin_tag_list(name) for name in BUILTIN_TAG_LISTS)


@dataclass(frozen=True)
class ModelConfig:
    name: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED
    device: str = "cpu"
    cache_dir: Path = field(default_factory=default_model_cache)
    offline: bool = False
    precision: str = "auto"  # auto: the fastest faithful path, measured on the first load (precision.py)
    # Where auto's measured choice is remembered: not a TOML key, set beside the database by Config
    # (None: measured at every load).
    precision_cache: Path | None = None
    # The config file these came from, as named (not a TOML key; "" for the built-in defaults): the
    # model's own errors name it, as every other config error does, once several configs exist.
    source: str = field(default="", compare=False)


@dataclass(frozen=True)
class TaggingConfig:
    threshold: float = 0.25
    top_k: int = 10  # 0: no cap, every tag above its threshold (rtag's output)
    templates: tuple[str, ...] = ("a photo of a {}.",)
    mode: str = "append"
    expand: str = "parents"  # "parents": a tag also writes the levels above it (dog, animal)
    expand_depth: int = 3  # at most this many levels above a tag, nearest first; 0: all
    expand_stop: tuple[str, ...] = DEFAULT_EXPAND_STOP  # never a level (WordNet's upper words)


@dataclass(frozen=True)
class CaptionsConfig:
    """Open vocabulary: a CoCa model captions each photo, and the caption's words that CLIP confirms
    in the photo become keywords beside the tag list's (see docs/captions.md)."""

    enabled: bool = False
    name: str = ""  # empty: the tagging model ([model] name), which must then be a CoCa
    pretrained: str = ""  # empty: [model] pretrained when name is empty too
    threshold: float = 0.25  # a candidate keyword's cosine with the photo must be above this
    top_k: int = 5  # at most this many keywords from one caption
    prefix: str = ""  # e.g. "caption": lr:hierarchicalSubject gets "caption|red circle"
    write_description: bool = False  # the caption into dc:description / Caption-Abstract, where empty
    max_tokens: int = 30  # longest caption generated, in tokens


@dataclass(frozen=True)
class WriteConfig:
    target: str = "embedded"  # JPEG keywords in the file; formats we do not write into get a sidecar
    sidecar: str = "photo.jpg.xmp"
    mtime: str = "update"  # backup tools find changed files by mtime: keeping it is opt-in
    hierarchy_prefix: str = ""  # e.g. "auto": lr:hierarchicalSubject gets "auto|beach"


@dataclass(frozen=True)
class PlacesConfig:
    """GPS coordinates → place keywords (and, opt-in, the IPTC/XMP location fields)."""

    enabled: bool = True  # photos without GPS cost nothing: the gazetteer loads on the first coordinates
    root: str = "places"  # hierarchical keywords: places|Italy|Tuscany|Florence ("" for Italy|Tuscany|…)
    max_distance_km: float = 15.0  # the nearest town farther than this is not claimed as the locality
    country_distance_km: float = 50.0  # up to this: country and region only; beyond: no place at all
    fill_location: bool = False  # IPTC City/Province-State/Country and XMP twins, only where empty

    def fingerprint(self) -> str:
        """What changes the keywords and fields of a photo with coordinates."""
        if not self.enabled:
            return "off"
        return (f"{self.root}:{self.max_distance_km:g}:{self.country_distance_km:g}:"
                f"{int(self.fill_location)}")


PLACES_MAX_KM = 250.0  # places.SEARCH_KM: no place is looked for farther away


@dataclass(frozen=True)
class BatchConfig:
    size: int = 32
    max_wait_ms: int = 500
    settle_ms: int = 500
    # a file that looks cut short (a truncated picture) fails only once it has stayed unchanged this long
    quiet_ms: int = 5000


@dataclass(frozen=True)
class ScheduleConfig:
    rescan: float = 3600.0  # seconds; 0 disables the periodic reconcile scan (start-up scan still runs)
    idle_unload: float = 600.0  # seconds without work before the model leaves memory; 0 = never


@dataclass(frozen=True)
class MetricsConfig:
    host: str = ""  # empty: no endpoint
    port: int = 9464


@dataclass(frozen=True)
class WebConfig:
    """The review page (``tagwatch web``; the daemon hosts it too with ``enabled``)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # anything else exposes the page beyond this machine, and says so
    port: int = 8765  # 0: any free port (the log names it)
    # where a reverse proxy serves the page ("https://photos.home.lan"): its origins may POST, its hosts
    # may be the Host header (a proxy sends its own address as Origin, and may pass the browser's Host)
    public_url: tuple[str, ...] = ()

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


# store.LOCK_WAIT_S, SQLite's own wait on the daemon's connection (not imported: the store brings numpy)
LOCK_WAIT_MAX_S = 30.0


@dataclass(frozen=True)
class Config:
    watch: tuple[Path, ...] = ()
    poll: tuple[Path, ...] = ()  # watched roots scanned by polling (network mounts deliver no events)
    poll_interval: float = 30.0
    exclude: tuple[str, ...] = ()
    tags: Path = field(default_factory=builtin_tag_list)
    overrides: Path | None = None  # a person's per-path corrections (overrides.toml), watched like tags
    database: Path = field(default_factory=default_database_path)
    # how long the daemon's writes (a photo batch, a re-score) and the review page's corrections wait
    # for a database another program holds locked before they say so and try again later
    database_lock_wait: float = DATABASE_LOCK_WAIT_S
    log_level: str = "info"
    log_format: str = "text"  # json: one JSON object per line, for journald/Loki/jq
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    model: ModelConfig = field(default_factory=ModelConfig)
    tagging: TaggingConfig = field(default_factory=TaggingConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    places: PlacesConfig = field(default_factory=PlacesConfig)
    web: WebConfig = field(default_factory=WebConfig)
    source: Path | None = None  # the file this came from, None for built-in defaults

    def __post_init__(self) -> None:
        # auto's measured precision is remembered in the data folder, beside the database (and so
        # private like it), whatever the [model] table says: one place decides where state lives.
        cache = self.database.parent / PRECISION_CACHE_NAME
        if self.model.precision_cache != cache:
            object.__setattr__(self, "model", replace(self.model, precision_cache=cache))

    def with_watch(self, folders: list[Path]) -> Config:
        """The same config watching ``folders`` instead (``tagwatch run FOLDER…``).  Each must exist:
        a folder typed on the command line just now that is not there is a typo."""
        return replace(self, poll=(), watch=tuple(
            _check_folder(Path(f).expanduser().resolve(), "watch", None, must_exist=True) for f in folders))

    def absent(self) -> tuple[Path, ...]:
        """The watched folders that are not there now (a drive not plugged in, a share not mounted):
        the daemon watches them once they appear."""
        return tuple(folder for folder in self.watch if not folder.is_dir())


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any, key: str, where: str) -> float:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"1d"`` or a number of seconds; ``0`` means never."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be a duration like \"30m\" or \"1h\", got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{where}: {key} must be a duration like \"30m\" or \"1h\", got {value!r}")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"{where}: {key} must not be negative, got {value!r}")
    return seconds


def _check_folder(path: Path, key: str, where: str | None, *, must_exist: bool = False) -> Path:
    """``path`` unless it is something other than a folder.  A config's folder may be missing (a
    drive not plugged in: ``run`` watches it once it appears, see :meth:`Config.absent`), unless
    ``must_exist``."""
    prefix = f"{where}: " if where else ""
    if not path.exists():
        if not must_exist:
            return path
        raise ConfigError(f"{prefix}{key}: folder '{path}' does not exist")
    if not path.is_dir():
        raise ConfigError(f"{prefix}{key}: '{path}' is not a folder")
    return path


class _Reader:
    """Pulls typed values out of one TOML table, remembering which keys were used."""

    def __init__(self, table: dict[str, Any], prefix: str, where: str) -> None:
        self.table, self.prefix, self.where = table, prefix, where
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.key(name)} {message}")

    def get(self, name: str, kinds: type | tuple[type, ...], what: str) -> Any:
        self.used.add(name)
        if name not in self.table:
            return None
        value = self.table[name]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise self.fail(name, f"must be {what}, got {type(value).__name__} {value!r}")
        return value

    def path(self, name: str, base: Path) -> Path | None:
        """A path key: relative to the config's folder; an empty string is refused (it named the
        config's own folder: ``watch = [""]`` watched it, ``tags = ""`` read it as a file)."""
        value = self.get(name, str, "a path string")
        if value is None:
            return None
        if not value.strip():
            raise self.fail(name, "must be a path, not empty (leave the key out for the default)")
        return _path(value, base)

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.get(name, str, "a string")
        if value is not None and value not in choices:
            raise self.fail(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def flags(self, names: tuple[str, ...], values: dict[str, Any]) -> None:
        """The booleans among ``names`` that the table sets, into ``values`` (the rest keep defaults)."""
        for name in names:
            value = self.get(name, bool, "true or false")
            if value is not None:
                values[name] = value

    def string_list(self, name: str) -> list[str] | None:
        value = self.get(name, list, "a list of strings")
        if value is not None and not all(isinstance(v, str) for v in value):
            raise self.fail(name, "must be a list of strings")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise ConfigError(f"{self.where}: unknown key '{self.key(unknown[0])}' (known here: {known})")


# torch's device types (its own error lists them), with an optional index: checked here, where a
# typo ("gpu") is one line naming the key, instead of torch's error when the model loads
TORCH_DEVICE = re.compile(r"(cpu|cuda|ipu|xpu|mkldnn|opengl|opencl|ideep|hip|ve|fpga|maia|xla|lazy|vulkan|"
                          r"mps|meta|hpu|mtia|privateuseone)(:\d+)?")


def _path(value: str, base: Path) -> Path:
    path = Path(os.path.expandvars(value)).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def is_checkpoint_path(pretrained: str) -> bool:
    """``model.pretrained`` names a file (not an open_clip tag like ``laion2b_s34b_b79k``)."""
    return ("/" in pretrained or pretrained.startswith((".", "~"))
            or pretrained.lower().endswith(CHECKPOINT_SUFFIXES))


def _model(raw: dict[str, Any], base: Path, where: str) -> ModelConfig:
    r = _Reader(raw, "model.", where)
    cfg = ModelConfig()
    values: dict[str, Any] = {"source": where}
    for name in ("name", "pretrained", "device"):
        value = r.get(name, str, "a string")
        if value is not None:
            if not value.strip():
                raise r.fail(name, "must not be empty")
            values[name] = value.strip()
    if "device" in values and not TORCH_DEVICE.fullmatch(values["device"]):
        raise r.fail("device", f"must be a torch device like cpu, cuda, cuda:1 or mps, "
                               f"got {values['device']!r}")
    cache_dir = r.path("cache_dir", base)
    if cache_dir is not None:
        values["cache_dir"] = cache_dir
    offline = r.get("offline", bool, "true or false")
    if offline is not None:
        values["offline"] = offline
    precision = r.choice("precision", PRECISIONS)
    if precision is not None:
        values["precision"] = precision
    r.finish()
    pretrained = values.get("pretrained")
    if pretrained and is_checkpoint_path(pretrained):
        # A path to a local checkpoint, relative to the config file like every other path.
        values["pretrained"] = str(_path(pretrained, base))
    return replace(cfg, **values)


def _tagging(raw: dict[str, Any], where: str) -> TaggingConfig:
    r = _Reader(raw, "tagging.", where)
    values: dict[str, Any] = {}
    threshold = r.get("threshold", (int, float), "a number in [-1, 1]")
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise r.fail("threshold", f"must be a cosine similarity in [-1, 1], got {threshold}")
        values["threshold"] = float(threshold)
    top_k = r.get("top_k", int, "a whole number")
    if top_k is not None:
        if top_k < 0:  # 0 is no cap: every tag above the threshold, as rtag writes them
            raise r.fail("top_k", f"must be 0 (no cap) or more, got {top_k}")
        values["top_k"] = top_k
    templates = r.string_list("templates")
    if templates is not None:
        if not templates:
            raise r.fail("templates", "must hold at least one template")
        for template in templates:
            if template.count("{}") != 1:
                raise r.fail("templates", f"entry {template!r} must contain '{{}}' exactly once")
        values["templates"] = tuple(templates)
    mode = r.choice("mode", MODES)
    if mode is not None:
        values["mode"] = mode
    expand = r.choice("expand", EXPAND_MODES)
    if expand is not None:
        values["expand"] = expand
    depth = r.get("expand_depth", int, "a whole number")
    if depth is not None:
        if depth < 0:
            raise r.fail("expand_depth", f"must be 0 (every level) or more, got {depth}")
        values["expand_depth"] = depth
    stop = r.string_list("expand_stop")
    if stop is not None:
        values["expand_stop"] = tuple(" ".join(s.split()) for s in stop)
    r.finish()
    return replace(TaggingConfig(), **values)


def _write(raw: dict[str, Any], where: str) -> WriteConfig:
    r = _Reader(raw, "write.", where)
    values = {name: value for name, value in (
        ("target", r.choice("target", TARGETS)), ("sidecar", r.choice("sidecar", SIDECAR_NAMES)),
        ("mtime", r.choice("mtime", MTIME_POLICIES)),
        ("hierarchy_prefix", r.get("hierarchy_prefix", str, "a string"))) if value is not None}
    prefix = values.get("hierarchy_prefix", "")
    if prefix and not _keyword_path(prefix):
        raise r.fail("hierarchy_prefix", f"must be a keyword path like 'auto' or 'auto|ai', got {prefix!r}")
    r.finish()
    return replace(WriteConfig(), **values)


def captioner_config(captions: CaptionsConfig, model: ModelConfig) -> ModelConfig:
    """The captioner's model settings: its own name and weights, on the tagging model's device,
    cache, offline and precision settings; none given, the tagging model itself."""
    if not captions.name:
        return model
    return replace(model, name=captions.name, pretrained=captions.pretrained or "none")


def _captions(raw: dict[str, Any], base: Path, where: str) -> CaptionsConfig:
    r = _Reader(raw, "captions.", where)
    values: dict[str, Any] = {}
    r.flags(("enabled", "write_description"), values)
    for name in ("name", "pretrained"):
        value = r.get(name, str, "a string")
        if value is not None:
            values[name] = value.strip()
    threshold = r.get("threshold", (int, float), "a number in [-1, 1]")
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise r.fail("threshold", f"must be a cosine similarity in [-1, 1], got {threshold}")
        values["threshold"] = float(threshold)
    for name, low in (("top_k", 1), ("max_tokens", 2)):
        value = r.get(name, int, "a whole number")
        if value is not None:
            if value < low:
                raise r.fail(name, f"must be at least {low}, got {value}")
            values[name] = value
    prefix = r.get("prefix", str, "a string")
    if prefix is not None:
        if prefix and not _keyword_path(prefix):
            raise r.fail("prefix", f"must be a keyword path like 'caption' or 'ai|caption', got {prefix!r}")
        values["prefix"] = prefix
    r.finish()
    if values.get("pretrained") and not values.get("name"):
        raise r.fail("pretrained", "needs captions.name too (leave both out to caption with the tagging "
                                   "model)")
    if values.get("name") and not values.get("pretrained"):
        raise r.fail("name", "needs captions.pretrained too (an open_clip tag or a checkpoint file)")
    pretrained = values.get("pretrained")
    if pretrained and is_checkpoint_path(pretrained):
        values["pretrained"] = str(_path(pretrained, base))
    return replace(CaptionsConfig(), **values)
def _keyword_path(value: str) -> bool:
    """A hierarchy root/prefix like 'auto' or 'auto|ai': no empty level, no '/' (digiKam's separator)."""
    return value == value.strip(" |/") and value.isprintable() and "/" not in value and "||" not in value


def _places(raw: dict[str, Any], where: str) -> PlacesConfig:
    r = _Reader(raw, "places.", where)
    values: dict[str, Any] = {}
    r.flags(("enabled", "fill_location"), values)
    root = r.get("root", str, "a string")
    if root is not None:
        if root and not _keyword_path(root):
            raise r.fail("root", f"must be a keyword path like 'places' or 'auto|places' (or \"\" for "
                                 f"none), got {root!r}")
        values["root"] = root
    for name in ("max_distance_km", "country_distance_km"):
        value = r.get(name, (int, float), "a number of kilometres")
        if value is not None:
            if not 0 < value <= PLACES_MAX_KM:
                raise r.fail(name, f"must be more than 0 and at most {PLACES_MAX_KM:g} km, got {value}")
            values[name] = float(value)
    r.finish()
    cfg = replace(PlacesConfig(), **values)
    if cfg.max_distance_km > cfg.country_distance_km:
        name = "max_distance_km" if "max_distance_km" in values else "country_distance_km"
        raise r.fail(name, f"must keep max_distance_km ({cfg.max_distance_km:g}) at most "
                           f"country_distance_km ({cfg.country_distance_km:g})")
    return cfg


def _batch(raw: dict[str, Any], where: str) -> BatchConfig:
    r = _Reader(raw, "batch.", where)
    values: dict[str, Any] = {}
    for name, low in (("size", 1), ("max_wait_ms", 0), ("settle_ms", 0), ("quiet_ms", 0)):
        value = r.get(name, int, "a whole number")
        if value is not None:
            if value < low:
                raise r.fail(name, f"must be at least {low}, got {value}")
            values[name] = value
    r.finish()
    return replace(BatchConfig(), **values)


def _schedule(raw: dict[str, Any], where: str) -> ScheduleConfig:
    r = _Reader(raw, "schedule.", where)
    values = {}
    for name in ("rescan", "idle_unload"):
        value = r.get(name, (str, int, float), "a duration like \"1h\"")
        if value is not None:
            values[name] = parse_duration(value, f"schedule.{name}", where)
    r.finish()
    return replace(ScheduleConfig(), **values)


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    return host in _LOOPBACK or host.startswith("127.")


def _metrics(raw: dict[str, Any], where: str) -> MetricsConfig:
    """``listen = "127.0.0.1:9464"``: the Prometheus endpoint, off unless set."""
    r = _Reader(raw, "metrics.", where)
    listen = r.get("listen", str, 'an address like "127.0.0.1:9464"')
    r.finish()
    if not listen:
        return MetricsConfig()
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise r.fail("listen", f'must be HOST:PORT like "127.0.0.1:9464", got {listen!r}')
    if not is_loopback(host):
        raise r.fail("listen", f"must be a loopback address (127.0.0.1, ::1): the counters name no "
                               f"secrets but nothing outside this machine should reach the daemon; "
                               f"got {host!r}")
    return MetricsConfig(host, int(port))


def _public_url(r: _Reader, url: object) -> str:
    """``scheme://host[:port]`` as a browser sends it in ``Origin`` (lower case, no default port):
    the page's links start at ``/``, so an address with a path (a proxy's ``/photos/``) cannot serve it."""
    from urllib.parse import urlsplit

    if not isinstance(url, str):
        raise r.fail("public_url", f"must be addresses like \"https://photos.home.lan\", got {url!r}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username
            or parts.password or parts.query or parts.fragment or parts.path not in ("", "/")):
        raise r.fail("public_url", f'must be an address like "https://photos.home.lan" or '
                                   f'"http://nas:8080": http or https, a host, a port if any, no path '
                                   f"(the page must be at the root of its address), got {url!r}")
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _web(raw: dict[str, Any], where: str) -> WebConfig:
    """``[web]``: the review page.  A host other than loopback is allowed, because a person wrote it
    here on purpose (a NAS reviewed from a laptop); the page then logs that it is exposed."""
    r = _Reader(raw, "web.", where)
    enabled = r.get("enabled", bool, "true or false")
    host = r.get("host", str, 'an address like "127.0.0.1" (or "0.0.0.0" to expose the page)')
    port = r.get("port", int, "a port number")
    public = r.get("public_url", (str, list), 'the address a reverse proxy serves the page at, like '
                                              '"https://photos.home.lan" (or a list of them)')
    r.finish()
    values: dict[str, Any] = {}
    if public is not None:
        values["public_url"] = tuple(_public_url(r, url) for url in ([public] if isinstance(public, str)
                                                                    else public))
    if enabled is not None:
        values["enabled"] = enabled
    if host is not None:
        host = host.strip().removeprefix("[").removesuffix("]")
        if not host or any(ch.isspace() or ch == "/" for ch in host):
            raise r.fail("host", f"must be an address like \"127.0.0.1\", got {host!r}")
        values["host"] = host
    if port is not None:
        if not 0 <= port < 65536:
            raise r.fail("port", f"must be a port number from 0 (any free port) to 65535, got {port}")
        values["port"] = port
    return replace(WebConfig(), **values)


_SECTIONS = {"model", "tagging", "write", "captions", "batch", "schedule", "metrics", "places", "web"}


def parse_config(raw: dict[str, Any], base: Path, where: str, source: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths are relative to ``base``."""
    r = _Reader(raw, "", where)
    values: dict[str, Any] = {"source": source}
    for section in _SECTIONS:
        table = r.get(section, dict, "a table")
        table = table or {}
        if section == "model":
            values["model"] = _model(table, base, where)
        elif section == "tagging":
            values["tagging"] = _tagging(table, where)
        elif section == "write":
            values["write"] = _write(table, where)
        elif section == "captions":
            values["captions"] = _captions(table, base, where)
        elif section == "batch":
            values["batch"] = _batch(table, where)
        elif section == "metrics":
            values["metrics"] = _metrics(table, where)
        elif section == "places":
            values["places"] = _places(table, where)
        elif section == "web":
            values["web"] = _web(table, where)
        else:
            values["schedule"] = _schedule(table, where)
    watch = r.get("watch", (list, str), "a list of folders")
    if watch is not None:
        watch = [watch] if isinstance(watch, str) else watch
        folders, polled = [], []
        for i, item in enumerate(watch):
            poll = False
            if isinstance(item, dict):  # [[watch]] path = "/mnt/nas", poll = true
                entry = _Reader(item, f"watch[{i}].", where)
                path = entry.get("path", str, "a folder path string")
                poll = bool(entry.get("poll", bool, "true or false"))
                entry.finish()
                if path is None:
                    raise entry.fail("path", "is missing")
                item = path
            elif not isinstance(item, str):
                raise ConfigError(f"{where}: watch[{i}] must be a folder path string or a table with "
                                  f"path and poll, got {item!r}")
            if not item.strip():
                raise ConfigError(f"{where}: watch[{i}] must be a folder path, not empty")
            folders.append(_check_folder(_path(item, base), f"watch[{i}]", where))
            if poll:
                polled.append(folders[-1])
        values["watch"], values["poll"] = tuple(folders), tuple(polled)
    poll_interval = r.get("poll_interval", (str, int, float), "a duration like \"30s\"")
    if poll_interval is not None:
        values["poll_interval"] = parse_duration(poll_interval, "poll_interval", where)
        if values["poll_interval"] <= 0:
            raise r.fail("poll_interval", "must be longer than 0 s")
    lock_wait = r.get("database_lock_wait", (str, int, float), "a duration like \"5s\"")
    if lock_wait is not None:
        values["database_lock_wait"] = parse_duration(lock_wait, "database_lock_wait", where)
        if not 0 < values["database_lock_wait"] <= LOCK_WAIT_MAX_S:
            raise r.fail("database_lock_wait", f"must be longer than 0 s and at most {LOCK_WAIT_MAX_S:g} s "
                                               "(SQLite's own wait, which a longer one would meet first)")
    exclude = r.string_list("exclude")
    if exclude is not None:
        if any(not pattern.strip() for pattern in exclude):
            raise r.fail("exclude", "must hold patterns, not an empty one")
        values["exclude"] = tuple(exclude)
    tags = r.get("tags", str, "a path string")
    if tags is not None:
        if not tags.strip():
            raise r.fail("tags", "must be a tag list file or a built-in list's name, not empty")
        values["tags"] = builtin_tag_list(tags) if tags in BUILTIN_TAG_LISTS else _path(tags, base)
    overrides = r.get("overrides", str, "a path string")
    if overrides is not None:
        if not overrides.strip():
            raise r.fail("overrides", "must be a file path (leave it out for none)")
        values["overrides"] = _path(overrides, base)
    database = r.path("database", base)
    if database is not None:
        values["database"] = database
    log_level = r.get("log_level", str, "a string")
    if log_level is not None:
        if log_level.lower() not in LOG_LEVELS:
            raise r.fail("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        values["log_level"] = log_level.lower()
    log_format = r.choice("log_format", LOG_FORMATS)
    if log_format is not None:
        values["log_format"] = log_format
    max_megapixels = r.get("max_megapixels", (int, float), "a number of megapixels")
    if max_megapixels is not None:
        if max_megapixels <= 0:
            raise r.fail("max_megapixels", f"must be more than 0, got {max_megapixels}")
        values["max_megapixels"] = float(max_megapixels)
    r.finish()
    return Config(**values)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The keys whose values differ between two configs (or sections), a section's keys dotted
    (``tagging.mode``), in the config's order.  Read from the dataclasses' own fields, so a key added
    later is covered by whoever asks (the daemon's SIGHUP) without a list to keep up to date."""
    changed: list[str] = []
    for item in fields(old):
        before, after = getattr(old, item.name), getattr(new, item.name)
        if before == after or item.name == "source":
            continue
        changed += (changed_keys(before, after, f"{prefix}{item.name}.") if is_dataclass(before)
                    else [prefix + item.name])
    return changed


def load_config(path: Path | None) -> Config:
    """Read ``path`` (or the default location); a missing default file means built-in defaults."""
    explicit = path is not None
    path = Path(path).expanduser() if explicit else default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: config file does not exist (run `tagwatch init` to write one)")
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(raw, path.resolve().parent, str(path), source=path.resolve())



_TABLE_LINE = re.compile(r"^\s*\[")


def lenient_database(path: Path, error: ConfigError) -> tuple[Path, ModelConfig | None]:
    """The database (and, where its table is valid, the model) of the config file ``path`` that
    :func:`load_config` refused with ``error``, read as it would read them: ``tagwatch status`` needs
    only these to show the running daemon, which goes on with the config it last loaded, while
    the file on disk has a bad edit.  The TOML is parsed if it can be; if not, the top-level
    ``database = "…"`` line is looked for.  Raises ``error`` where the database cannot be told for
    sure (no such file, unreadable, or a ``database`` value that is no path)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise error from None
    base, where = path.resolve().parent, str(path)
    try:
        raw: dict[str, Any] | None = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raw = None
    if raw is not None:
        try:
            database = _Reader(raw, "", where).path("database", base)
        except ConfigError:
            raise error from None
        model = None
        with contextlib.suppress(ConfigError):
            table = raw.get("model", {})
            model = _model(table, base, where) if isinstance(table, dict) else None
        return database or default_database_path(), model
    for line in text.splitlines():  # not TOML: the database line, if it is still readable
        if _TABLE_LINE.match(line):
            break
        if re.match(r"\s*database\s*=", line):  # that line alone is TOML, or the database is unsure
            try:
                value = tomllib.loads(line).get("database")
            except tomllib.TOMLDecodeError:
                value = None
            if not isinstance(value, str) or not value.strip():
                raise error from None
            return _path(value, base), None
    return default_database_path(), None
