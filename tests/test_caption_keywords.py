"""A caption becomes keywords: candidate phrases, scored by CLIP, kept above a threshold, nouns first."""

from __future__ import annotations

import numpy as np

from tagwatch.caption_keywords import Candidate, candidates, choose, kept, score


def texts(caption: str, **kwargs: object) -> list[str]:
    return [c.text for c in candidates(caption, **kwargs)]  # type: ignore[arg-type]


def test_candidates_are_content_phrases_with_head_nouns_first() -> None:
    found = candidates("a red circle above a blue square")
    assert [c.text for c in found if c.noun] == ["red circle", "circle", "blue square", "square"]
    assert [c.text for c in found if not c.noun] == ["red", "blue"]


def test_stop_words_spatial_words_and_caption_verbs_are_never_keywords() -> None:
    got = texts("A photo of a man riding a wave on top of a surfboard, next to the beach.")
    assert set(got) == {"man", "wave", "surfboard", "beach"}
    assert texts("a close up of a plate of food on a table") == ["plate", "food", "table"]
    found = candidates("a green star to the left of an orange vertical bar")
    assert [c.text for c in found if c.noun] == ["green star", "star", "orange vertical bar", "vertical bar",
                                                 "bar"]
    assert {c.text for c in found if not c.noun} == {"green", "orange", "vertical"}


def test_at_most_three_words_and_no_phrase_that_is_not_a_noun() -> None:
    got = texts("a big fluffy golden retriever puppy")
    assert "golden retriever puppy" in got and "retriever puppy" in got
    assert all(len(t.split()) <= 3 for t in got)
    assert "big fluffy" not in got and "fluffy golden" not in got  # modifiers alone make no phrase
    assert "big" in got  # a lone modifier stays a candidate, ranked after the nouns
    assert texts("a " + "x" * 70 + " dog") == ["dog"]  # longer than IPTC's 64 bytes: no keyword


def test_a_noun_lexicon_decides_which_words_are_nouns() -> None:
    found = {c.text: c.noun for c in candidates("dog park bench", nouns={"dog", "bench"})}
    assert found == {"dog park bench": True, "park bench": True, "bench": True, "park": False, "dog": True}


def test_choose_keeps_above_threshold_top_k_nouns_first_without_list_tags_or_duplicates() -> None:
    found = [Candidate("dog", True), Candidate("dogs", True), Candidate("beach", True),
             Candidate("sunset", True), Candidate("wet", False), Candidate("cat", True)]
    scores = [0.41, 0.39, 0.35, 0.30, 0.45, 0.10]
    decided = {s.text: s for s in choose(found, scores, threshold=0.2, top_k=3, taken={"Beach"})}
    assert decided["dog"].kept and decided["sunset"].kept and decided["wet"].kept
    assert decided["dogs"].reason == "duplicate"  # plural of a better candidate
    assert decided["beach"].reason == "in the tag list"
    assert decided["cat"].reason == "below threshold"
    assert kept(decided.values()) == [("wet", 0.45), ("dog", 0.41), ("sunset", 0.3)]
    tight = {s.text: s for s in choose(found, scores, threshold=0.2, top_k=2, taken=())}
    assert tight["wet"].reason == "beyond top_k"  # a modifier gives way to nouns
    assert [t for t, _ in kept(tight.values())] == ["dog", "beach"]


def test_score_is_the_cosine_of_the_candidates_prompt_with_the_photo() -> None:
    image = np.array([1.0, 0.0], np.float32)
    vectors = {"a photo of a dog.": np.array([0.6, 0.8], np.float32),
               "a photo of a cat.": np.array([-1.0, 0.0], np.float32)}
    got = score(image, [Candidate("dog", True), Candidate("cat", True)], vectors, "a photo of a {}.")
    assert np.allclose(got, [0.6, -1.0])


def test_parts_of_a_list_tag_the_caption_names_are_not_keywords_on_their_own() -> None:
    """"a purple vertical bar" with "vertical bar" in the list: "bar" and "vertical" alone are
    fragments of it (the list decides that tag by its own threshold); the longer phrase is no part."""
    found = candidates("a green star to the left of a purple vertical bar")
    scores = {"green star": 0.12, "star": 0.28, "purple vertical bar": 0.3, "vertical bar": 0.31,
              "bar": 0.54, "green": 0.2, "purple": 0.2, "vertical": 0.34}
    decided = {s.text: s for s in choose(found, [scores[c.text] for c in found], threshold=0.1, top_k=5,
                                         taken={"vertical bar", "star"})}
    assert decided["bar"].reason == decided["vertical"].reason == "part of 'vertical bar', in the tag list"
    assert decided["vertical bar"].reason == decided["star"].reason == "in the tag list"
    assert {t for t, _ in kept(decided.values())} == {"purple vertical bar", "green star", "green", "purple"}
    # a caption that names only the part keeps it: "a bar" is not the list's "vertical bar"
    alone = choose(candidates("a bar"), [0.5], threshold=0.1, top_k=5, taken={"vertical bar"})
    assert kept(alone) == [("bar", 0.5)]


def test_a_lone_colour_word_is_a_modifier() -> None:
    assert [(c.text, c.noun) for c in candidates("a purple")] == [("purple", False)]
    found = {c.text: c.noun for c in candidates("a white and black dog")}
    assert found == {"black dog": True, "dog": True, "white": False, "black": False}
    assert candidates("a purple vertical bar")[0] == Candidate("purple vertical bar", True)
