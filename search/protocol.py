"""What the web layer needs of a search engine: ``SearchEngine``'s public methods, as a typed Protocol.

``webui`` is written against ``Engine``, so anything with these methods serves the page and the
API (``search.engine.SearchEngine``). The signatures are ``SearchEngine``'s own, parameter for
parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

ENGINE_METHODS = (
    "__len__",
    "categories",
    "search",
    "rerun",
    "product",
    "thumbnail",
    "add",
    "delete",
    "stats",
    "refresh",
    "index_status",
)


class UnknownQuery(LookupError):
    """``rerun`` was given a query id the engine does not hold (never issued, or expired)."""


@runtime_checkable
class Engine(Protocol):
    """A catalogue searched by photo, and updated one product at a time.

    ``search`` and ``add`` take the photo as sent (its bytes) or decoded. ``search`` answers
    ``{"query": {...}, "results": [...]}`` as ``webui/openapi.json`` describes (without each
    result's ``image_url``, which the web layer adds) and raises ``ValueError`` for an option,
    category, box, k, filter, price, offset or photo it cannot use. ``rerun`` answers the same for
    the search whose ``query.id`` it is given, narrowed and paged anew, and raises ``UnknownQuery``
    when it no longer holds that id. A product may have several photos (``add`` takes a list): a
    result names the one that matched (``photo``), ``thumbnail`` answers photo n's. ``product`` and
    ``add`` answer a product's metadata (``id``, ``title``, ``category``, ...); ``product``,
    ``thumbnail`` and ``delete`` answer None or False for an unknown id. ``refresh`` loads the index
    anew when a bulk run into it has finished (None when there is nothing new), swapping it in
    without failing a search; ``index_status`` says what is served and how a bulk run is going.
    """

    def __len__(self) -> int: ...

    def categories(self) -> list[str]: ...

    def search(
        self,
        image: bytes | Path | Image.Image,
        option: str,
        *,
        category: str | None = None,
        box=None,
        k: int = 20,
        filters: Mapping[str, str] | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        offset: int = 0,
    ) -> dict: ...

    def rerun(
        self,
        query_id: str,
        *,
        k: int = 20,
        filters: Mapping[str, str] | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        offset: int = 0,
    ) -> dict: ...

    def product(self, product_id: str) -> dict | None: ...

    def thumbnail(self, product_id: str, photo: int = 0) -> bytes | None: ...

    def add(self, product: dict, image: bytes | Image.Image | Sequence[bytes | Image.Image]) -> dict: ...

    def delete(self, product_id: str) -> bool: ...

    def stats(self) -> dict: ...

    def refresh(self) -> dict | None: ...

    def index_status(self) -> dict: ...


@runtime_checkable
class SearchIndex(Protocol):
    """What ``SearchEngine`` needs of its index: ``search.index.InvertedIndex`` (in RAM, the reference)
    or ``search.milvus.MilvusIndex`` (a Milvus collection, the same ranking). Their methods take
    ``InvertedIndex``'s arguments and answer its ``SearchResult`` and ``Hit``s."""

    code_bytes: int
    colour_bins: int
    ranking: object  # search.index.RankingConfig

    def __len__(self) -> int: ...

    def __contains__(self, product_id: str) -> bool: ...

    def category_sizes(self) -> dict[str, int]: ...

    def photo_count(self) -> int: ...

    def add(self, ids, categories, attributes, codes, colours, photos=None, prices=None, numbers=None) -> None: ...

    def delete(self, ids) -> int: ...

    def same_photo(self, key: int) -> list[tuple[str, str]]: ...

    def search(
        self, code, colour, category, attributes, *, k=20, filters=None, price_min=None, price_max=None, offset=0
    ): ...

    def hits_for(self, ids, code, colour, attributes, *, filters=None, price_min=None, price_max=None) -> list: ...
