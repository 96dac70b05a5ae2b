"""``tagwatch completion bash|zsh|fish``: the shell code that completes tagwatch's commands and flags.

argcomplete rather than a static script (shtab): it covers fish as well as bash and zsh, and it
completes from the same parser the command runs, so a new flag is completed without regenerating
anything.  The price is one Python start per Tab press (about 0.4 s).
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "fish")
WHERE = {
    "bash": 'eval "$(tagwatch completion bash)"   # in ~/.bashrc',
    "zsh": 'eval "$(tagwatch completion zsh)"    # in ~/.zshrc, after compinit',
    "fish": "tagwatch completion fish | source   # in ~/.config/fish/config.fish",
}


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
