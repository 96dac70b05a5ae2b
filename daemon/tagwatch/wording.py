"""Counts in messages: a person reads "1 photo", not "1 photos", and one spelling serves every line."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 photo``, ``3 photos``, ``0 photos``; ``plural`` where adding an ``s`` is wrong (batches)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
