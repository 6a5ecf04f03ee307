"""A search as one value: ``Query`` (a photo or a query id, the option, the guide, the box, and a
``Narrowing``), built and checked once where it enters (the API's form, the CLI's flags, Python)
and passed whole to the engine.

Options:
    auto       the engine finds the garments in the photo and decides which one is meant;
    guided     the shopper picks the fashion category (``category``);
    rectangle  the shopper draws a box around the garment (``box``, in the upright photo's own
               pixels; a ``category`` may guide it too).

A re-run names an earlier answer's ``query.id`` instead of a photo: no option, category or box
(the query is re-run as it was described), a narrowing of its own, and which of the photo's
garments to answer (``garment``, 0 the first).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from foundation.boxes import MAX_GARMENTS, Box, parse_box
from foundation.echo import echo
from foundation.images import ImageError, upright_size
from foundation.schema import Schema, default_schema
from search.narrowing import DEFAULT_K, MAX_K, MAX_OFFSET, Narrowing, check_k
from search.recent import ID_PATTERN as QUERY_ID_PATTERN

OPTIONS = ("auto", "guided", "rectangle")

Photo = bytes | Path | Image.Image

__all__ = [
    "DEFAULT_K",
    "MAX_GARMENTS",
    "MAX_K",
    "MAX_OFFSET",
    "OPTIONS",
    "QUERY_ID_PATTERN",
    "Narrowing",
    "Query",
    "check_k",
    "GARMENT_ALONE",
    "check_option",
    "check_rerun",
    "check_search",
]


def check_option(option) -> str:
    if option not in OPTIONS:
        raise ValueError(f"unknown option {echo(option)}; use one of {', '.join(OPTIONS)}")
    return option


def check_search(option, category: str | None, box, schema: Schema | None = None) -> None:
    """The rules of a search with a photo: which option takes a category and which a box (the
    category is checked against ``schema`` when one is given)."""
    check_option(option)
    if schema is not None and category is not None and category not in schema.category_names:
        raise ValueError(f"unknown category {echo(category)}; known: {', '.join(schema.category_names)}")
    if option == "guided" and category is None:
        known = f", one of: {', '.join(schema.category_names)}" if schema is not None else ""
        raise ValueError(f"the guided option needs a category{known}")
    if option == "auto" and category is not None:
        raise ValueError(f"the auto option takes no category (got {echo(category)}): use option=guided")
    if option == "rectangle" and box is None:
        raise ValueError("the rectangle option needs a box x0,y0,x1,y1 in the photo's pixels")
    if option != "rectangle" and box is not None:
        raise ValueError(f"a box ({echo(box)}) is only for option=rectangle, not {option!r}")


GARMENT_ALONE = "garment picks a garment of an earlier answer: send it with that answer's query_id"


def check_rerun(given: list[str]) -> None:
    """A re-run by query id takes none of the fields (``given``) that describe a photo anew."""
    if given:
        raise ValueError(
            f"query_id re-runs a search as it was described; it takes no {', '.join(given)} "
            "(send a photo instead to search anew)"
        )


def check_box_shape(box) -> Box:
    """Four finite numbers ``x0,y0,x1,y1`` of a non-degenerate box; whether it lies inside the photo
    is checked against the photo's own size (``photo_size``)."""
    return parse_box(box, (math.inf, math.inf))


def photo_size(photo: Photo) -> tuple[int, int] | None:
    """The upright size of a photo from its header (None for a decoded image: its own size)."""
    if isinstance(photo, Image.Image):
        return photo.size
    try:
        return upright_size(photo.read_bytes() if isinstance(photo, Path) else photo)
    except (OSError, ImageError):
        return None  # refused, with its reason, when it is decoded


@dataclass(frozen=True)
class Query:
    """One search: a photo with an option, or a re-run of an earlier answer by its query id.

    Build it with :meth:`search` or :meth:`rerun`; constructing one directly checks the same rules.
    """

    option: str | None = None  # None for a re-run: the described query's own
    photo: Photo | None = field(default=None, repr=False)
    query_id: str | None = None
    guide: str | None = None  # the shopper's category
    box: Box | None = None  # in the upright photo's pixels
    narrowing: Narrowing = field(default_factory=Narrowing)
    garment: int = 0  # a re-run: which of the photo's garments to answer

    def __post_init__(self):
        if (self.photo is None) == (self.query_id is None):
            raise ValueError("a query needs a photo or a query id, and not both")
        if not 0 <= self.garment < MAX_GARMENTS or isinstance(self.garment, bool):
            raise ValueError(f"garment must be an integer from 0 to {MAX_GARMENTS - 1}, got {echo(self.garment)}")
        if self.query_id is not None:
            if not isinstance(self.query_id, str) or not re.fullmatch(QUERY_ID_PATTERN, self.query_id):
                raise ValueError(
                    f"query_id must be the 16 characters of a search's query.id, got {echo(self.query_id)}"
                )
            given = [(self.option, "option"), (self.guide, "category"), (self.box, "box")]
            check_rerun([name for value, name in given if value is not None])
            return
        check_search(self.option, self.guide, self.box)
        if self.garment:
            raise ValueError(GARMENT_ALONE)

    @classmethod
    def search(
        cls,
        photo: Photo,
        option: str = "auto",
        *,
        category: str | None = None,
        box=None,
        schema: Schema | None = None,
        **narrowing,
    ) -> Query:
        """A search with a photo (its bytes as sent, a path, or a decoded image); ``narrowing``:
        ``Narrowing.of``'s k, offset, filters, price_min, price_max. ``ValueError`` names what is wrong."""
        schema = schema or default_schema()
        check_search(option, category, box, schema)
        if box is not None:
            size = photo_size(photo)
            box = parse_box(box, size) if size is not None else check_box_shape(box)
        return cls(option, photo, None, category, box, Narrowing.of(schema=schema, **narrowing))

    @classmethod
    def rerun(cls, query_id: str, *, garment: int = 0, schema: Schema | None = None, **narrowing) -> Query:
        """The search ``query_id`` named, again, with a narrowing of its own, answering ``garment``."""
        return cls(None, None, query_id, None, None, Narrowing.of(schema=schema, **narrowing), garment)

    @property
    def is_rerun(self) -> bool:
        return self.query_id is not None
