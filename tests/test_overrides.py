"""Overrides: a person's per-path corrections, merged after scoring, the person's to keep.

Real JPEGs, the real pipeline and ledger, exiftool reading back; the daemon test edits the files
while ``tagwatch run`` watches them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Daemon, Env, exif_keywords, noise_jpeg, status, tagwatch, wait_for, write_config
from tagwatch.config import TaggingConfig
from tagwatch.outcomes import Status
from tagwatch.overrides import Override, OverridesError, parse_overrides
from tagwatch.store import USER
from test_ownership import person_tags


def overrides(text: str, roots: list[Path] | None = None, name: str = "overrides.toml"):
    return parse_overrides(text, Path(name), roots if roots is not None else [Path("/photos")])


# -- the file --------------------------------------------------------------------------------------

def test_globs_relative_to_a_watched_folder_absolute_paths_and_rule_order() -> None:
    rules = overrides("""
[[override]]
path = "holidays/**"
add = ["holiday", "beach"]

[[override]]
path = "holidays/2024/rainy/*.jpg"
remove = ["beach"]
add = ["rain"]

[[override]]
path = "/elsewhere/scan.jpg"
add = ["scanned"]

[[override]]
path = "**/*.png"
remove = ["screenshot"]
""", roots=[Path("/photos"), Path("/more")])
    assert rules.for_path("/photos/holidays/a.jpg") == Override(("holiday", "beach"), ())
    assert rules.for_path("/more/holidays/x/y/b.jpg") == Override(("holiday", "beach"), ())
    # a later rule wins: beach is taken out again for the rainy ones
    assert rules.for_path("/photos/holidays/2024/rainy/c.jpg") == Override(("holiday", "rain"), ("beach",))
    assert rules.for_path("/photos/holidays/2024/rainy/deeper/d.jpg") == Override(("holiday", "beach"), ())
    assert rules.for_path("/elsewhere/scan.jpg") == Override(("scanned",), ())
    assert rules.for_path("/photos/x/shot.png") == Override((), ("screenshot",))
    assert not rules.for_path("/photos/other/a.jpg") and not rules.for_path("/elsewhere/holidays/a.jpg")
    # a glob matching a folder covers what is inside it
    assert overrides('[[override]]\npath = "2024-0[1-6]"\nadd = ["H1"]\n').for_path(
        "/photos/2024-03/x/y.jpg") == Override(("H1",), ())


def test_fingerprint_follows_the_rules_and_is_empty_without_any() -> None:
    one = overrides('[[override]]\npath = "a/**"\nadd = ["x"]\n')
    assert overrides("").fingerprint() == ""
    assert one.fingerprint() == overrides('# c\n[[override]]\npath = "a/**"\nadd = ["x"]\n').fingerprint()
    assert one.fingerprint() != overrides('[[override]]\npath = "a/**"\nadd = ["y"]\n').fingerprint()
    assert one.fingerprint() != overrides('[[override]]\npath = "a/**"\nadd = ["x"]\n',
                                          roots=[Path("/other")]).fingerprint()


@pytest.mark.parametrize(("text", "message"), [
    ('[[override]]\npath = "a"\nadd = ["x"]\n\n[[override]]\npath = "b"\nadds = ["y"]\n',
     "overrides.toml:5: unknown key 'adds' (known: path, add, remove)"),
    ('[[override]]\nadd = ["x"]\n', "overrides.toml:1: the override has no path"),
    ('[[override]]\npath = ""\nadd = ["x"]\n', "overrides.toml:1: path must be a glob"),
    ('[[override]]\npath = "../x"\nadd = ["x"]\n', "overrides.toml:1: path '../x' must not contain '..'"),
    ('[[override]]\npath = "a"\n', "overrides.toml:1: the override neither adds nor removes a keyword"),
    ('[[override]]\npath = "a"\nadd = ["x"]\nremove = ["x"]\n', "overrides.toml:1: 'x' is both added"),
    ('[[override]]\npath = "a"\nadd = ["x"]\nremove = ["X"]\n', "overrides.toml:1: 'x' is both added"),
    ('[[override]]\npath = "a"\nadd = ["animal|dog"]\n',
     "overrides.toml:1: add 'animal|dog' contains '|', which separates the levels"),
    ('[[override]]\npath = "a"\nadd = "x"\n', "overrides.toml:1: add must be a list of strings"),
    ('[[override]]\npath = "a"\nadd = ["' + "x" * 65 + '"]\n', "overrides.toml:1: keyword 'xxxxxxxx"),
    ('[[override]]\npath = "a"\nadd = ["x"\n',
     "overrides.toml:3: not valid TOML: Unclosed array (at the end of the file)"),
    ('path = "a"\n', "overrides.toml: unknown key 'path'"),
])
def test_errors_name_the_file_and_the_line(text: str, message: str) -> None:
    with pytest.raises(OverridesError) as caught:
        overrides(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_relative_rules_without_a_watched_folder_are_reported() -> None:
    rules = overrides('[[override]]\npath = "a/**"\nadd = ["x"]\n', roots=[])
    assert "relative paths match nothing here" in rules.warnings[0]
    assert not rules.for_path("/a/b.jpg")


# -- on real files ---------------------------------------------------------------------------------

@pytest.fixture
def env(tmp_path: Path, tiny_checkpoint: Path) -> Env:
    env = Env(tmp_path, tiny_checkpoint, TaggingConfig(threshold=-1.0, top_k=2))
    yield env
    env.close()


def xmp_of(photo: Path) -> Path:
    """The sidecar tagwatch writes for ``photo`` (its default naming, ``IMG_1.jpg.xmp``)."""
    return photo.with_name(photo.name + ".xmp")


def keywords_in(photo: Path) -> set[str]:
    found = exif_keywords(photo)
    assert sorted(found["iptc"]) == sorted(found["xmp"])
    return set(found["iptc"])


def test_overrides_add_and_remove_and_their_keywords_are_the_persons(env: Env, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    holiday = noise_jpeg(root / "holidays" / "a.jpg", seed=1)
    other = noise_jpeg(root / "other" / "b.jpg", seed=2)
    predicted = {Path(o.path).name: [k for k, _ in o.tags]
                 for o in env.pipeline.process([str(holiday), str(other)], dry_run=True)}
    dropped = predicted["a.jpg"][0]
    env.pipeline.tagging = TaggingConfig(threshold=-1.0, top_k=2, mode="sync")
    env.pipeline.use_overrides(parse_overrides(f"""
[[override]]
path = "holidays/**"
add = ["holiday", "Anna"]
remove = ["{dropped}"]

