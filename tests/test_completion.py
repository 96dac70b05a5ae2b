"""Tab completion of what names a tag list or a tag, in a real bash with the code `tagwatch
completion bash` prints (argcomplete answers from the same parser the command runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
eval "$(tagwatch completion bash)"
complete_line() {
    COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$COMP_LINE"
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _python_argcomplete tagwatch; echo "${COMPREPLY[*]}"
}
"""


def completions(folder: Path, *lines: str) -> list[str]:
    """What bash offers after each of ``lines``, one string each, run in ``folder``."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TAGWATCH_CONFIG", None)
    script = SCRIPT + "".join(f'complete_line "{line}"\n' for line in lines)
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120,
                            cwd=folder)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:len(lines)]


def test_tag_list_names_and_the_lists_tags_complete(tmp_path: Path) -> None:
    """`--tags photo<Tab>` offered no built-in list's name, and `explain --tag <Tab>` offered the
    folder's file names, never a tag: it offers the keywords of the list the command would use."""
    (tmp_path / "tags.txt").write_text("red\ngreen\n# a comment\ngolden retriever\nGreen\n", encoding="utf-8")
    (tmp_path / "config.toml").write_text('tags = "tags.txt"\n', encoding="utf-8")
    (tmp_path / "grass.jpg").write_bytes(b"")  # a file name --tag must not offer
    (tmp_path / "photos.txt").write_text("beach\n", encoding="utf-8")  # one --tags may
    config = tmp_path / "config.toml"
    assert completions(
        tmp_path,
        "tagwatch scan --tags photo",
        "tagwatch calibrate --tags ima",
        f"tagwatch explain --config {config} --tag g",
        f"tagwatch explain --config {config} --tags photo-tags --tag golden",
        f"tagwatch explain --config {config} --tag x",
    ) == [
        "photo-tags photos.txt",
        "imagenet-1k ",
        r"green golden\ retriever",
        "golden\\ retriever ",
        "",
    ]
