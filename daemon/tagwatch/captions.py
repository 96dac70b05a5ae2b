"""The caption stage: captions cached by content key, the misses generated in the model's child, and
each photo's open-vocabulary keywords (:mod:`tagwatch.caption_keywords`) from its caption.

Captions are derived from pixels, so they are cached exactly like image vectors: by (content key,
captioner identity).  A rename, a metadata edit or a tag-list edit never captions a photo again; new
pixels do.  The captioner identity is the model's identity plus the decoding settings, because both
change what a caption says.

A CoCa model can be the tagging model and the captioner at once (``[captions]`` without a name): the
child then encodes and captions each photo in one pass of the image tower.  A captioner of its own
runs in a second child process, with its own preprocessing.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import caption_keywords as words
from .config import CaptionsConfig, Config, ModelConfig, captioner_config
from .metadata import DESCRIPTION_FIELDS, FileState, Filled
from .model import LazyModel, ModelError
from .store import Store
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

DECODING = "greedy"  # the only decoding there is (see model.caption_tokens)


def captioner_identity(model_identity: str, cfg: CaptionsConfig) -> str:
    """What the cached captions are keyed by: the model and how it decodes."""
    return f"{model_identity}#{DECODING}{cfg.max_tokens}"


def from_config(config: Config, store: Store, tagging: LazyModel) -> Captions | None:
    """The caption stage a config asks for; None while ``[captions] enabled`` is false, so nothing of
    it is built, loaded or consulted (off costs nothing).  A captioner that is no CoCa is refused
    here, at start, rather than on the first photo."""
    if not config.captions.enabled:
        return None
    own = captioner_config(config.captions, config.model)
    if not can_caption(own.name):
        where = ("[captions] name" if config.captions.name
                 else "[model] name (the captioner, as [captions] names none)")
        raise ModelError(f"captions: {where} {own.name!r} is not a CoCa model and cannot write captions; "
                         "use one such as coca_ViT-B-32 (see docs/captions.md)")
    return Captions(store, config.captions, tagging, config.model, config.tagging.templates[0])


def can_caption(name: str) -> bool:
    """Does the open_clip architecture ``name`` (a built-in name or a ``.json`` file) have a caption
    decoder?  Read from its config file, without importing open_clip (torch) in the daemon."""
    path = Path(name).expanduser() if name.endswith(".json") else None
    if path is None:
        spec = importlib.util.find_spec("open_clip")
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        path = next((Path(f) / "model_configs" / f"{name}.json" for f in folders
                     if (Path(f) / "model_configs" / f"{name}.json").is_file()), None)
        if path is None:  # unknown here: the model's own loading says what is wrong
            return True
    try:
        return "multimodal_cfg" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # unreadable: model_identity and loading report it


@dataclass(frozen=True)
class Reading:
    """A photo's caption and what became of each candidate keyword (``explain``, ``export``)."""

    caption: str
    scored: tuple[words.Scored, ...]

    @property
    def keywords(self) -> list[tuple[str, float]]:
        return words.kept(self.scored)