[[override]]
path = "{other}"
add = ["keep me"]
""", tmp_path / "overrides.toml", [root]))
    env.use(["beach", "forest", "mountain"], env.pipeline.tagging)
    predicted = {Path(o.path).name: [k for k, _ in o.tags]
                 for o in env.pipeline.process([str(holiday), str(other)], dry_run=True)}
    assert env.run(holiday, other) == {"a.jpg": Status.TAGGED, "b.jpg": Status.TAGGED}
    assert dropped not in predicted["a.jpg"]
    assert keywords_in(holiday) == set(predicted["a.jpg"])
    assert {"holiday", "Anna"} <= keywords_in(holiday) and "keep me" in keywords_in(other)
    row = env.store.file(str(holiday))
    assert sorted(env.store.ledger(row.id, USER)) == ["Anna", "holiday"]  # the person's, not ours
    assert "holiday" not in env.store.ledger(row.id)

    encoded = env.encoded()
    env.use(["city street", "harbour"], env.pipeline.tagging)  # sync: our old tags go...
    env.pipeline.retag()
    assert env.encoded() == encoded
    assert {"holiday", "Anna"} <= keywords_in(holiday)  # ...the override's stay
    assert not {"beach", "forest", "mountain"} & keywords_in(holiday)
    for photo in (holiday, other):
        assert env.pipeline.untag(str(photo)).status == "untagged"
    assert keywords_in(holiday) == {"holiday", "Anna"} and keywords_in(other) == {"keep me"}


def test_remove_takes_out_our_keyword_in_any_mode_never_a_persons(env: Env, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    photo = person_tags(noise_jpeg(root / "p.jpg", seed=3), "Anna")
    env.use(["beach", "forest", "Anna"])  # append mode; Anna is also a tag here
    env.run(photo)
    ours = keywords_in(photo) - {"Anna"}
    assert len(ours) >= 1
    withdrawn = sorted(ours)[0]
    encoded = env.encoded()
    env.pipeline.use_overrides(parse_overrides(
        f'[[override]]\npath = "*.jpg"\nremove = ["{withdrawn}", "Anna"]\n', tmp_path / "o.toml", [root]))
    env.pipeline.retag()
    assert env.encoded() == encoded  # re-applied to the cached vector
    assert keywords_in(photo) == (ours - {withdrawn}) | {"Anna"}  # Anna was the person's: it stays
    env.pipeline.use_overrides(parse_overrides("", tmp_path / "o.toml", [root]))  # the rule goes away
    env.pipeline.retag()
    assert withdrawn in keywords_in(photo)  # predicted again, so written again


def test_scan_and_explain_apply_the_configured_overrides(tmp_path: Path, tiny_checkpoint: Path) -> None:
    root = tmp_path / "lib"
    photo = noise_jpeg(root / "trip" / "p.jpg", seed=4)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], tags=["beach", "forest"], top_k=2)
    text = config.read_text().replace('tags = "tags.txt"', 'tags = "tags.txt"\noverrides = "overrides.toml"')
    config.write_text(text)
    overrides_file = config.parent / "overrides.toml"
    overrides_file.write_text(
        '[[override]]\npath = "trip/**"\nadd = ["Reise", "旅行"]\nremove = ["forest"]\n', encoding="utf-8")
    result = tagwatch("scan", "--config", str(config), str(root))
    assert result.returncode == 0, result.stderr
    assert keywords_in(photo) == {"beach", "Reise", "旅行"}
    result = tagwatch("explain", "--config", str(config), str(photo))
    lines = result.stdout.splitlines()
    assert any("forest" in line and line.endswith("removed by an override") for line in lines)
    assert any(" Reise " in line and line.endswith("added by an override") for line in lines)
    overrides_file.write_text('[[override]]\npath = "trip/**"\nadd = ["Reise"]\nremove = "forest"\n')
    result = tagwatch("scan", "--config", str(config), str(root))
    assert result.returncode == 2
    assert f"tagwatch: error: {overrides_file}:1: remove must be a list of strings" in result.stderr


def test_the_daemon_reloads_edited_overrides_and_rich_lists(tmp_path: Path, tiny_checkpoint: Path,
                                                            daemon_factory) -> None:
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=10)
    tags_file = config.parent / "tags.toml"
    tags_file.write_text('[[tag]]\nkeyword = "beach"\n[[tag]]\nkeyword = "forest"\n', encoding="utf-8")
    overrides_file = config.parent / "overrides.toml"
    overrides_file.write_text('[[override]]\npath = "other/**"\nadd = ["x"]\n')
    text = config.read_text().replace('tags = "tags.txt"', 'tags = "tags.toml"\noverrides = "overrides.toml"')
    config.write_text(text.replace("[tagging]", '[tagging]\nmode = "sync"'))
    daemon: Daemon = daemon_factory(config).start()
    photo = noise_jpeg(root / "trip" / "p.jpg", seed=5)
    wait_for(lambda: keywords_in(photo) == {"beach", "forest"})
    encoded = status(config)["encoded"]

    mark = len(daemon.log())
    overrides_file.write_text('[[override]]\npath = "trip/**"\nadd = ["Urlaub"]\n', encoding="utf-8")
    wait_for(lambda: keywords_in(photo) == {"beach", "forest", "Urlaub"})
    assert "overrides " in daemon.log()[mark:]

    mark = len(daemon.log())
    overrides_file.write_text('[[override]]\npath = "trip/**"\nadd = ["Urlaub"]\nadd = ["twice"]\n')
    daemon.wait_log("overrides not reloaded, keeping the previous ones", since=mark)
    assert f"{overrides_file}:4: not valid TOML" in daemon.log()[mark:]
    refused = mark

    # a tag's own threshold of 1 can never be exceeded: sync takes our forest out again
    tags_file.write_text('[[tag]]\nkeyword = "beach"\n[[tag]]\nkeyword = "forest"\nthreshold = 1.0\n')
    wait_for(lambda: keywords_in(photo) == {"beach", "Urlaub"})
    daemon.wait_log(f"tag list {tags_file}: 2 tags", since=refused)
    # the refusal is not followed by "overrides …: 1 rule; re-scored 0 photos", as if the refused
    # file were in use, nor does the list's reload say the overrides' rules again: they did not change
    assert f"overrides {overrides_file}: " not in daemon.log()[refused:], daemon.log()[refused:]
    mark = len(daemon.log())
    tags_file.write_text('[[tag]]\nkeyword = "beach"\n\n[[tag]]\nkeyword = "forest"\nparent = "tree"\n')
    daemon.wait_log("tag list not reloaded, keeping the previous one", since=mark)
    assert f"{tags_file}:4: parent 'tree' of 'forest' is not a keyword in this list" in daemon.log()[mark:]
    later = noise_jpeg(root / "trip" / "q.jpg", seed=6)  # tagged with the last good list and overrides
    wait_for(lambda: keywords_in(later) == {"beach", "Urlaub"})
    assert "re-scored 0 photos" not in daemon.log()[mark:]  # a rejected list changed nothing
    assert status(config)["encoded"] == encoded + 1
    # `tagwatch status` says which files on disk are not in use, and why (only the log said it)
    wait_for(lambda: set(status(config)["daemon"]["rejected"]) == {"tag list", "overrides"})
    shown = tagwatch("status", "--config", str(config)).stdout
    assert (f"NOT IN USE: the tag list on disk, refused: {tags_file}:4: parent 'tree' of 'forest' is not a "
            "keyword in this list; the previous one is in use until it is fixed") in shown, shown
    assert f"NOT IN USE: the overrides on disk, refused: {overrides_file}:4: not valid TOML" in shown
    tags_file.write_text('[[tag]]\nkeyword = "beach"\n[[tag]]\nkeyword = "forest"\nthreshold = 1.0\n')
    wait_for(lambda: set(status(config)["daemon"]["rejected"]) == {"overrides"})
    assert daemon.stop() == 0
    assert status(config)["failed"] == 0


def test_the_config_names_the_overrides_file_relative_to_itself(tmp_path: Path) -> None:
    from tagwatch.config import ConfigError, parse_config

    config = parse_config({"overrides": "sub/overrides.toml"}, tmp_path, "c.toml")
    assert config.overrides == tmp_path / "sub" / "overrides.toml"
    assert parse_config({}, tmp_path, "c.toml").overrides is None
    with pytest.raises(ConfigError, match=r"c\.toml: overrides must be a path string"):
        parse_config({"overrides": ["a"]}, tmp_path, "c.toml")


# -- corrections written by the review page -----------------------------------------------------------

HAND_WRITTEN = """# my corrections
[[override]]
path = "holidays/**"   # the trip
add = ["holiday"]
remove = ["red"]
"""


def test_a_correction_goes_into_a_rule_for_exactly_that_photo_keeping_every_comment() -> None:
    from tagwatch.overrides import correct

    source, roots, photo = Path("overrides.toml"), [Path("/photos")], "/photos/holidays/a[1]*.jpg"
    text = correct(HAND_WRITTEN, source, roots, photo, "blue", "remove")
    assert text.startswith(HAND_WRITTEN)  # the person's rule and comments, byte for byte
    text = correct(text, source, roots, photo, "Anna", "add")
    rules = parse_overrides(text, source, roots)
    assert [r.pattern for r in rules.rules] == ["holidays/**", "/photos/holidays/a[[]1][*].jpg"]
    assert rules.for_path(photo) == Override(("holiday", "Anna"), ("red", "blue"))
    assert not rules.for_path("/photos/holidays/a11.jpg").add.count("Anna")  # glob characters escaped
    # a photo-level rule wins over the folder's: undoing the folder's "red" is refused, not faked
    with pytest.raises(OverridesError, match="comes from the rule for 'holidays/\\*\\*'"):
        correct(text, source, roots, photo, "red", "undo")
    assert correct(text, source, roots, photo, "holiday", "remove").count("[[override]]") == 2
    # undoing every correction of the photo leaves the person's file as it was
    text = correct(correct(text, source, roots, photo, "blue", "undo"), source, roots, photo, "Anna", "undo")
    assert parse_overrides(text, source, roots).rules == parse_overrides(HAND_WRITTEN, source, roots).rules
    assert text.startswith(HAND_WRITTEN)


def test_a_correction_after_a_later_matching_rule_is_appended_so_it_wins() -> None:
    from tagwatch.overrides import correct

    source, roots = Path("o.toml"), [Path("/p")]
    text = '[[override]]\npath = "/p/a.jpg"\nremove = ["x"]\n\n[[override]]\npath = "**/*.jpg"\nadd = ["y"]\n'
    fixed = correct(text, source, roots, "/p/a.jpg", "y", "remove")
    assert fixed.startswith(text) and parse_overrides(fixed, source, roots).for_path("/p/a.jpg") == Override(
        (), ("x", "y"))
    with pytest.raises(OverridesError, match=r"o\.toml:2: not valid TOML"):
        correct("[[override]]\npath = \n", source, roots, "/p/a.jpg", "y", "remove")


GRANDMA = """
# Grandma Else: every photo of the garden party 2025 gets her name
[[override]]
path = "2025/garden/**"
add = ["Else"]
"""


def page_rule(path: str, *keys: str) -> str:
    """A rule as the review page writes it, its own comment above it."""
    return f'\n# a correction made on the review page\n[[override]]\npath = "{path}"\n' + "".join(
        f"{key}\n" for key in keys)


def same_rules_both_ways(text: str) -> list[dict]:
    """The rules as tomllib (the daemon) reads ``text``, asserted the same as tomlkit's (the page)."""
    import tomllib

    import tomlkit

    assert tomlkit.parse(text).unwrap() == tomllib.loads(text)
    return tomllib.loads(text)["override"]


