"""The one rule for "is there anything to do for this photo?" holds the cached-vector clause too
(review #8): a photo recorded tagged whose vector of the model in use a `db rebuild` lost is not
settled, asked of :func:`tagwatch.freshness.is_settled` itself, with a real store and a real JPEG."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import noise_jpeg
from tagwatch.freshness import is_settled
from tagwatch.store import DONE, FAILED, Store


def test_a_tagged_photo_without_its_cached_vector_is_not_settled(tmp_path: Path) -> None:
    photo = noise_jpeg(tmp_path / "p.jpg", seed=1)
    st = os.lstat(photo)
    store = Store(tmp_path / "state" / "tw.db")
    try:
        store.record_file(str(photo), key=b"k" * 16, size=st.st_size, mtime_ns=st.st_mtime_ns, state=DONE)
        row = store.file(str(photo))
        assert row is not None and row.state == DONE
        assert is_settled(row, str(photo), st)  # callers that do not ask about vectors: as before
        assert is_settled(row, str(photo), st, vectored={b"k" * 16})
        assert not is_settled(row, str(photo), st, vectored=set())  # lost: encoded again
        assert not is_settled(row, str(photo), st, vectored={b"other" * 4})
        store.record_file(str(photo), key=None, size=st.st_size, mtime_ns=st.st_mtime_ns, state=FAILED,
                          error="cannot decode")
        failed = store.file(str(photo))
        assert failed is not None
        assert is_settled(failed, str(photo), st, vectored=set())  # a failed photo has no vector to lose
    finally:
        store.close()
