"""What every command shares: loading the config, logging, the pipeline, paths, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import logging
import os
import shutil
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import exiftool, logs
from ..config import (
    BUILTIN_TAG_LISTS,
    MODES,
    TARGETS,
    Config,
    builtin_tag_list,
    default_config_path,
    load_config,
)
from ..formats import IMAGE_SUFFIXES
from ..imaging import set_pixel_limit
from ..metadata import KeywordWriter, remove_if_stale
from ..pipeline import Pipeline, pipeline_for
from ..store import Store, private_folder
from ..vocabulary import Vocabulary
from ..watcher import PathFilter, walk
from .completion import tag_lists
from .progress import Progress

if TYPE_CHECKING:
    from ..encoder import LazyModel

log = logging.getLogger("tagwatch")


class UsageError(Exception):
    """A problem the user must fix; printed as one line, exit status 2."""


def setup_logging(level: str, verbose: int, fmt: str = "text") -> None:
    """Our own messages at the configured level; libraries (open_clip logs to root) at WARNING."""
    logs.setup(fmt, logging.DEBUG if verbose else getattr(logging, level.upper()),
               logging.DEBUG if verbose > 1 else logging.WARNING)


def load(args: argparse.Namespace) -> Config:
    """The config named by ``--config`` (or the default), with logging set up as it asks.  The log
    format in force is kept in ``args.log_format``: the last line, a fatal error, is written in it."""
    config = load_config(Path(args.config) if args.config else None)
    args.log_format = args.log_format or config.log_format
    setup_logging(config.log_level, args.verbose, args.log_format)
    set_pixel_limit(config.max_megapixels)
    database_folder(config)
    torch_cache(config.database.parent / "torch-cache")
    return config


def database_folder(config: Config) -> None:
    """Create the database's folder (0700), or say in one line, naming the config, why it cannot be:
    a traceback from deep in the lock or the store was all `run` said, and under systemd each restart
    wrote another into the journal."""
    folder = config.database.parent
    where = (f"{config.source}: database" if config.source is not None
             else f"database {config.database} (the default; set database in {default_config_path()})")
    try:
        private_folder(folder)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(f"{where}: cannot create folder {exc.filename or folder}: {reason}; name a "
                         "database in a folder you can write") from None
    if not folder.is_dir():
        raise UsageError(f"{where}: cannot create folder {folder}: a file of that name is in the way; "
                         "move it, or name another database") from None


# -- flags that override the config for one run (quick experiments) -------------------------------

def _cosine(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine similarity is in [-1, 1], got {text}")
    return value


def _cap(text: str) -> int:
    """``--top-k``: a whole number, 0 for no cap (every tag above its threshold, as rtag writes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no cap) or more, got {text}")
    return value


def add_tagging_flags(parser: argparse.ArgumentParser, *, writing: bool) -> None:
    """``--threshold``, ``--top-k``, ``--tags`` (and for commands that write, ``--mode``,
    ``--target``): the config's values for this run only; the config file is not changed."""
    group = parser.add_argument_group("for this run instead of the config's")
    group.add_argument("--threshold", type=_cosine, metavar="COSINE",
                       help="the score a tag must exceed, in [-1, 1] ([tagging] threshold; a tag with "
                            "its own threshold in a rich list keeps it)")
    group.add_argument("--top-k", type=_cap, metavar="N",
                       help="at most N tags per photo, 0 for no cap ([tagging] top_k)")
    group.add_argument("--tags", metavar="FILE",
                       help="another tag list, .txt or .toml, or a built-in one by name: "
                            f"{' or '.join(BUILTIN_TAG_LISTS)} (tags)"
                       ).completer = tag_lists  # type: ignore[attr-defined]  # argcomplete's
    if writing:
        group.add_argument("--mode", choices=MODES, help="append, sync or overwrite ([tagging] mode)")
        group.add_argument("--target", choices=TARGETS,
                           help="embedded, sidecar or both ([write] target)")