def test_a_key_the_page_adds_goes_under_its_rules_last_key_not_under_the_next_rules_comment() -> None:
    """xW #4: tomlkit keeps the lines above a header at the end of the rule before it, so `add` went
    below the next rule's blank line and comment, which then sat above the wrong line."""
    from tagwatch.overrides import correct

    source, roots = Path("overrides.toml"), [Path("/photos")]
    purple, star = "/photos/2025/purple-vertical_bar.jpg", "/photos/2025/red-star.jpg"
    text = correct(HAND_WRITTEN, source, roots, purple, "purple", "remove") + GRANDMA
    text = correct(text, source, roots, star, "red", "remove")
    text = correct(text, source, roots, purple, "Lila", "add")
    assert text == (HAND_WRITTEN + page_rule(purple, 'remove = ["purple"]', 'add = ["Lila"]') + GRANDMA
                    + page_rule(star, 'remove = ["red"]'))
    # a remove added to a rule with only an add; the page's own comment stays above its own rule
    text = HAND_WRITTEN + page_rule(purple, 'add = ["Lila"]') + page_rule(star, 'add = ["Anna"]')
    text = correct(text, source, roots, purple, "purple", "remove")
    text = correct(text, source, roots, star, "red", "remove")
    assert text == HAND_WRITTEN + page_rule(purple, 'add = ["Lila"]', 'remove = ["purple"]') + page_rule(
        star, 'add = ["Anna"]', 'remove = ["red"]')
    assert same_rules_both_ways(text)[1:] == [{"path": purple, "add": ["Lila"], "remove": ["purple"]},
                                              {"path": star, "add": ["Anna"], "remove": ["red"]}]