class Captions:
    """Captions for content keys, and keywords from them, for one tagging model and settings."""

    def __init__(self, store: Store, cfg: CaptionsConfig, tagging: LazyModel, model_cfg: ModelConfig,
                 template: str) -> None:
        self.store, self.cfg, self.template = store, cfg, template
        own = captioner_config(cfg, model_cfg)
        self.shared = own == model_cfg  # the tagging model captions too: one encode per photo
        self.model = tagging if self.shared else LazyModel(own)
        self.identity = captioner_identity(self.model.identity, cfg)
        self._taken: frozenset[str] = frozenset()

    def close(self) -> None:
        if not self.shared:
            self.model.close()

    def fingerprint(self) -> str:
        """Part of the pipeline's fingerprint: a change here re-scores every photo (no new caption)."""
        c = self.cfg
        return f"captions:{self.identity}:{c.threshold:.6f}:{c.top_k}:{c.prefix}:{int(c.write_description)}"

    def use_vocabulary(self, vocabulary: Vocabulary) -> None:
        """The list's keywords, synonyms and parents: a caption keyword duplicating one is dropped."""
        self._taken = frozenset(t for tag in vocabulary.tags
                                for t in (tag.keyword, *tag.synonyms, *tag.parents))

    def path(self, keyword: str) -> str:
        """The hierarchical spelling of an open-vocabulary keyword: ``caption|red circle``."""
        return f"{self.cfg.prefix}|{keyword}" if self.cfg.prefix else keyword

    def describe(self, reading: Reading | None, state: FileState,
                 records: Mapping[str, tuple[tuple[str, ...], str | None]]
                 ) -> tuple[dict[str, str | None], dict[str, Filled]]:
        """The description fields to fill with the caption, for the writer's ``fill``/``filled``.

        Only a photo with no description of a person's gets ours: if either field (XMP dc:description,
        IPTC Caption-Abstract) holds text that is not ours, neither is filled, and a caption of ours
        there before is taken out again.  With ``write_description`` off, a description of ours from
        earlier is taken out too; the ledger's ``filled`` records say which text is ours.
        """
        filled = {name: Filled(*records[name]) for name in DESCRIPTION_FIELDS if name in records}
        if reading is None or not reading.caption or not self.cfg.write_description:
            return {}, filled
        theirs = [name for name in DESCRIPTION_FIELDS for fields in (state.photo.fields, state.sidecar.fields)
                  if (fields.get(name) or "").strip() and fields.get(name) not in (
                      filled[name].ours if name in filled else ())]
        if theirs:
            return {}, filled
        return dict.fromkeys(DESCRIPTION_FIELDS, reading.caption), filled

    # -- the cache ---------------------------------------------------------------------------------

    def cached(self, keys: Iterable[bytes]) -> dict[bytes, str]:
        return self.store.captions(keys, self.identity)

    def store_new(self, captions: Mapping[bytes, str]) -> None:
        if captions:
            log.debug("storing %d captions", len(captions))
            self.store.put_captions(captions, self.identity)

    def generate(self, arrays: Mapping[bytes, np.ndarray]
                 ) -> tuple[dict[bytes, str], dict[bytes, np.ndarray]]:
        """Caption preprocessed photos (the captioner's preprocessing) and cache the captions; returns
        them and, for a shared model, the image vectors the same pass gave (else empty)."""
        if not arrays:
            return {}, {}
        with self.model.using() as model:
            if not model.captions:
                raise ModelError(f"captions: {self.model.identity} cannot write captions (it is not a CoCa "
                                 "model); set [captions] name and pretrained to a CoCa such as coca_ViT-B-32")
            log.debug("captioning %d photos", len(arrays))
            vectors, captions = model.encode_and_caption(np.stack(list(arrays.values())), self.cfg.max_tokens)
        found = dict(zip(arrays, captions, strict=True))
        self.store_new(found)
        return found, (dict(zip(arrays, vectors, strict=True)) if self.shared else {})

    # -- keywords ----------------------------------------------------------------------------------

    def readings(self, photos: Sequence[tuple[str, np.ndarray]],
                 text_vectors: Callable[[list[str]], Mapping[str, np.ndarray]]) -> list[Reading]:
        """Each (caption, image vector)'s candidates, scored against the photo and chosen.

        ``text_vectors``: prompt → unit text vector of the *tagging* model (cached in the store), the
        model whose image vectors the photos have, so a candidate and a list tag are scored alike.
        """
        found = [words.candidates(caption) for caption, _ in photos]
        prompts = list(dict.fromkeys(p for f in found for p in words.prompts(f, self.template)))
        vectors = text_vectors(prompts) if prompts else {}
        out = []
        for (caption, vector), candidates in zip(photos, found, strict=True):
            scores = words.score(vector, candidates, vectors, self.template)
            scored = words.choose(candidates, scores, self.cfg.threshold, self.cfg.top_k, self._taken)
            out.append(Reading(caption, tuple(scored)))
        return out
