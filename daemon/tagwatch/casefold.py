"""Keywords are compared without regard to case everywhere (a person's ``Red`` is our ``red``):
one spelling of the comparison, so no place compares by case by mistake."""

from collections.abc import Iterable


def folded(keywords: Iterable[str]) -> set[str]:
    """The case-folded set of ``keywords``, to test membership or intersect whatever the spelling."""
    return {k.casefold() for k in keywords}