def test_a_rule_the_page_takes_out_leaves_the_next_rules_comment_above_that_rule(tmp_path: Path) -> None:
    """A rule taken out (↺ of its last correction, or its photo deleted) took with it the comment
    heading the next rule, which tomlkit keeps at its end, and left its own above the next rule."""
    from tagwatch.overrides import correct, forget

    source, roots = tmp_path / "overrides.toml", [Path("/photos")]
    purple, star = "/photos/2025/purple-vertical_bar.jpg", "/photos/2025/red-star.jpg"
    kept = HAND_WRITTEN + GRANDMA + page_rule(star, 'add = ["red"]')
    text = kept.replace(GRANDMA, page_rule(purple, 'remove = ["purple"]') + GRANDMA)
    assert correct(text, source, roots, purple, "purple", "undo") == kept
    assert forget(text, source, roots, purple)[0] == kept
    assert correct(kept, source, roots, star, "red", "undo") == HAND_WRITTEN + GRANDMA
    # the first rule in a file the page began
    text = page_rule(purple, 'remove = ["purple"]').lstrip("\n") + GRANDMA
    assert correct(text, source, roots, purple, "purple", "undo") == GRANDMA.lstrip("\n")
    assert same_rules_both_ways(GRANDMA) == [{"path": "2025/garden/**", "add": ["Else"]}]


# -- rules that follow a renamed photo ----------------------------------------------------------------

def test_a_rule_naming_one_photo_follows_its_rename_and_globs_stay_as_written(tmp_path: Path) -> None:
    from tagwatch.overrides import correct, follow_move

    root = tmp_path / "photos"
    (root / "trip2").mkdir(parents=True)
    source, roots = tmp_path / "overrides.toml", [root]
    text = HAND_WRITTEN + '\n[[override]]\npath = "holidays/a.jpg"  # relative\nadd = ["Anna"]\n'
    text = correct(text, source, roots, f"{root}/holidays/odd [1].jpg", "red", "remove")
    text = correct(text, source, roots, f"{root}/trip/b.jpg", "blue", "remove")
    text += f'\n[[override]]\npath = "{root}/trip/sub"\nadd = ["sub"]\n'  # a folder: it stays
    (root / "trip2" / "sub").mkdir()

    renamed, moved = follow_move(text, source, roots, f"{root}/holidays/odd [1].jpg",
                                 f"{root}/holidays/odd [2].jpg")
    assert moved == [(f"{root}/holidays/odd [[]1].jpg", f"{root}/holidays/odd [[]2].jpg")]
    assert renamed == text.replace("odd [[]1].jpg", "odd [[]2].jpg")  # that path only, comments kept
    rules = parse_overrides(renamed, source, roots)
    assert rules.for_path(f"{root}/holidays/odd [2].jpg") == Override(("holiday",), ("red",))

    renamed, moved = follow_move(renamed, source, roots, f"{root}/holidays/a.jpg", f"{root}/holidays/c.jpg")
    assert moved == [("holidays/a.jpg", "holidays/c.jpg")]  # relative it was, relative it stays
    assert 'path = "holidays/c.jpg"  # relative' in renamed

    renamed, moved = follow_move(renamed, source, roots, f"{root}/trip", f"{root}/trip2", is_dir=True)
    assert moved == [(f"{root}/trip/b.jpg", f"{root}/trip2/b.jpg")]  # not the rule for its folder
    assert f'path = "{root}/trip/sub"' in renamed
    assert follow_move(renamed, source, roots, f"{root}/holidays", f"{root}/trips", is_dir=True)[1] == [
        ("holidays/c.jpg", "trips/c.jpg"),
        (f"{root}/holidays/odd [[]2].jpg", f"{root}/trips/odd [[]2].jpg")]  # "holidays/**" stays


def test_a_relative_rule_naming_a_photo_in_two_watched_folders_stays(tmp_path: Path) -> None:
    """"twin.jpg" relative to two watched folders that each hold one names two photos: renaming one
    of them moved the rule away from the other, whose correction was then undone."""
    from tagwatch.overrides import follow_move

    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        root.mkdir()
    (roots[0] / "twin.jpg").write_bytes(b"")
    (roots[1] / "twin-b.jpg").write_bytes(b"")  # renamed from twin.jpg
    source = tmp_path / "overrides.toml"
    text = '[[override]]\npath = "twin.jpg"\nremove = ["white"]\n'
    assert follow_move(text, source, roots, f"{roots[1]}/twin.jpg", f"{roots[1]}/twin-b.jpg") == (text, [])
    (roots[0] / "twin.jpg").unlink()  # the other one gone: the rule names one photo, and follows it
    assert follow_move(text, source, roots, f"{roots[1]}/twin.jpg", f"{roots[1]}/twin-b.jpg")[1] == [
        ("twin.jpg", "twin-b.jpg")]


def test_a_rule_naming_one_photo_goes_with_it_and_globs_and_twins_stay(tmp_path: Path) -> None:
    """What the pipeline calls when another picture arrives where a corrected photo was deleted: the
    rules naming exactly that photo are taken out, comments and every other rule kept."""
    from tagwatch.overrides import correct, forget

    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        root.mkdir()
    source = tmp_path / "overrides.toml"
    photo = f"{roots[0]}/DSC_0100.jpg"
    text = correct(HAND_WRITTEN, source, roots, photo, "Mayor Smith", "add")
    text = correct(text, source, roots, photo, "blue", "remove")
    text += '\n[[override]]\npath = "twin.jpg"  # relative: in each watched folder\nremove = ["white"]\n'
    kept, gone = forget(text, source, roots, photo)
    assert [(r.pattern, r.add, r.remove) for r in gone] == [(photo, ("Mayor Smith",), ("blue",))]
    assert kept.startswith(HAND_WRITTEN) and "DSC_0100" not in kept and 'path = "twin.jpg"' in kept
    assert forget(kept, source, roots, f"{roots[0]}/other.jpg") == (kept, [])  # "holidays/**" stays
    (roots[1] / "twin.jpg").write_bytes(b"")  # the relative rule also names this photo: it stays
    assert forget(kept, source, roots, f"{roots[0]}/twin.jpg") == (kept, [])
    (roots[1] / "twin.jpg").unlink()
    assert [r.pattern for r in forget(kept, source, roots, f"{roots[0]}/twin.jpg")[1]] == ["twin.jpg"]


