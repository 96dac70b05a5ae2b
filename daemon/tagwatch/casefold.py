"""Keywords are compared without regard to case or Unicode normalisation everywhere (a person's
``Red`` is our ``red``; the ``Élise`` a macOS app wrote decomposed, E + U+0301, is our composed
``Élise``): one spelling of the comparison, so no place compares by case or by bytes by mistake."""

import unicodedata
from collections.abc import Iterable


def fold(keyword: str) -> str:
    """``keyword`` as compared: composed (NFC), then case-folded.  For a keyword already composed, as
    tag lists and most apps write them, that is ``keyword.casefold()``, which older code still spells."""
    return unicodedata.normalize("NFC", keyword).casefold()


def folded(keywords: Iterable[str]) -> set[str]:
    """The folded set of ``keywords``, to test membership (with :func:`fold`) or to intersect."""
    return {fold(k) for k in keywords}

