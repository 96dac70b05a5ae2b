"""``tagwatch completion bash|zsh|fish``: the shell code that completes tagwatch's commands and flags.

argcomplete rather than a static script (shtab): it covers fish as well as bash and zsh, and it
completes from the same parser the command runs, so a new flag is completed without regenerating
anything.  The price is one Python start per Tab press (about 0.4 s).  Beyond argparse's choices,
``--tags`` completes the built-in lists' names as well as files, and ``explain --tag`` the keywords
of the tag list the command would use (not file names).
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

SHELLS = ("bash", "zsh", "fish")
WHERE = {
    "bash": 'eval "$(tagwatch completion bash)"   # in ~/.bashrc',
    "zsh": 'eval "$(tagwatch completion zsh)"    # in ~/.zshrc, after compinit',
    "fish": "tagwatch completion fish | source   # in ~/.config/fish/config.fish",
}


def tag_lists(prefix: str, **kwargs: Any) -> list[str]:
    """Completes ``--tags``: the built-in lists' names (``photo<Tab>`` → ``photo-tags``), then files."""
    from argcomplete.completers import FilesCompleter

    from ..config import BUILTIN_TAG_LISTS

    return [name for name in BUILTIN_TAG_LISTS if name.startswith(prefix)] + list(FilesCompleter()(prefix))


def list_keywords(prefix: str, parsed_args: argparse.Namespace | None = None, **kwargs: Any) -> list[str]:
    """Completes ``--tag``: the keywords of the tag list the command would use (its ``--tags``, else
    the config's), read as text without WordNet, so a Tab press stays quick; nothing (no file names)
    where that list cannot be read."""
    try:
        path = _list_path(parsed_args)
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
        if path.suffix.lower() == ".toml":
            keywords = [t["keyword"] for t in tomllib.loads(text).get("tag", [])
                        if isinstance(t, dict) and isinstance(t.get("keyword"), str)]
        else:
            keywords = [line for line in text.splitlines() if not line.strip().startswith("#")]
    except (OSError, ValueError, TypeError, AttributeError):
        return []
    found: dict[str, str] = {}  # casefolded → as first spelled: keywords that differ in case are one
    for keyword in (" ".join(k.split()) for k in keywords):
        found.setdefault(keyword.casefold(), keyword)
    return [k for k in found.values() if k and k.casefold().startswith(prefix.casefold())]


def _list_path(parsed_args: argparse.Namespace | None) -> Path:
    """The tag list a command's ``--tags`` and ``--config`` name, as the command resolves them."""
    from ..config import BUILTIN_TAG_LISTS, builtin_tag_list, load_config, named_config

    given = getattr(parsed_args, "tags", None)
    if given:
        return builtin_tag_list(given) if given in BUILTIN_TAG_LISTS else Path(given).expanduser()
    config = named_config(getattr(parsed_args, "config", None))
    return load_config(Path(config) if config else None).tags


def completion_func(args: argparse.Namespace) -> int:
    import argcomplete  # here: not at every command's start

    print(argcomplete.shellcode(["tagwatch"], shell=args.shell), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # ``common``: --config and the others are taken, as by every command, and not needed (an alias
    # ``tagwatch --config other.toml`` must not break this one)
    completion = sub.add_parser(
        "completion", parents=[common],
        help="print the shell code that completes tagwatch's commands (bash, zsh, fish)",
        description="Print the code that makes your shell complete tagwatch's commands and flags.",
        epilog="to turn it on:\n  " + "\n  ".join(WHERE.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(func=completion_func)
