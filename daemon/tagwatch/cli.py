"""The ``tagwatch`` command: thin shells over the pipeline, the store and the daemon.

Exit status: 0 success, 1 some files could not be tagged (``scan``), 2 a usage or config problem,
reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import __version__, logs, units
from .activity import read_state, running_daemon, state_path
from .calibrate import (
    NEGATIVES,
    CalibrationError,
    calibrate,
    labels,
    read_examples,
    render_table,
    rich_from_plain,
    set_thresholds,
    toml_string,
    write_atomic,
)
from .config import (
    LOG_FORMATS,
    Config,
    ConfigError,
    builtin_tag_list,
    default_config_path,
    is_builtin_tag_list,
    load_config,
)
from .export import cached_vectors, render_csv, render_json, score
from .imaging import set_pixel_limit
from .keys import IMAGE_SUFFIXES, ImageError
from .metadata import ExifTool, KeywordWriter, MetadataError
from .model import LazyModel, ModelError, model_identity
from .overrides import OverridesError, load_overrides
from .pipeline import FAILED_, TAGGED, UNTAGGED_, WAIT, Outcome, Pipeline
from .scoring import tag_thresholds
from .store import Store, StoreError, private_folder
from .tagger import NEAR_DUPLICATE, near_duplicates, select
from .vocabulary import Vocabulary, VocabularyError, load_configured
from .watcher import PathFilter, walk

log = logging.getLogger("tagwatch")


class UsageError(Exception):
    """A problem the user must fix; printed as one line, exit status 2."""


_log_format = "text"  # what the last line, a fatal error, is written in


def _setup_logging(level: str, verbose: int, fmt: str = "text") -> None:
    """Our own messages at the configured level; libraries (open_clip logs to root) at WARNING."""
    global _log_format
    _log_format = fmt
    logs.setup(fmt, logging.DEBUG if verbose else getattr(logging, level.upper()),
               logging.DEBUG if verbose > 1 else logging.WARNING)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(Path(args.config) if args.config else None)
    _setup_logging(config.log_level, args.verbose, args.log_format or config.log_format)
    set_pixel_limit(config.max_megapixels)
    _torch_cache(config.database.parent / "torch-cache")
    return config


def _torch_cache(folder: Path) -> None:
    """Importing open_clip makes torch create its compile cache folder, by default in $TMPDIR.
    tagwatch compiles nothing, but keeps even that empty folder in its own private data folder:
    it writes nowhere but there and in the watched folders."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    try:
        private_folder(folder)
    except OSError:  # the database's own error will say why; torch keeps its default
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def _require_exiftool() -> None:
    if shutil.which("exiftool") is None:
        raise UsageError("exiftool not found: install it (Debian/Ubuntu: sudo apt-get install "
                         "libimage-exiftool-perl; macOS: brew install exiftool)")


def _pipeline(config: Config, store: Store, writer: KeywordWriter | None) -> Pipeline:
    pipeline = Pipeline(store, LazyModel(config.model), writer, config.tagging)
    if config.overrides is not None:
        overrides = load_overrides(config.overrides, config.watch)
        for warning in overrides.warnings:
            log.warning("%s", warning)
        pipeline.use_overrides(overrides)
    vocabulary = load_configured(config.tags, config.tagging)
    for warning in vocabulary.warnings:
        log.warning("%s", warning)
    pipeline.use_vocabulary(vocabulary)
    return pipeline


# -- run -----------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from .service import AlreadyRunning, Daemon  # watchdog and apscheduler are only needed here

    config = _config(args)
    if args.folders:
        config = config.with_watch([Path(f) for f in args.folders])
    if not config.watch:
        where = config.source or default_config_path()
        raise UsageError(f"nothing to watch: pass folders (tagwatch run ~/Pictures) or set watch in {where}")
    _require_exiftool()
    model = LazyModel(config.model)
    model.validate()
    try:
        daemon = Daemon(config, cli_watch=bool(args.folders), model=model)
    except AlreadyRunning as exc:
        raise UsageError(str(exc)) from None
    return daemon.run_forever()


# -- scan ----------------------------------------------------------------------------------------

