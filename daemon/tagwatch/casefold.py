"""Keywords are compared without regard to case or Unicode normalisation everywhere (a person's
``Red`` is our ``red``; the ``Élise`` a macOS app wrote decomposed, E + U+0301, is our composed
``Élise``): one spelling of the comparison, so no place compares by case or by bytes by mistake."""

import difflib
import unicodedata
from collections.abc import Iterable


def fold(keyword: str) -> str:
    """``keyword`` as compared: composed (NFC), then case-folded.  For a keyword already composed, as
    tag lists and most apps write them, that is ``keyword.casefold()``, which older code still spells."""
    return unicodedata.normalize("NFC", keyword).casefold()


def folded(keywords: Iterable[str]) -> set[str]:
    """The folded set of ``keywords``, to test membership (with :func:`fold`) or to intersect."""
    return {fold(k) for k in keywords}


def resembling(name: str, keywords: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``keywords`` that ``name`` may have meant, for a "did you mean" hint, compared
    folded: first those that begin with it (``orange`` for the list's ``orange, "tangerine"``, which
    difflib's ratio alone ranked below ``triangle``), then difflib's close matches."""
    spelled: dict[str, str] = {}
    for keyword in keywords:
        spelled.setdefault(fold(keyword), keyword)  # the first spelling of a folded keyword wins
    typed = fold(name).strip()
    starting = [k for k in spelled if typed and k.startswith(typed)]
    close = difflib.get_close_matches(typed, list(spelled), n=n)
    return [spelled[k] for k in dict.fromkeys([*starting, *close])][:n]