def test_the_daemon_moves_a_correction_along_with_its_renamed_photo(tmp_path: Path, tiny_checkpoint: Path,
                                                                   daemon_factory) -> None:
    """A photo corrected on the review page (a rule keyed by its path) is renamed, then its folder:
    the rule follows it each time, and a re-scoring keeps the rejected keyword out."""
    from tagwatch.overrides import correct

    root = tmp_path / "photos"
    (root / "shapes").mkdir(parents=True)
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=10)
    config.write_text('overrides = "o.toml"\n' + config.read_text())
    overrides_file = config.parent / "o.toml"
    photo = root / "shapes" / "renamed.jpg"
    text = correct("# mine\n", overrides_file, [root], str(photo), "beach", "remove")
    overrides_file.write_text(text, encoding="utf-8")
    daemon: Daemon = daemon_factory(config).start()
    noise_jpeg(photo, seed=7)
    wait_for(lambda: keywords_in(photo) == {"forest", "mountain", "city street", "Ünïcödé tag", "日本語"})

    again = root / "shapes" / "renamed-again.jpg"
    mark = len(daemon.log())
    photo.rename(again)
    daemon.wait_log(f"moved {photo} -> {again}", since=mark)
    wait_for(lambda: f'path = "{again}"' in overrides_file.read_text(encoding="utf-8"))
    assert overrides_file.read_text(encoding="utf-8").startswith("# mine\n")
    (root / "shapes").rename(root / "shapes2")
    moved = root / "shapes2" / "renamed-again.jpg"
    wait_for(lambda: f'path = "{moved}"' in overrides_file.read_text(encoding="utf-8"))

    mark = len(daemon.log())
    (config.parent / "tags.txt").write_text("beach\nforest\nharbour\n", encoding="utf-8")  # re-scores it
    daemon.wait_log(": 3 tags (", since=mark)
    wait_for(lambda: "harbour" in keywords_in(moved))
    assert "beach" not in keywords_in(moved)
    assert daemon.stop() == 0


def test_a_correction_follows_its_photo_moved_to_another_watched_folder(tmp_path: Path, tiny_checkpoint: Path,
                                                                       daemon_factory) -> None:
    """Each watched folder has its own watch, so `mv` from one to the other arrives as two halves,
    which the watcher pairs (the move is applied, see the test below): the rule naming the photo's
    old path follows it, so the keyword it takes out is not written back; a copy (the original still
    there) leaves the rule where it is.  Renamed while no daemon runs, the photo is a deletion and a
    new file, and the rule naming its old path (no file there now) follows it before it is judged."""
    from tagwatch.overrides import correct

    home, away = tmp_path / "home", tmp_path / "away"
    home.mkdir()
    away.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[home, away], top_k=10)
    config.write_text('overrides = "o.toml"\n' + config.read_text())
    overrides_file = config.parent / "o.toml"
    photo, copied = home / "p.jpg", home / "c.jpg"
    text = correct("# mine\n", overrides_file, [home, away], str(photo), "beach", "remove")
    overrides_file.write_text(correct(text, overrides_file, [home, away], str(copied), "beach", "remove"),
                              encoding="utf-8")
    daemon: Daemon = daemon_factory(config).start()
    noise_jpeg(photo, seed=7)
    noise_jpeg(copied, seed=8)
    tagged = {"forest", "mountain", "city street", "Ünïcödé tag", "日本語"}
    wait_for(lambda: keywords_in(photo) == tagged and keywords_in(copied) == tagged)

    mark = len(daemon.log())
    shutil.move(photo, away / "p.jpg")  # a rename: the two watches see its halves
    shutil.copyfile(copied, away / "c.jpg")
    daemon.wait_log(f"tagged {away / 'c.jpg'}", since=mark)
    wait_for(lambda: f'path = "{away / "p.jpg"}"' in overrides_file.read_text(encoding="utf-8"))
    daemon.wait_log(f"the rule for {photo} now names {away / 'p.jpg'}", since=mark)
    assert keywords_in(away / "p.jpg") == tagged  # beach stays out
    assert "beach" in keywords_in(away / "c.jpg")  # the copy has no correction of its own
    text = overrides_file.read_text(encoding="utf-8")
    assert text.startswith("# mine\n") and f'path = "{copied}"' in text
    # Renamed while no daemon runs: the start-up scan sees the same two halves, and the rule follows
    assert daemon.stop() == 0
    (away / "p.jpg").rename(away / "q.jpg")
    daemon.start()
    wait_for(lambda: f'path = "{away / "q.jpg"}"' in overrides_file.read_text(encoding="utf-8"))
    assert keywords_in(away / "q.jpg") == tagged
    assert daemon.stop() == 0


def test_a_correction_and_sidecar_follow_a_photo_renamed_while_no_daemon_runs(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """Renamed while no daemon runs (or by a rename still waiting as it stopped: Worker._last_try),
    the next start's scan sees the old name gone and a new photo: the correction naming the old
    name follows it, as a live rename's does (Pipeline._follow_moved), the vector kept by its
    content tags it (not encoded again), the old record is marked deleted, and the person's own
    keywords stay.  A sidecar a photo app renamed with it is taken up, its keywords tagwatch's
    again; one left at the old name by a rename of the photo alone follows it too, as a live
    rename's does: the scan finds the photo's picture at the new name (watcher.renamed_pictures)
    and carries the sidecar there before the new name is tagged (it stayed behind, the person's
    keywords in it, and the new name got a sidecar of its own)."""
    import contextlib
    import sqlite3

    from tagwatch.overrides import correct

    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root], top_k=10,
                          extra='[write]\ntarget = "both"\n')
    config.write_text('overrides = "o.toml"\n' + config.read_text())
    overrides_file = config.parent / "o.toml"
    app, alone = root / "app.jpg", root / "alone.jpg"
    text = "# mine\n"
    for photo in (app, alone):
        person_tags(noise_jpeg(photo, seed=3 if photo == app else 4), "Oma")
        text = correct(correct(text, overrides_file, [root], str(photo), "beach", "remove"),
                       overrides_file, [root], str(photo), "Anna", "add")
    overrides_file.write_text(text, encoding="utf-8")
    daemon: Daemon = daemon_factory(config).start()
    corrected = {"forest", "mountain", "city street", "Ünïcödé tag", "日本語", "Anna", "Oma"}
    wait_for(lambda: all(keywords_in(p) == corrected and xmp_of(p).is_file() for p in (app, alone)))
    assert daemon.stop() == 0
    encoded = status(config)["encoded"]

    app2, alone2 = root / "app2.jpg", root / "alone2.jpg"
    app.rename(app2)
    xmp_of(app).rename(xmp_of(app2))  # a photo app renames both
    alone.rename(alone2)  # a file manager the photo alone
    daemon.start()
    wait_for(lambda: status(config)["deleted"] == 2 and status(config)["tagged"] == 2)
    wait_for(lambda: all(f'path = "{p}"' in overrides_file.read_text(encoding="utf-8")
                         for p in (app2, alone2)))
    text = overrides_file.read_text(encoding="utf-8")
    assert text.startswith("# mine\n") and str(app) not in text and str(alone) not in text
    for photo in (app2, alone2):
        assert keywords_in(photo) == corrected
        assert set(exif_keywords(xmp_of(photo))["xmp"]) == corrected
    assert not xmp_of(alone).exists() and not xmp_of(app).exists()  # carried, not left behind
    assert status(config)["encoded"] == encoded  # tagged from the vector its content keeps
    # the correction's keyword stays recorded the person's, as after a live rename: a deletion then
    # takes it out of the sidecar with tagwatch's, and the person's own stay
    mark = len(daemon.log())
    app2.unlink()
    daemon.wait_log(f"{app2}: deleted", since=mark)
    assert exif_keywords(xmp_of(app2))["xmp"] == ["Oma"]
    assert daemon.stop() == 0
    with contextlib.closing(sqlite3.connect(f"file:{config.parent / 'state' / 'tagwatch.db'}?mode=ro",
                                            uri=True)) as db:
        rows = dict(db.execute("SELECT path, state FROM files"))
        ledger = {(keyword, action) for keyword, action in db.execute(
            "SELECT keyword, action FROM ledger JOIN files ON files.id = file_id WHERE path = ?",
            (str(alone2),))}
    assert rows[str(app)] == rows[str(alone)] == "deleted"
    assert {("Anna", USER), ("forest", "added")} <= ledger and not any(k == "Oma" for k, _ in ledger)


