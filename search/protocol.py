"""The typed interfaces between the engine, its index backends and the web layer.

``SearchIndex`` is what the engine needs of a backend: ``search.index.InvertedIndex`` (in RAM, the
reference) or ``search.milvus.MilvusIndex`` (a Milvus collection). A backend only returns
candidates; ranking them is ``search.ranking``'s, the same for both.

``Engine`` is what ``webui`` is written against: ``search.engine.SearchEngine``'s public methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from search.answer import Answer
    from search.narrowing import Narrowing
    from search.query import Query
    from search.ranking import AttributeColumns, Candidates
    from search.rows import PhotoRows


class UnknownQuery(LookupError):
    """A re-run named a query id the engine does not hold (never issued, or expired)."""


@runtime_checkable
class SearchIndex(Protocol):
    """Photos sharded by fashion category: added, deleted, and shortlisted by Hamming distance."""

    code_bytes: int
    colour_bins: int
    columns: AttributeColumns

    def __len__(self) -> int: ...

    def __contains__(self, product_id: str) -> bool: ...

    def category_sizes(self) -> dict[str, int]: ...

    def photo_count(self) -> int: ...

    def add(self, rows: PhotoRows) -> None: ...

    def delete(self, ids: Iterable[str]) -> int: ...

    def same_photo(self, key: int) -> list[tuple[str, str]]: ...

    def shortlist(self, code: np.ndarray, category: str, narrowing: Narrowing, depth: int) -> Candidates:
        """The ``depth`` rows of ``category`` nearest ``code`` that hold the narrowing's keys, in
        Hamming order (distance, then id), with the category's counts."""
        ...

    def named(self, ids: Sequence[str], code: np.ndarray, narrowing: Narrowing) -> Candidates:
        """Every photo of the named products, in any category, that holds the narrowing's keys."""
        ...


@runtime_checkable
class Engine(Protocol):
    """A catalogue searched by photo, and updated one product at a time.

    ``search`` answers an ``Answer`` (``to_json``: ``webui/openapi.json``'s ``SearchResponse``,
    without each result's ``image_url``, which the web layer adds) and raises ``ValueError`` for a
    photo or box it cannot use, ``UnknownQuery`` for a re-run of an id it no longer holds. A product
    may have several photos: a result names the one that matched (``photo``), ``thumbnail``
    answers photo n's. ``product``, ``thumbnail`` and ``delete`` answer None or False for an
    unknown id. ``refresh`` loads the index anew when a bulk run into it has finished (None when
    there is nothing new), swapping it in without failing a search; ``index_status`` says what is
    served and how a bulk run is going.
    """

    def __len__(self) -> int: ...

    def categories(self) -> list[str]: ...

    def search(self, query: Query) -> Answer: ...

    def product(self, product_id: str) -> dict | None: ...

    def thumbnail(self, product_id: str, photo: int = 0) -> bytes | None: ...

    def add(self, product: dict, image: bytes | Image.Image | Sequence[bytes | Image.Image]) -> dict: ...

    def delete(self, product_id: str) -> bool: ...

    def stats(self) -> dict: ...

    def refresh(self) -> dict | None: ...

    def index_status(self) -> dict: ...

    def close(self) -> None: ...