def _expand(paths: Sequence[str], exclude: Sequence[str]) -> Iterator[str]:
    for given in paths:
        path = Path(given).expanduser().absolute()
        if path.is_dir():
            resolved = path.resolve()
            for found, _ in walk(resolved, PathFilter([resolved], exclude)):
                yield found
        elif path.is_file():
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield str(path.resolve() if path.is_symlink() else path)  # named, so followed
            else:
                log.warning("%s: skipped: not a photo file name (%s)", path, " ".join(sorted(IMAGE_SUFFIXES)))
        else:
            log.warning("%s: skipped: no such file or folder", path)


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.enabled = sys.stderr.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled:
            rate = self.done / max(time.monotonic() - self.started, 1e-6)
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                             f"({rate:.1f}/s) ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _print_dry(outcome: Outcome) -> None:
    if outcome.status == TAGGED:
        tags = ", ".join(f"{k} ({'override' if math.isnan(s) else f'{s:.3f}'})" for k, s in outcome.tags) \
            or "(no tag above threshold)"
        print(f"{outcome.path}\t{tags}", flush=True)


def cmd_scan(args: argparse.Namespace) -> int:
    config = _config(args)
    if not args.dry_run:
        _require_exiftool()
    paths = list(dict.fromkeys(_expand(args.paths, config.exclude)))
    store = Store(config.database)
    exiftool = ExifTool()
    try:
        pipeline = _pipeline(config, store, None if args.dry_run else KeywordWriter(exiftool, config.write))
        progress = _Progress(len(paths))
        counts: dict[str, int] = {}
        size = config.batch.size
        for start in range(0, len(paths), size):
            for outcome in pipeline.process(paths[start:start + size], dry_run=args.dry_run,
                                            retry_failed=True):
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                if outcome.status == WAIT:  # the daemon would retry later; a one-off scan reports it
                    log.warning("%s: not tagged: %s (run the scan again once that is fixed)",
                                outcome.path, outcome.error,
                                extra={"event": "skipped", "path": outcome.path, "reason": outcome.error})
                if args.dry_run:
                    _print_dry(outcome)
            progress.advance(len(paths[start:start + size]))
        progress.close()
        pipeline.close()
    finally:
        exiftool.close()
        store.close()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"
    text = f"scan: {len(paths)} photos: {summary}" + (" (dry run: no file written)" if args.dry_run else "")
    print(logs.summary_line(_log_format, text), file=sys.stderr)
    return 1 if counts.get(FAILED_) or counts.get(WAIT) else 0


# -- untag ---------------------------------------------------------------------------------------

def cmd_untag(args: argparse.Namespace) -> int:
    config = _config(args)
    _require_exiftool()
    store = Store(config.database)
    exiftool = ExifTool()
    counts: dict[str, int] = {}
    try:
        pipeline = Pipeline(store, LazyModel(config.model), KeywordWriter(exiftool, config.write),
                            config.tagging)
        paths: list[str] = []
        for given in args.paths:
            path = Path(given).expanduser().absolute()
            paths += sorted(store.files_under(str(path.resolve()))) if path.is_dir() else [str(path)]
        for path in paths:
            outcome = pipeline.untag(path)
            if outcome.status != UNTAGGED_ and outcome.error:
                log.info("%s: %s", path, outcome.error)
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        pipeline.close()
    finally:
        exiftool.close()
        store.close()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"
    print(f"untag: {sum(counts.values())} files: {summary}", file=sys.stderr)
    return 1 if counts.get(FAILED_) else 0