def two_roots_with_corrections(tmp_path: Path, checkpoint: Path, inbox: Path, archive: Path
                               ) -> tuple[Path, Path]:
    """A config watching ``inbox`` and ``archive``, keywords into sidecars, corrections in ``o.toml``
    beside it: (the config, the corrections file)."""
    config = write_config(tmp_path / "conf", checkpoint, watch=[inbox, archive],
                          extra='[write]\ntarget = "sidecar"\n')
    config.write_text('overrides = "o.toml"\n' + config.read_text())
    return config, config.parent / "o.toml"


def tagged_then_oma(daemon_factory, config: Path, photos: list[Path], everything: list[Path]
                    ) -> tuple[Daemon, list[set[str]], int]:
    """Start the daemon, wait till each of ``everything`` is tagged into its sidecar, then save the
    person's ``Oma`` into the sidecars of ``photos`` and wait till the daemon has checked them
    (nothing to write): the daemon, tagwatch's keywords in each of ``photos`` before ``Oma``, and
    the photos encoded so far."""
    daemon: Daemon = daemon_factory(config).start()
    wait_for(lambda: all(xmp_of(p).is_file() for p in everything)
             and status(config)["tagged"] == len(everything))
    ours = [set(exif_keywords(xmp_of(p))["xmp"]) for p in photos]
    for photo in photos:
        add_to_sidecar(xmp_of(photo), "Oma")  # the person's keyword, in the sidecar only
    wait_for(lambda: (lambda s: s["daemon"]["unchanged_since_start"] >= len(photos)
                      and s["daemon"]["queue"] == 0)(status(config)))
    return daemon, ours, status(config)["encoded"]


