"""The shipped WordNet data file: it reproduces from the WordNet database, it answers what tag lists
ask of it, it travels in the package, and nothing reads it unless a tag list needs it."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import build_wordnet
from conftest import REPO
from tagwatch import wordnet as wordnet_module
from tagwatch.cli import main as cli_main
from tagwatch.config import TaggingConfig
from tagwatch.vocabulary import VocabularyError, load_configured
from tagwatch.wordnet import LICENSE_NAME, WordNet, WordNetError, data_path

SOURCE = Path("/usr/share/wordnet")


@pytest.fixture(scope="module")
def wn() -> WordNet:
    return WordNet()


@pytest.mark.skipif(not (SOURCE / "data.noun").is_file(),
                    reason="wordnet-base is not installed (scripts/setup-env installs it)")
def test_the_shipped_file_reproduces_from_wordnet_base(tmp_path: Path) -> None:
    out = tmp_path / "rebuilt.tsv.gz"
    build_wordnet.write(build_wordnet.build_text(SOURCE), out)
    shipped = gzip.decompress(data_path().read_bytes())
    assert gzip.decompress(out.read_bytes()) == shipped  # the text, whatever zlib compressed it
    assert shipped.count(b"\nS\t") == 82_115  # every noun synset of WordNet 3.0


def test_synsets_by_name_wnid_and_offset(wn: WordNet) -> None:
    dog = wn.resolve("dog.n.01")
    assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")
    assert wn.resolve("n02084071") == wn.resolve("02084071") == wn.resolve("Dog.N.1") == dog
    assert (dog.wnid, wn.name(dog)) == ("n02084071", "dog.n.01")
    golden = wn.resolve("golden_retriever.n.01")
    path = [s.lemmas[0] for s in wn.path(golden)]  # the first hypernym at each step, root first
    assert path[0] == "entity" and path[-5:] == ["dog", "hunting dog", "sporting dog", "retriever",
                                                 "golden retriever"]
    assert dog in list(wn.ancestors(golden))
    for bad, message in [("dog.n.9", "'dog' has 7 noun senses"), ("dgo.n.01", "not a noun"),
                         ("n99999999", "no WordNet 3.0 noun synset"), ("dog", "not a noun synset name")]:
        with pytest.raises(WordNetError, match=message):
            wn.resolve(bad)


def test_plain_words_match_one_synset_only_when_clear(wn: WordNet) -> None:
    assert wn.name(wn.match("Golden Retrievers").synset) == "golden_retriever.n.01"  # case, plural
    assert wn.name(wn.match("mice").synset) == "mouse.n.01"  # an irregular plural (noun.exc)
    assert wn.name(wn.match("dog").synset) == "dog.n.01"  # 7 senses; the corpus saw only the animal
    crane = wn.match("crane")
    assert crane.synset is None and crane.reason == "ambiguous: 5 noun senses, none dominant"
    assert wn.match("xyzzy").reason == "not a noun in WordNet 3.0"


def test_the_package_carries_the_data_file_and_its_licence(tmp_path: Path) -> None:
    """A wheel built from the repository holds what a user's install reads (package-data)."""
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info next to the sources
    for name in ("daemon", "config"):
        shutil.copytree(REPO / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("tagwatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("wordnet-nouns.tsv.gz", LICENSE_NAME, "photo-tags.toml", "imagenet-1k.txt"):
        assert f"tagwatch/data/{name}" in names
    with zipfile.ZipFile(wheel) as archive:  # the real file, not a link to the repository's config/
        shipped = archive.read("tagwatch/data/photo-tags.toml")
    assert shipped == (REPO / "config" / "photo-tags.toml").read_bytes()
    assert "Princeton" in (data_path().parent / LICENSE_NAME).read_text(encoding="utf-8")


def test_wordnet_is_read_only_for_a_list_that_needs_it(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain list without expansion (rtag's way) never opens the data file; with expansion it does."""
    plain = tmp_path / "tags.txt"
    plain.write_text("golden retriever\nbeach\n", encoding="utf-8")

    def refuse(self: WordNet, path: Path | None = None) -> None:
        raise AssertionError("the WordNet data file was read")

    monkeypatch.setattr(wordnet_module.WordNet, "__init__", refuse)
    vocabulary = load_configured(plain, TaggingConfig(expand="none"))
    assert [tag.path for tag in vocabulary.tags] == ["golden retriever", "beach"]
    with pytest.raises(AssertionError, match="was read"):
        load_configured(plain, TaggingConfig())  # expand = "parents": the same list is placed


def test_a_synset_by_its_bare_offset_and_an_unknown_one_read_plainly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/tag-lists.md allows "the bare offset": `synset = "2012849"` (WordNet's data.noun and
    `tags senses` print 8 digits, a person drops the leading zero) was refused; an offset WordNet
    lacks read `synset no WordNet 3.0 noun synset with offset …`; and `tags senses golden_retriever`,
    WordNet's own spelling, said it was no noun."""
    rich = tmp_path / "tags.toml"
    rich.write_text('[[tag]]\nkeyword = "crane"\nsynset = "2012849"\n\n[[tag]]\nkeyword = "bird"\n'
                    'synset = "n1503061"\n', encoding="utf-8")
    vocabulary = load_configured(rich, TaggingConfig())
    assert [tag.path for tag in vocabulary.tags] == ["animal|bird|crane", "animal|bird"]
    for bad in ("n99999999", "99999999"):
        rich.write_text(f'[[tag]]\nkeyword = "crane"\nsynset = "{bad}"\n', encoding="utf-8")
        with pytest.raises(VocabularyError) as error:
            load_configured(rich, TaggingConfig())
        assert str(error.value) == (f"{rich}:1: synset '{bad}': no WordNet 3.0 noun synset has the "
                                    "offset 99999999")

    assert cli_main(["tags", "senses", "golden_retriever"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "golden_retriever: 1 noun sense (a plain list uses golden_retriever.n.01)")