# -- status --------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    identity = model_identity(config.model)
    if config.database.exists():
        store = Store(config.database)
        try:
            stats = store.stats(identity)
            failures = store.failures(5)
        finally:
            store.close()
    else:
        stats = {k: 0 for k in ("files", "tagged", "pending", "failed", "deleted", "untagged", "vectors",
                                "encoded", "keywords_written")}
        failures = []
    daemon = _daemon_state(config.database)
    report = {**stats, "database": str(config.database), "model": identity, "daemon": daemon}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"database  {config.database}")
    print(f"model     {identity}")
    if daemon is None:
        print("daemon    not running")
    else:
        print(f"daemon    running, pid {daemon['pid']}, up {_duration(daemon.get('uptime_s', 0))}, "
              f"watching {daemon.get('folders', '?')} folders, model "
              f"{'loaded' if daemon.get('model_loaded') else 'unloaded (idle)'}")
        if "queue" in daemon:
            print(f"queue     {daemon['queue']} waiting; {daemon['tagged_since_start']} tagged and "
                  f"{daemon['failed_since_start']} failed since start; "
                  f"{daemon['tagged_per_min']:g} photos/min over the last 5 min")
        error = daemon.get("last_error")
        if error:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(error["time"]))
            print(f"last error {when} {error['path']}: {error['reason']}")
    for name in ("files", "tagged", "pending", "failed", "untagged", "vectors", "encoded",
                 "keywords_written"):
        print(f"{name:<17} {stats[name]:>9}")
    for path, error in failures:
        print(f"failed: {path}: {error}")
    return 0


def _daemon_state(database: Path) -> dict[str, object] | None:
    """What the running daemon last wrote about itself, or None when no daemon holds the database."""
    pid = running_daemon(database)
    if pid is None:
        return None
    state = read_state(state_path(database))
    if state is None or state.get("pid") != pid:  # just starting: no state written yet
        return {"pid": pid}
    state["age_s"] = round(time.time() - state.pop("updated", time.time()), 1)
    return state


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# -- db ----------------------------------------------------------------------------------------

