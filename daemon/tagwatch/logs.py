"""Log lines for people (text) or for programs (one JSON object per line).

The daemon's notable lines carry their facts as ``extra`` fields (``event``, ``path``, ``tags``,
``reason``), so journald, Loki or ``jq`` users can select "every photo that failed, with why" without
parsing English.  Lines without them (start-up, libraries) still come out as JSON, as event "log".
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# Characters that would end or garble a text line (a file may be named "a\nb.jpg"): written escaped
_ESCAPES = {**{code: f"\\x{code:02x}" for code in (*range(32), 0x7F, 0x85)},
            ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so one record is one line."""
    return text.translate(_ESCAPES)


def shown(path: str) -> str:
    """A file name as the log writes it, for any output a person reads: control characters escaped
    (a name may hold a line break), and a name that is not valid UTF-8 (decoded with surrogate
    escapes, which a terminal shows as ``��``) as Python's ``ascii()`` of it, quoted."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(path)
    return one_line(path)


class TextFormatter(logging.Formatter):
    """The text format; the message (file names in it) is kept on one line, a traceback follows."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)
# Fields a log call may pass in ``extra`` that go into the JSON object as they are (docs/faults.md
# lists them: a field passed but not named here never reaches the JSON line)
FIELDS = ("event", "path", "from", "tags", "places", "declined", "removed", "respelled", "dropped",
          "adopted", "original_gone", "keywords", "reason")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, event, the record's fields, and the text message."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
        }
        for name in FIELDS[1:]:
            if hasattr(record, name):
                out[name] = getattr(record, name)
        out["message"] = record.getMessage()
        out["logger"] = record.name
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


# --- Warnings: one line each, naming the file they are about ----------------------------------------

# A warning's category and text → the level to log it at, or None to drop it
Judge = Callable[[type[Warning], str], "int | None"]
_subject = threading.local()  # per thread: (path, judge) of the file being worked on, if any
WARNINGS_LOGGER = "tagwatch.warnings"


def _as_warning(category: type[Warning], text: str) -> int | None:
    return logging.WARNING


def _drop(category: type[Warning], text: str) -> None:
    return None


class _Subject:
    """The file a thread is working on, how to judge its warnings, and those it raised so far."""

    def __init__(self, path: str, judge: Judge) -> None:
        self.path, self.judge = path, judge
        self.held: list[tuple[int, str]] = []  # (level, text), in the order raised

    def flush(self, failed: bool) -> None:
        """The file's warnings as one line: Pillow's "Corrupt EXIF data" is often preceded by a
        "Skipping tag 65504" for each tag it gave up on, three WARNING lines for one damaged file
        where faults.md promises one.  The most serious first, at its level, the rest as DEBUG lines.
        A file that then failed anyway gets only DEBUG lines: its "skipped" line names the reason."""
        held, self.held = self.held, []
        if not held:
            return
        texts = list(dict.fromkeys(text for _, text in held))
        level = max(level for level, _ in held)
        head = next(text for lvl, text in held if lvl == level)
        others = [text for text in texts if text != head]
        warn = logging.getLogger(WARNINGS_LOGGER)
        more = f" (and {len(others)} more from the decoder: -v shows them)" if others and not failed else ""
        warn.log(logging.DEBUG if failed else level, "%s: %s%s", self.path, head, more,
                 extra={"path": self.path, "reason": head})
        for text in others:
            warn.debug("%s: %s", self.path, text, extra={"path": self.path, "reason": text})


@contextlib.contextmanager
def about(path: str, judge: Judge = _as_warning) -> Iterator[None]:
    """Warnings this thread raises meanwhile are one log line ``path: text`` at ``judge``'s level: a
    library's complaint about a photo (Pillow's "Corrupt EXIF data") names the photo.  A thread-local,
    not ``warnings.catch_warnings``, which swaps process-wide state and so loses or misroutes the
    warnings of the other decode threads.  Held until the block ends, then said once (see
    :meth:`_Subject.flush`): at DEBUG if the block raised, as the failure is then said anyway."""
    outer = getattr(_subject, "value", None)
    subject = _Subject(path, judge)
    _subject.value = subject
    failed = True
    try:
        yield
        failed = False
    finally:
        _subject.value = outer
        if path:
            subject.flush(failed)


def quiet() -> contextlib.AbstractContextManager[None]:
    """Warnings this thread raises meanwhile are dropped (a first look at a file, which its decode
    looks at again and reports)."""
    return about("", _drop)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """``warnings.showwarning`` as one log line, never Python's two (the text, then the source line);
    one about a file being worked on waits for :func:`about` to say it with the others."""
    text = " ".join(str(message).split())
    subject: _Subject | None = getattr(_subject, "value", None)
    level = (subject.judge if subject is not None else _as_warning)(category, text)
    if level is None:
        return
    if subject is not None and subject.path:
        subject.held.append((level, text))
    else:
        logging.getLogger("py.warnings").log(level, "%s: %s (%s:%d)", category.__name__, text,
                                             filename, lineno)


def log_warnings() -> None:
    """Route every warning into the log (see :func:`about`).  Pillow's are shown every time, not once
    per process (Python's default): each is about another file."""
    warnings.showwarning = _show_warning
    for module in ("PIL", "pillow_heif"):
        warnings.filterwarnings("always", module=module)


def setup(fmt: str, level: int, library_level: int) -> None:
    """Send every record to stderr in ``fmt`` ("text" or "json"); ``level`` for tagwatch's loggers,
    ``library_level`` for everything else (open_clip logs to the root logger)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.set_name("tagwatch")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "tagwatch"]:  # a second setup replaces it
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(library_level)
    logging.getLogger("tagwatch").setLevel(level)
    log_warnings()


def error_line(fmt: str, message: str) -> str:
    """A fatal error as the last line of the log, in the same format as the rest."""
    if fmt != "json":
        return f"tagwatch: error: {one_line(message)}"
    return _json_line("error", "error", message)


def summary_line(fmt: str, message: str) -> str:
    """A command's closing summary (``scan: 12 photos: ...``), in the same format as the log."""
    return _json_line("info", "summary", message) if fmt == "json" else message


def _json_line(level: str, event: str, message: str) -> str:
    return json.dumps({"time": datetime.now().astimezone().isoformat(timespec="milliseconds"),
                       "level": level, "event": event, "message": message}, ensure_ascii=False)