def add_to_sidecar(side: Path, keyword: str) -> None:
    """A person's keyword saved into a sidecar (a photo app's keyword panel), nothing else touched."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-XMP-dc:Subject+={keyword}", str(side)],
                   check=True)


def test_a_folder_moved_to_the_trash_is_one_line_naming_it_and_its_photos_records(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """``mv ~/Archive/2019 ~/.local/share/Trash/files/`` while the daemon runs (two folders watched,
    so it waits 5 s for an arrival elsewhere): one line naming the folder and counting its photos'
    records, subfolders included (``deleted … (a folder: its 10 photos' records)``); it said nothing
    at all.  ``rm -r ~/Inbox/junk`` reports each photo deleted, and says each, as a photo deleted
    alone; every record is recorded deleted as before."""
    inbox, archive, trash = tmp_path / "Inbox", tmp_path / "Archive", tmp_path / "Trash"
    year, junk = archive / "2019", inbox / "junk"
    moved = [year / f"y{i}.jpg" for i in range(6)] + [year / "summer" / f"s{i}.jpg" for i in range(4)]
    removed = [junk / f"j{i}.jpg" for i in range(5)] + [junk / "sub" / f"k{i}.jpg" for i in range(3)]
    alone = inbox / "alone.jpg"
    for seed, photo in enumerate([*moved, *removed, alone], start=100):
        noise_jpeg(photo, seed=seed)
    trash.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[inbox, archive])
    daemon = daemon_factory(config).start()
    wait_for(lambda: status(config)["tagged"] == 19)
    mark = len(daemon.log())
    os.rename(year, trash / year.name)  # moved out of every watched folder: nothing arrives
    subprocess.run(["rm", "-r", str(junk)], check=True)
    alone.unlink()
    daemon.wait_log(f"deleted {year} (a folder: its 10 photos' records)", since=mark)
    wait_for(lambda: status(config)["deleted"] == 19)
    assert daemon.stop() == 0
    log = daemon.log()[mark:]
    said = [line.split(" INFO ", 1)[-1] for line in log.splitlines() if "deleted" in line]
    assert sorted(said) == sorted([f"deleted {year} (a folder: its 10 photos' records)",
                                   *(f"{photo}: deleted" for photo in [*removed, alone])]), log
    assert " WARNING " not in log and " ERROR " not in log, log
    assert status(config)["tagged"] == 0


def test_a_sidecar_with_a_persons_keyword_follows_a_photo_renamed_while_no_daemon_runs(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """``mv IMG_1.jpg beach.jpg`` with no daemon running: the next start's scan finds IMG_1.jpg's
    picture at beach.jpg (its content key, read only as its size is a gone photo's) and carries
    IMG_1.jpg.xmp to beach.jpg.xmp before beach.jpg is tagged, as a live rename does
    (writeback.move_sidecar).  The person's `Oma`, saved into the sidecar only, stays with the photo;
    tagwatch's keywords are written there again and recorded tagwatch's, so a deletion later takes
    them out and leaves `Oma`.  Before, IMG_1.jpg.xmp stayed beside no photo, holding `Oma`, and
    beach.jpg got a sidecar of its own without it."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root],
                          extra='[write]\ntarget = "sidecar"\n')
    old, new = root / "IMG_1.jpg", root / "beach.jpg"
    noise_jpeg(old, seed=7)
    old_side, new_side = root / "IMG_1.jpg.xmp", root / "beach.jpg.xmp"
    daemon: Daemon = daemon_factory(config).start()
    wait_for(lambda: old_side.is_file() and status(config)["tagged"] == 1)
    assert daemon.stop() == 0
    ours = set(exif_keywords(old_side)["xmp"])
    assert len(ours) == 3 and "Oma" not in ours
    encoded = status(config)["encoded"]
    add_to_sidecar(old_side, "Oma")

    old.rename(new)
    mark = len(daemon.log())
    daemon.start()
    wait_for(lambda: status(config)["deleted"] == 1 and status(config)["tagged"] == 1)
    daemon.wait_log(f"{old}: deleted", since=mark)
    assert not old_side.exists(), "carried, not left beside no photo"
    assert set(exif_keywords(new_side)["xmp"]) == ours | {"Oma"}
    assert f"moved sidecar {old_side} -> {new_side}" in daemon.log()[mark:]
    assert exif_keywords(new)["xmp"] == []  # target sidecar: nothing written into the JPEG
    assert status(config)["encoded"] == encoded  # tagged from the vector its content keeps
    mark = len(daemon.log())
    new.unlink()
    daemon.wait_log(f"{new}: deleted", since=mark)
    assert exif_keywords(new_side)["xmp"] == ["Oma"]  # tagwatch's again, the person's the person's
    assert daemon.stop() == 0


def test_a_sidecar_stays_where_a_rename_while_no_daemon_runs_is_not_known_to_be_its_photos(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """Where the scan cannot tell that a sidecar goes with a renamed photo it is left as it was (the
    old name's sidecar keeps the person's keywords, tagwatch's taken out of one no photo uses, and
    each new name gets a sidecar of its own), and the log says why: IMG_1.xmp (``[write] sidecar =
    "photo.xmp"``) is still IMG_1.png's too after IMG_1.jpg became beach.jpg, and X.jpg's picture is
    found at two new names, a.jpg and b.jpg (renamed, then copied), so which it became is not known."""
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "conf", tiny_checkpoint, watch=[root],
                          extra='[write]\ntarget = "sidecar"\nsidecar = "photo.xmp"\n')
    from test_shared_sidecar import noise_png

    jpg, x = noise_jpeg(root / "IMG_1.jpg", seed=1), noise_jpeg(root / "X.jpg", seed=5)
    noise_png(root / "IMG_1.png", seed=2)  # a picture tagged through the sidecar alone, as a RAW is
    shared_side, x_side = root / "IMG_1.xmp", root / "X.xmp"
    daemon: Daemon = daemon_factory(config).start()
    wait_for(lambda: shared_side.is_file() and x_side.is_file() and status(config)["tagged"] == 3)
    assert daemon.stop() == 0
    for side in (shared_side, x_side):
        add_to_sidecar(side, "Oma")
    beside_png = set(exif_keywords(shared_side)["xmp"])

    beach, a, b = root / "beach.jpg", root / "a.jpg", root / "b.jpg"
    jpg.rename(beach)
    x.rename(a)
    shutil.copy2(a, b)
    mark = len(daemon.log())
    daemon.start()
    wait_for(lambda: status(config)["deleted"] == 2 and status(config)["tagged"] == 4)
    wait_for(lambda: all((root / f"{stem}.xmp").is_file() for stem in ("beach", "a", "b")))
    log = daemon.log()[mark:]
    assert (f"{jpg}: renamed to {beach} while no daemon watched; its sidecar stays: "
            "IMG_1.png still shares it") in log
    assert f"{x}: gone, and its picture is at {a}, {b}: which one it was renamed to is not known" in log
    assert "moved sidecar" not in log
    assert "Oma" in exif_keywords(shared_side)["xmp"]  # the PNG's sidecar as it was, the person's kept
    assert {"Oma"} <= set(exif_keywords(shared_side)["xmp"]) <= beside_png
    assert exif_keywords(x_side)["xmp"] == ["Oma"]  # today's: tagwatch's taken out, the person's kept
    for side in (root / "beach.xmp", root / "a.xmp", root / "b.xmp"):
        assert "Oma" not in exif_keywords(side)["xmp"] and len(exif_keywords(side)["xmp"]) == 3
    assert daemon.stop() == 0


def test_adding_a_keyword_of_ours_in_another_case_makes_it_the_persons(env: Env, tmp_path: Path) -> None:
    """A desk editor adds "Beach" on the review page to a photo tagwatch gave "beach": the page said
    it was theirs from then on, but the ledger was looked up case-sensitively, so "beach" stayed
    tagwatch's and ``untag`` took it out.  The add adopts the keyword as the file spells it."""
    root = tmp_path / "lib"
    photo = noise_jpeg(root / "p.jpg", seed=4)
    env.use(["beach", "forest", "mountain"])
    assert env.run(photo) == {"p.jpg": Status.TAGGED}
    ours = keywords_in(photo)
    adopted = sorted(ours)[0]
    env.pipeline.use_overrides(parse_overrides(
        f'[[override]]\npath = "{photo}"\nadd = ["{adopted.upper()}"]\n', tmp_path / "o.toml", [root]))
    env.pipeline.retag()
    assert keywords_in(photo) == ours  # one spelling: the file's
    row = env.store.file(str(photo))
    assert env.store.ledger(row.id, USER) == [adopted]
    assert adopted not in env.store.ledger(row.id)
    assert env.pipeline.untag(str(photo)).status == "untagged"
    assert keywords_in(photo) == {adopted}


def test_photos_moved_live_to_another_watched_folder_are_moves_sidecar_correction_and_all(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """``watch = [Inbox, Archive]`` and, while the daemon runs, ``mv Inbox/IMG_1.jpg Archive/2026/``
    (a shell: the sidecar stays behind) and ``mv Inbox/IMG_2.jpg Inbox/IMG_2.jpg.xmp Archive/2026/``
    (a photo app: the sidecar goes too).  Each watched folder has its own inotify watch, and
    watchdog pairs a rename's two halves only within one: a move arrives as the photo leaving Inbox
    for nowhere and a file arriving in Archive from nowhere.  The watcher pairs them (watcher._Handler:
    the arrival remembered by name and held back a moment for the other half, a sidecar's arrival
    not cutting that short; the store's side checks the size and time recorded), so each is the move
    it is, as within one folder: one ``moved`` line, the record, ledger and correction follow the
    photo, its sidecar holding the person's ``Oma`` is with it, and nothing is encoded again.
    Before, the old record was logged deleted and the new name tagged as a new photo: IMG_1's
    sidecar stayed in Inbox beside no photo (``Oma`` in it, tagwatch's taken out) and Archive got a
    sidecar of its own without ``Oma``; IMG_2 was taken up as a copy of a deleted photo."""
    from tagwatch.overrides import correct

    inbox, archive = tmp_path / "Inbox", tmp_path / "Archive"
    (archive / "2026").mkdir(parents=True)
    inbox.mkdir()
    config, overrides_file = two_roots_with_corrections(tmp_path, tiny_checkpoint, inbox, archive)
    names = ("IMG_1.jpg", "IMG_2.jpg")
    old = [inbox / name for name in names]
    new = [archive / "2026" / name for name in names]
    text = "# mine\n"
    for seed, photo in enumerate(old, start=7):
        noise_jpeg(photo, seed=seed)
        text = correct(text, overrides_file, [inbox, archive], str(photo), "Anna", "add")
    overrides_file.write_text(text, encoding="utf-8")
    daemon, ours, encoded = tagged_then_oma(daemon_factory, config, old, old)
    assert all(len(keywords) == 4 and "Anna" in keywords for keywords in ours)

    mark = len(daemon.log())
    shutil.move(old[0], new[0])  # renames: the two roots' watches each see one half
    shutil.move(old[1], new[1])
    shutil.move(xmp_of(old[1]), xmp_of(new[1]))
    for before, after in zip(old, new, strict=True):
        daemon.wait_log(f"moved {before} -> {after}", since=mark)
        wait_for(lambda after=after: f'path = "{after}"' in overrides_file.read_text(encoding="utf-8"))
    log = daemon.wait_log(f"moved sidecar {xmp_of(old[0])} -> {xmp_of(new[0])}", since=mark)[mark:]
    assert xmp_of(new[0]).is_file() and not xmp_of(old[0]).exists()
    assert "deleted" not in log and "tagged" not in log and "copy" not in log.lower(), log
    for keywords, photo in zip(ours, new, strict=True):
        assert set(exif_keywords(xmp_of(photo))["xmp"]) == keywords | {"Oma"}
        assert exif_keywords(photo)["xmp"] == []  # target sidecar: nothing written into the JPEG
    counts = status(config)
    assert (counts["tagged"], counts["deleted"], counts["encoded"]) == (2, 0, encoded)
    exported = tagwatch("export", "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    assert sorted(json.loads(exported.stdout)) == sorted(map(str, new))
    assert not any(f'path = "{photo}"' in overrides_file.read_text(encoding="utf-8") for photo in old)
    # the ledger followed: a deletion now takes tagwatch's keywords (the correction's too) out of the
    # sidecar and leaves the person's own
    mark = len(daemon.log())
    new[0].unlink()
    daemon.wait_log(f"{new[0]}: deleted", since=mark)
    assert exif_keywords(xmp_of(new[0]))["xmp"] == ["Oma"]
    assert daemon.stop() == 0


def test_a_folder_moved_live_to_another_watched_folder_is_a_move_of_each_photo_in_it(
        tmp_path: Path, tiny_checkpoint: Path, daemon_factory) -> None:
    """``watch = [Inbox, Archive]`` and, while the daemon runs, ``mv Inbox/2026-12-wedding Archive/``:
    the watches of the two roots each see one half, the folder leaving Inbox for nowhere and a folder
    arriving in Archive from nowhere.  Each photo in it was logged deleted and taken up as a copy of
    itself at its new path (its keywords re-adopted, its correction left naming the old path).  Now
    the watcher pairs the folder's halves and the store moves the records under it (its sizes and
    times checked): one ``moved`` line for the folder, no photo tagged or deleted, nothing encoded,
    the correction renamed, and the ledger with the records, so an untag later takes out tagwatch's
    keywords and leaves the person's (``Oma`` in each sidecar, the correction's ``Anna``).  A folder deleted
    outright, and one moved out of every watched folder (the trash), are still deletions: the first
    said photo by photo, the second in one line naming the folder."""
    from tagwatch.overrides import correct

    inbox, archive, trash = tmp_path / "Inbox", tmp_path / "Archive", tmp_path / "Trash"
    wedding, trip, outtakes = inbox / "2026-12-wedding", inbox / "2026-11-trip", inbox / "outtakes"
    for folder in (wedding / "ceremony", trip, outtakes, archive, trash):
        folder.mkdir(parents=True)
    config, overrides_file = two_roots_with_corrections(tmp_path, tiny_checkpoint, inbox, archive)
    old = [wedding / "IMG_1.jpg", wedding / "IMG_2.jpg", wedding / "ceremony" / "IMG_3.jpg"]
    others = [trip / "IMG_9.jpg", outtakes / "IMG_5.jpg"]
    moved = archive / wedding.name
    new = [moved / photo.relative_to(wedding) for photo in old]
    for seed, photo in enumerate(old + others, start=7):
        noise_jpeg(photo, seed=seed)
    text = correct("# mine\n", overrides_file, [inbox, archive], str(old[0]), "Anna", "add")
    overrides_file.write_text(text, encoding="utf-8")
    daemon, ours, encoded = tagged_then_oma(daemon_factory, config, old, old + others)
    assert "Anna" in ours[0] and all(len(keywords) == 3 for keywords in ours[1:])

    mark = len(daemon.log())
    os.rename(wedding, moved)
    daemon.wait_log(f"moved {wedding} -> {moved}", since=mark)
    moved_at = time.time()  # its photos are queued by then (held for the move): wait till handed out
    wait_for(lambda: (lambda s: s["queue"] == 0 and s["started"] + s["uptime_s"] > moved_at + 0.1)(
        status(config)["daemon"]))
    wait_for(lambda: f'path = "{new[0]}"' in overrides_file.read_text(encoding="utf-8"))
    for keywords, photo in zip(ours, new, strict=True):
        assert set(exif_keywords(xmp_of(photo))["xmp"]) == keywords | {"Oma"}
    counts = status(config)
    assert (counts["tagged"], counts["deleted"], counts["encoded"]) == (5, 0, encoded)
    assert f'path = "{old[0]}"' not in overrides_file.read_text(encoding="utf-8")

    shutil.rmtree(trip)  # deleted outright
    os.rename(outtakes, trash / outtakes.name)  # moved out of every watched folder: nothing arrives
    # rm -r: its photo's own line, then the folder's deletion with nothing left to count; the folder
    # moved out (no deletion of its photo reported): one line naming it
    gone = [f"{others[0]}: deleted", f"deleted {outtakes} (a folder: its 1 photo's records)"]
    for line in gone:
        daemon.wait_log(line, since=mark)
    wait_for(lambda: status(config)["deleted"] == 2)
    assert status(config)["tagged"] == 3
    assert daemon.stop() == 0  # what was handed out is done: its lines are in the log
    log = daemon.log()[mark:]
    assert "tagged" not in log and "checked" not in log and "copy" not in log.lower(), log
    said = [line.split(" INFO ", 1)[-1].split(";")[0] for line in log.splitlines() if "deleted" in line]
    assert said == gone, log
    exported = tagwatch("export", "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    assert sorted(json.loads(exported.stdout)) == sorted(map(str, new))
    untagged = tagwatch("untag", "--config", str(config), str(moved))
    assert untagged.returncode == 0, untagged.stderr
    # tagwatch's keywords, counted as tagwatch's after the move, taken out; the person's Oma, and
    # Anna their correction added (docs/overrides.md: a person's keyword), kept
    assert [sorted(exif_keywords(xmp_of(photo))["xmp"]) for photo in new] == [
        ["Anna", "Oma"], ["Oma"], ["Oma"]]