def cmd_db(args: argparse.Namespace) -> int:
    from .repair import rebuild

    config = _config(args)
    database = config.database
    if not database.exists():
        raise UsageError(f"{database}: no database yet")
    if args.action == "check":
        store = Store(database)
        try:
            store.check()
        finally:
            store.close()
        print(f"{database}: ok")
        return 0
    pid = running_daemon(database)
    if pid is not None:
        raise UsageError(f"a tagwatch daemon (pid {pid}) is using {database}; stop it first")
    aside, counts, problems = rebuild(database)
    print(f"rebuilt {database}; the damaged file is kept as {aside}")
    print("carried over: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    for problem in problems:
        print(f"unreadable: {problem}")
    print("the next `tagwatch run` (or `scan`) re-tags what was lost; photos whose vectors were lost "
          "are encoded again")
    return 0


# -- explain -------------------------------------------------------------------------------------

def cmd_explain(args: argparse.Namespace) -> int:
    config = _config(args)
    path = str(Path(args.image).expanduser().absolute())
    store = Store(config.database)
    try:
        pipeline = _pipeline(config, store, None)
        try:
            vector = pipeline.vector_for(path)
        except ImageError as exc:
            raise UsageError(f"{path}: {exc}") from None
        finally:
            pipeline.close()
    finally:
        store.close()
    assert pipeline.tags is not None and pipeline.vocabulary is not None
    scores = pipeline.tags.scores(vector)[0]
    limits = pipeline.thresholds
    picked = select(scores, limits, config.tagging.top_k)[0]
    chosen = set(picked)
    implied: dict[str, str] = {}  # a level expansion writes → the predicted tag below it
    for index in picked:
        for level in pipeline.expansion.levels.get(pipeline.tags.keywords[index], ()):
            implied.setdefault(level, pipeline.tags.keywords[index])
    override = pipeline.overrides.for_path(path)
    print(f"{path}: threshold {config.tagging.threshold}, top_k {config.tagging.top_k}, "
          f"model {pipeline.model.identity}")
    for rank, index in enumerate(sorted(range(len(scores)), key=lambda i: -scores[i]), start=1):
        keyword = pipeline.tags.keywords[index]
        if keyword in override.remove:
            verdict = "removed by an override"
        elif keyword in override.add:
            verdict = "added by an override"
        elif index in chosen:
            verdict = "TAGGED"
        elif keyword in implied:
            verdict = f"TAGGED: a level above {implied[keyword]}"
        elif scores[index] > limits[index]:
            verdict = "above threshold, beyond top_k"
        else:
            verdict = ""
        own = pipeline.vocabulary.tags[index].threshold
        if own is not None:
            verdict = f"{verdict} (its threshold {own:+.4f})".lstrip()
        print(f"{rank:>5}  {scores[index]:+.4f}  {keyword:<40} {verdict}".rstrip())
    for keyword in override.add:
        if keyword not in pipeline.tags.keywords:
            print(f"{'':>5}  {'':>7}  {keyword:<40} added by an override")
    for keyword, below in implied.items():
        if keyword not in pipeline.tags.keywords and keyword not in override.remove:
            print(f"{'':>5}  {'':>7}  {keyword:<40} TAGGED: a level above {below}")
    return 0


# -- tags check ----------------------------------------------------------------------------------

def cmd_tags_check(args: argparse.Namespace) -> int:
    config = _config(args)
    path = Path(args.file).expanduser()
    vocabulary = load_configured(path, config.tagging)  # errors: one line, exit 2
    for warning in vocabulary.warnings:
        print(f"warning: {warning}")
    store = Store(config.database)
    try:
        pipeline = Pipeline(store, LazyModel(config.model), None, config.tagging)
        try:
            encoded = pipeline.use_vocabulary(vocabulary)
        finally:
            pipeline.close()
    finally:
        store.close()
    assert pipeline.tags is not None
    prompts = len(vocabulary.prompts())
    own = sum(tag.threshold is not None for tag in vocabulary.tags)
    nested = sum(bool(tag.parents) for tag in vocabulary.tags)
    print(f"{path}: {len(vocabulary.tags)} tags, {prompts} prompts ({encoded} encoded now, "
          f"{prompts - encoded} cached), {own} with their own threshold, {nested} with a parent")
    _print_hierarchy(vocabulary)
    pairs = near_duplicates(pipeline.tags)
    if pairs:
        plural = "" if len(pairs) == 1 else "s"
        print(f"near-duplicates: {len(pairs)} pair{plural} of tags whose text vectors have cosine "
              f">= {NEAR_DUPLICATE} (model {pipeline.model.identity}); each pair fires together:")
        for score, a, b in pairs:
            print(f"  {score:.4f}  {a}  ~  {b}")
    else:
        print(f"no near-duplicates (no two tags with text cosine >= {NEAR_DUPLICATE})")
    return 0


def _print_hierarchy(vocabulary: Vocabulary) -> None:
    """Where the list sits in WordNet: the levels it gained, its deepest path, and (a plain list
    with expansion on) the tags WordNet could not place, with the reason."""
    if vocabulary.ancestors:
        levels = ", ".join(sorted(tag.keyword for tag in vocabulary.ancestors))
        print(f"levels above the tags, named by the photo vocabulary (written by expansion): {levels}")
    deepest = max(vocabulary.tags, key=lambda tag: len(tag.parents))
    if deepest.parents:
        print(f"deepest path: {deepest.path}")
    if vocabulary.unplaced:
        print(f"not placed in WordNet: {len(vocabulary.unplaced)} tags stay flat (expansion adds nothing "
              "to them; a .toml list can name each one's synset):")
        for line in vocabulary.unplaced:
            print(f"  {line}")


def cmd_tags_senses(args: argparse.Namespace) -> int:
    """Each noun sense of each word, with the path above it, so a rich list can name the right one
    (``synset = "crane.n.05"``, the bird); the sense a plain list would use is marked."""
    from .wordnet import WordNet

    wordnet = WordNet()
    for word in args.words:
        match = wordnet.match(word)
        forms = wordnet.base_forms(word)
        offsets = list(dict.fromkeys(o for form in forms for o, _ in wordnet.senses(form)))
        if not offsets:
            print(f"{word}: {match.reason}")
            continue
        verdict = f"a plain list uses {wordnet.name(match.synset)}" if match.synset else match.reason
        print(f"{word}: {len(offsets)} noun sense{'s' if len(offsets) > 1 else ''} ({verdict})")
        for offset in offsets:
            synset = wordnet.synset(offset)
            above = " < ".join(s.lemmas[0] for s in reversed(wordnet.path(synset)[-6:-1]))
            mark = "*" if match.synset == synset else " "
            print(f" {mark} {wordnet.name(synset):<24} {synset.wnid}  {', '.join(synset.lemmas)}"
                  + (f"  (under {above})" if above else ""))
    return 0


# -- export --------------------------------------------------------------------------------------

def cmd_export(args: argparse.Namespace) -> int:
    config = _config(args)
    if not config.database.exists():
        raise UsageError(f"{config.database}: no database yet; `tagwatch scan` or `tagwatch run` makes it")
    store = Store(config.database)
    try:
        pipeline = _pipeline(config, store, None)  # encodes prompts without a cached vector, no photo
        pipeline.close()
        paths = (list(dict.fromkeys(_expand(args.paths, config.exclude))) if args.paths
                 else sorted(store.files_under("/")))
        vectors, missing = cached_vectors(store, pipeline.model.identity, paths)
    finally:
        store.close()
    assert pipeline.vocabulary is not None and pipeline.tags is not None
    thresholds = tag_thresholds(pipeline.vocabulary.tags, config.tagging.threshold)
    results = score(vectors, pipeline.tags, thresholds, config.tagging.top_k, pipeline.expansion)
    for path, reason in sorted(missing.items()):
        print(f"{path}: not exported: {reason}", file=sys.stderr)
    render = render_json if args.format == "json" else render_csv
    sys.stdout.write(render(results, os.getcwd(), args.scores))
    print(f"export: {len(results)} photos" + (f"; {len(missing)} not exported (listed above)" if missing
                                               else ""), file=sys.stderr)
    return 0


# -- calibrate -----------------------------------------------------------------------------------

def cmd_calibrate(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.tags:
        config = replace(config, tags=Path(args.tags).expanduser().absolute())
    root = Path(args.examples).expanduser().absolute()
    folders = read_examples(root)
    store = Store(config.database)
    try:
        pipeline = _pipeline(config, store, None)
        try:
            assert pipeline.vocabulary is not None and pipeline.tags is not None
            tags = pipeline.vocabulary.tags
            keywords = pipeline.vocabulary.keywords
            parents = {tag.keyword: getattr(tag, "parent", None) for tag in tags}
            labels(folders, keywords, parents, root)  # a misnamed folder fails before any encoding
            encoded_before = store.stats(pipeline.model.identity)["encoded"]
            paths = list(dict.fromkeys(p for photos in folders.values() for p in photos))
            vectors, _ = pipeline.vectors_for(paths, config.batch.size)  # failures are logged
            encoded = store.stats(pipeline.model.identity)["encoded"] - encoded_before
        finally:
            pipeline.close()
    finally:
        store.close()
    usable = {name: [p for p in photos if p in vectors] for name, photos in folders.items()}
    for name, photos in usable.items():
        if name != NEGATIVES and not photos:
            log.warning("%s: no usable example photo; its tag keeps its threshold", root / name)
    data = labels(usable, keywords, parents, root)
    if not data.columns:
        raise UsageError(f"{root}: no tag has a usable example photo")
    scores = pipeline.tags.scores(np.stack([vectors[p] for p in data.paths]))
    results = calibrate(scores, data, keywords, tag_thresholds(tags, config.tagging.threshold))
    print(f"{len(data.paths)} example photos ({encoded} encoded now, the rest from the cache); "
          f"decisions are score > threshold, top_k not applied")
    sys.stdout.write(render_table(results))
    thresholds = {r.keyword: r.after for r in results}
    if args.dry_run:
        print("dry run: the tag list was not changed")
        return 0
    if config.tags.suffix.lower() == ".toml":
        text = config.tags.read_text(encoding="utf-8")
        write_atomic(config.tags, set_thresholds(text, thresholds, config.tags))
        print(f"wrote {len(thresholds)} thresholds into {config.tags}")
        return 0
    folder = config.tags.parent
    if is_builtin_tag_list(config.tags):  # never write into the installed package
        folder = config.source.parent if config.source else default_config_path().parent
    target = folder / f"{config.tags.stem}.toml"
    if target.exists():
        raise UsageError(f"{target} already exists; set tags = {toml_string(target.name)} in the config "
                         "to calibrate it, or move it away")
    write_atomic(target, rich_from_plain(keywords, thresholds, config.tags), like=config.tags)
    where = config.source or default_config_path()
    name = target.name if config.source and target.parent == config.source.parent else str(target)
    print(f"wrote {target}: the tags of {config.tags.name} with {len(thresholds)} thresholds.\n"
          f"To use it, set in {where}:\n    tags = {toml_string(name)}")
    return 0


# -- init ----------------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.config).expanduser() if args.config else default_config_path()
    if target.exists() and not args.force:
        raise UsageError(f"{target} already exists (use --force to overwrite it)")
    example = Path(str(builtin_tag_list())).with_name("config.example.toml").read_text(encoding="utf-8")
    if args.folders:
        folders = [str(Path(f).expanduser().resolve()) for f in args.folders]
        for folder in folders:
            if not Path(folder).is_dir():
                raise UsageError(f"{folder}: not a folder")
        listed = json.dumps(folders, ensure_ascii=False)
        example = example.replace('watch = ["~/Pictures"]', f"watch = {listed}")
    private_folder(target.parent)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(example)
    tags = target.parent / "tags.toml"  # the shipped photo vocabulary, to edit
    if not tags.exists():
        shutil.copyfile(builtin_tag_list(), tags)
    print(f"wrote {target}\ntag list {tags} (edit it while tagwatch runs; changes apply at once)\n"
          f"next: tagwatch run{'' if args.config is None else f' --config {target}'}")
    return 0


# -- service -------------------------------------------------------------------------------------

def _service_file(platform: str) -> Path:
    if platform == "launchd":
        return Path.home() / "Library" / "LaunchAgents" / f"{units.LAUNCHD_LABEL}.plist"
    return _xdg_config_home() / "systemd" / "user" / "tagwatch.service"


def _xdg_config_home() -> Path:
    return default_config_path().parent.parent


def cmd_service(args: argparse.Namespace) -> int:
    platform = args.platform or ("launchd" if sys.platform == "darwin" else "systemd")
    target = _service_file(platform)
    ours = target.exists() and units.MARKER.encode() in target.read_bytes()
    if args.action == "uninstall":
        if not target.exists():
            raise UsageError(f"{target}: not installed")
        if not ours and not args.force:
            raise UsageError(f"{target} was not written by tagwatch; remove it yourself (or --force)")
        if platform == "systemd" and (target.parent / "default.target.wants" / target.name).exists():
            raise UsageError("the service is still enabled: run `systemctl --user disable --now tagwatch` "
                             "first")
        target.unlink()
        after = ("systemctl --user daemon-reload" if platform == "systemd"
                 else f"launchctl bootout gui/{os.getuid()}/{units.LAUNCHD_LABEL}  # if it is loaded")
        print(f"removed {target}\nthen: {after}")
        return 0
    config = _config(args)
    if config.source is None:
        raise UsageError(f"no config at {default_config_path()}: run `tagwatch init FOLDER` first")
    if not config.watch:
        raise UsageError(f"{config.source}: `watch` lists no folder; the service would have nothing to do")
    if target.exists() and not ours and not args.force:
        raise UsageError(f"{target} exists and was not written by tagwatch (use --force to replace it)")
    command = (sys.executable, "-m", "tagwatch", "run", "--config", str(config.source.resolve()))
    if platform == "launchd":
        text = units.launchd_agent(command, Path.home() / "Library" / "Logs")
        text = text.replace(b"<dict>", f"<!-- {units.MARKER} -->\n<dict>".encode(), 1)
        enable = f"launchctl bootstrap gui/{os.getuid()} {shlex.quote(str(target))}"
    else:
        writable = (*config.watch, config.database.parent, config.model.cache_dir)
        spec = units.ServiceSpec(command, tuple(str(p) for p in dict.fromkeys(writable)))
        text = units.systemd_user_unit(spec).encode()
        enable = "systemctl --user daemon-reload && systemctl --user enable --now tagwatch"
    if args.print:
        sys.stdout.write(text.decode())
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.tmp")
    temp.write_bytes(text)
    temp.replace(target)
    print(f"wrote {target}\nnext: {enable}")
    if platform == "systemd":
        print("to keep it running while you are logged out (a NAS, a server): "
              "sudo loginctl enable-linger $USER")
    return 0


# -- entry point ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"config file (default {default_config_path()})")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="debug logging")
    common.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
                        help="text (default) or json: one JSON object per line (time, level, event, "
                             "path, tags or reason) for journald, Loki or jq; overrides log_format")
    parser = argparse.ArgumentParser(
        prog="tagwatch", parents=[common],
        description="Write CLIP keywords into your photos, and keep them current.")
    parser.add_argument("--version", action="version", version=f"tagwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="watch folders and tag new or changed photos")
    run.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to watch instead of the config's")
    run.set_defaults(func=cmd_run)

    scan = sub.add_parser("scan", parents=[common], help="tag photos once, like rtag")
    scan.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders (recursive)")
    scan.add_argument("--dry-run", action="store_true",
                      help="print each photo's tags with scores; write no photo (vectors are still cached)")
    scan.set_defaults(func=cmd_scan)

    untag = sub.add_parser("untag", parents=[common],
                           help="remove exactly the keywords tagwatch added; the daemon then leaves "
                                "those files alone until `scan` names them")
    untag.add_argument("paths", nargs="+", metavar="PATH", help="photos or folders (recursive)")
    untag.set_defaults(func=cmd_untag)

    status = sub.add_parser("status", parents=[common], help="counts from the database")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    explain = sub.add_parser("explain", parents=[common], help="every tag's score for one photo")
    explain.add_argument("image", metavar="IMAGE")
    explain.set_defaults(func=cmd_explain)

    db = sub.add_parser("db", parents=[common], help="check the database, or rebuild a damaged one")
    db.add_argument("action", choices=["check", "rebuild"])
    db.set_defaults(func=cmd_db)

    tags = sub.add_parser("tags", parents=[common], help="work with tag lists")
    tags_sub = tags.add_subparsers(dest="tags_command", required=True, metavar="ACTION")
    check = tags_sub.add_parser("check", parents=[common],
                                help="validate a tag list (.txt or .toml) and report near-duplicate tags")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_tags_check)
    senses = tags_sub.add_parser("senses", parents=[common],
                                 help="a word's WordNet noun senses, to name one as a tag's synset")
    senses.add_argument("words", nargs="+", metavar="WORD")
    senses.set_defaults(func=cmd_tags_senses)

    init = sub.add_parser("init", parents=[common], help="write a commented starter config")
    init.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to watch")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.set_defaults(func=cmd_init)

    service = sub.add_parser("service", parents=[common],
                             help="write (or remove) the systemd user unit or launchd agent for this user")
    service.add_argument("action", choices=["install", "uninstall"])
    service.add_argument("--platform", choices=["systemd", "launchd"],
                         help="default: launchd on macOS, systemd elsewhere")
    service.add_argument("--print", action="store_true", help="print the file instead of writing it")
    service.add_argument("--force", action="store_true",
                         help="replace or remove a file tagwatch did not write")
    service.set_defaults(func=cmd_service)

    export = sub.add_parser("export", parents=[common],
                            help="print each photo's tags (JSON or CSV), re-scored from cached vectors "
                                 "against the current tag list; encodes and writes no photo")
    export.add_argument("paths", nargs="*", metavar="PATH",
                        help="photos or folders (default: every photo in the database)")
    export.add_argument("--format", choices=("json", "csv"), default="json", help="output format (json)")
    export.add_argument("--scores", action="store_true", help="each tag's score too")
    export.set_defaults(func=cmd_export)

    calibrate = sub.add_parser("calibrate", parents=[common],
                               help="per-tag thresholds from example photos, written into the tag list")
    calibrate.add_argument("examples", metavar="EXAMPLES_DIR",
                           help=f"one folder of example photos per tag, named as its keyword, and "
                                f"'{NEGATIVES}' for photos that should get no tag")
    calibrate.add_argument("--tags", metavar="FILE", help="the tag list to calibrate (default: the config's)")
    calibrate.add_argument("--dry-run", action="store_true", help="print the table; change no file")
    calibrate.set_defaults(func=cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.config = getattr(args, "config", None)
    args.verbose = getattr(args, "verbose", 0)
    args.log_format = getattr(args, "log_format", None)
    try:
        return args.func(args)
    except (UsageError, ConfigError, VocabularyError, OverridesError, ModelError, StoreError,
            MetadataError, CalibrationError) as exc:
        print(logs.error_line(args.log_format or _log_format, str(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tagwatch export | head`: the reader has all it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush is quiet too
        return 141