def with_flags(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with what the command line's tagging flags override."""
    tagging = {name: value for name in ("threshold", "top_k", "mode")
               if (value := getattr(args, name, None)) is not None}
    if tagging:
        config = replace(config, tagging=replace(config.tagging, **tagging))
    if getattr(args, "target", None) is not None:
        config = replace(config, write=replace(config.write, target=args.target))
    if getattr(args, "tags", None):
        tags = (builtin_tag_list(args.tags) if args.tags in BUILTIN_TAG_LISTS
                else Path(args.tags).expanduser().absolute())
        config = replace(config, tags=tags)
    return config


def torch_cache(folder: Path) -> None:
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


def require_exiftool() -> None:
    """exiftool writes every keyword; without it, say in one line which package brings it."""
    if shutil.which("exiftool") is None:
        raise UsageError(exiftool.NOT_FOUND)


def make_pipeline(config: Config, store: Store, writer: KeywordWriter | None,
                  model: LazyModel | None = None, reader: KeywordWriter | None = None) -> Pipeline:
    """:func:`tagwatch.pipeline.pipeline_for` with a progress bar while new prompts are encoded
    (``model``: the config's child started ahead by the caller, or the Ray engine's stations;
    ``reader``: a dry run's, which reads the photos' GPS for their places and writes nothing)."""
    pipeline = pipeline_for(config, store, writer, model=model, reader=reader,
                            adopt=lambda pipeline, vocabulary: use_vocabulary(pipeline, store, vocabulary))
    # A record in the daemon's folders whose file is gone is the watcher's to retire (it keeps an
    # unplugged drive's), never a command's that meets a copy of the picture elsewhere meanwhile
    pipeline.writeback.watched = tuple(str(folder).rstrip("/") for folder in config.watch)
    return pipeline


@contextlib.contextmanager
def vocabulary_encoded(config: Config, vocabulary: Vocabulary) -> Iterator[tuple[Store, Pipeline, int]]:
    """The store open, with a pipeline holding ``vocabulary``'s prompt vectors (encoded by the
    config's model where the cache lacks them) and how many were encoded: what `tags check` and
    `tags suggest` read before counting or comparing.  The model child is closed before the body
    runs (it needs only the vectors); the store when it ends."""
    from ..encoder import LazyModel  # at run time only, as pipeline_for imports it

    store = Store(config.database)
    try:
        pipeline = Pipeline(store, LazyModel(config.model), None, config.tagging)
        try:
            encoded = use_vocabulary(pipeline, store, vocabulary)
        finally:
            pipeline.close()
        yield store, pipeline, encoded
    finally:
        store.close()


def use_vocabulary(pipeline: Pipeline, store: Store, vocabulary: Vocabulary) -> int:
    """``pipeline.use_vocabulary`` with a progress bar while prompts are encoded (a new list of a
    thousand tags takes a while); returns how many were."""
    prompts = vocabulary.prompts()
    missing = len(prompts) - len(store.text_vectors(prompts, pipeline.model.identity))
    with Progress(missing, "tag list", unit="prompt") as bar:
        return pipeline.use_vocabulary(vocabulary, advance=bar.advance)


def expand(paths: Sequence[str], exclude: Sequence[str], *, quiet: bool = False,
           clean_temp: bool = False, skipped: list[str] | None = None,
           watched: Sequence[Path] = (), passed_over: Counter[str] | None = None) -> Iterator[str]:
    """The photos named on the command line: files as given, folders walked (the config's exclude
    patterns honoured); anything else is skipped with a warning (unless ``quiet``: a counting pass)
    and added to ``skipped``: the command then exits 1, as a path it could not handle was named.
    ``clean_temp``: remove the temporary files a killed write left where the photos are (see
    :func:`remove_stale_temp_files`).  A file named is held to the exclude patterns and the hidden
    rule as a walk holds it, from the watched folder (``watched``) it lies in, else its own folder:
    ``find … | xargs tagwatch scan`` must not write into a NAS's ``@eaDir`` thumbnails."""
    if quiet:
        with _silenced():
            yield from expand(paths, exclude, watched=watched)
        return
    bases = sorted((str(w).rstrip("/") for w in watched), key=len, reverse=True)
    skipped = [] if skipped is None else skipped
    cleaned: set[str] = set()
    for given in paths:
        path = Path(given).expanduser().absolute()
        if path.is_dir():
            resolved = path.resolve()
            if _excluded_folder(resolved, bases, exclude):  # `scan /volume1/photo/*` names @eaDir too
                reason = "excluded (a hidden name, or one of the exclude patterns)"
                log.warning("%s: skipped: %s", path, reason, extra={"event": "skipped", "path": str(path),
                                                                    "reason": reason})
                skipped.append(str(path))
                continue
            walked = walk(resolved, PathFilter([resolved], exclude), clean_temp, passed_over=passed_over)
            for found, _ in walked:
                yield found
        elif path.is_file():
            if clean_temp:
                remove_stale_temp_files([str(path.parent)], cleaned)
            named = photo_path(given)
            base = next((b for b in bases if named.startswith(b + "/")), os.path.dirname(named))
            if path.suffix.lower() in IMAGE_SUFFIXES and not PathFilter([Path(base)], exclude).wanted(named):
                reason = "excluded (a hidden name, or one of the exclude patterns)"
                log.warning("%s: skipped: %s", path, reason, extra={"event": "skipped", "path": str(path),
                                                                    "reason": reason})
                skipped.append(str(path))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                yield named
            else:
                reason = f"not a photo file name ({' '.join(sorted(IMAGE_SUFFIXES))})"
                log.warning("%s: skipped: %s", path, reason,
                            extra={"event": "skipped", "path": str(path), "reason": reason})
                skipped.append(str(path))
        else:
            reason = not_a_file(path) or "no such file or folder"
            log.warning("%s: skipped: %s", path, reason, extra={"event": "skipped", "path": str(path),
                                                                "reason": reason})
            skipped.append(str(path))


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def not_a_file(path: Path) -> str | None:
    """Why a named path is no photo file a command may open, or None for a regular file: a FIFO
    blocks the reader for ever and a link to ``/dev/zero`` reads until memory runs out, and both
    were said to be "no such file"."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a symbolic link to nothing" if path.is_symlink() else "no such file or folder"
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not a photo"
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


def _excluded_folder(folder: Path, bases: Sequence[str], exclude: Sequence[str]) -> bool:
    """A folder named on the command line that a walk would not enter: hidden or excluded below the
    watched folder it lies in; outside every watched folder only an exclude pattern of its own name
    counts (a hidden folder named outside them is where the person keeps photos, named on purpose)."""
    base = next((b for b in bases if str(folder).startswith(b + "/")), None)
    if base is not None:
        return not PathFilter([Path(base)], exclude).wanted_dir(str(folder))
    return any(fnmatch.fnmatchcase(folder.name, pattern) for pattern in PathFilter([folder], exclude).names)


def photo_path(given: str) -> str:
    """A photo named on the command line as the store records it: absolute, with its folders'
    symbolic links resolved, as the daemon's watch folders and a folder walk are (a photo named
    through a linked watch folder found no record); a link to a file is followed, as it was named."""
    path = Path(given).expanduser().absolute()
    return str(path.resolve() if path.is_symlink() else path.parent.resolve() / path.name)


def remove_stale_temp_files(folders: Iterable[str], done: set[str] | None = None) -> None:
    """Delete the temporary files (``.PID-N.tagwatch-tmp``) that a write of ours killed midway left
    in each of ``folders`` (not below), those whose writer is gone only: a ``scan`` or ``untag``
    there cleans up after an interrupted one, where before only the daemon's start-up did (a user
    who never runs it kept them for ever).  ``done``: folders already cleaned, skipped and added to."""
    done = set() if done is None else done
    for folder in folders:
        if folder in done:
            continue
        done.add(folder)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    remove_if_stale(entry)
        except OSError:
            continue  # the photo's own line says what is wrong with its folder


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """tagwatch's warnings held back (a second walk over the same folders would repeat them)."""
    logger = logging.getLogger("tagwatch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


SKIPPED = "skipped"  # a command's count of the paths named that it could not use (none there, no photo)


def count_text(counts: Mapping[str, int]) -> str:
    """``3 tagged, 1 unchanged`` (statuses in alphabetical order), or ``nothing to do``."""
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"
