"""Checking the fields of an API request before anything reaches the engine.

Each function raises ``RequestError`` (a ``ValueError``) with a message that names the field and
the bad value; the API turns it into a 4xx JSON answer. The option, k and box rules are the
engine's own (``search.engine``), so the web layer and the engine cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from foundation.images import ImageError, upright_size
from foundation.text import category_from_text
from search.engine import MAX_K, check_k, check_option, parse_box

DEFAULT_K = 20
MAX_ID = 200  # characters in a product id
MAX_TEXT = 1000  # characters in a title, category path or url


class RequestError(ValueError):
    """A request field that cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SearchRequest:
    image: bytes  # as uploaded: the engine's one describe path decodes, orients and shrinks it
    option: str
    category: str | None
    box: tuple[float, float, float, float] | None
    k: int


@dataclass(frozen=True)
class Upload:
    data: bytes
    size: tuple[int, int]  # upright (width, height), from the header


def read_image(files: Mapping, field: str = "image") -> Upload:
    """The uploaded photo in ``field``, its header checked without decoding the pixels: empty,
    non-image and bomb files are refused here, truncated ones when the engine decodes them."""
    upload = files.get(field)
    if upload is None:
        raise RequestError(f"no image: send the photo as the multipart file field {field!r}")
    data = upload.read()
    name = upload.filename or field
    try:
        return Upload(data, upright_size(data))
    except ImageError as exc:
        raise RequestError(f"{field} {name[:100]!r}: {exc}") from None


def parse_option(value: str | None) -> str:
    if value is None or value == "":
        return "auto"
    try:
        return check_option(value)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def parse_k(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_K
    try:
        k = int(value.strip())
    except ValueError:
        raise RequestError(f"k must be an integer from 1 to {MAX_K}, got {value!r}") from None
    try:
        return check_k(k)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def parse_category(value: str | None, categories: Sequence[str]) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if value not in categories:
        raise RequestError(f"unknown category {value!r}; known: {', '.join(categories)}")
    return value


def parse_search(form: Mapping, files: Mapping, categories: Sequence[str]) -> SearchRequest:
    """A search request from multipart fields ``image``, ``option``, ``category``, ``box``, ``k``."""
    option = parse_option(form.get("option"))
    category = parse_category(form.get("category"), categories)
    k = parse_k(form.get("k"))
    box_text = form.get("box")
    if option == "guided" and category is None:
        raise RequestError(f"the guided option needs a category, one of: {', '.join(categories)}")
    if option == "auto" and category is not None:
        raise RequestError(f"the auto option takes no category (got {category!r}): use option=guided")
    if option == "rectangle" and not box_text:
        raise RequestError("the rectangle option needs a box x0,y0,x1,y1 in the photo's pixels")
    if option != "rectangle" and box_text:
        raise RequestError(f"a box ({box_text!r}) is only for option=rectangle, not {option!r}")
    upload = read_image(files)
    box = None
    if option == "rectangle":
        try:
            box = parse_box(box_text, upload.size)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
    return SearchRequest(image=upload.data, option=option, category=category, box=box, k=k)


def _text(form: Mapping, name: str, *, limit: int = MAX_TEXT) -> str | None:
    value = form.get(name)
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if len(value) > limit:
        raise RequestError(f"{name} is {len(value)} characters long; the limit is {limit}")
    if any(ord(c) < 32 for c in value):
        raise RequestError(f"{name} {value[:60]!r} holds control characters")
    return value


def parse_product(form: Mapping, categories: Sequence[str]) -> dict:
    """A product row (as in a dump) from fields ``id``, ``title``, ``category_path``, ``price``, ``url``
    and, to override what the text says, ``category``."""
    pid = _text(form, "id", limit=MAX_ID)
    if pid is None:
        raise RequestError("a product needs an id")
    product: dict = {"id": pid}
    for name in ("title", "category_path", "url"):
        value = _text(form, name)
        if value is not None:
            product[name] = value
    category = parse_category(form.get("category"), categories)
    if category is not None:
        product["category"] = category
    if "title" not in product and "category_path" not in product:
        raise RequestError(f"product {pid!r} needs a title or a category_path to tell its category")
    if category is None and category_from_text(product.get("category_path"), product.get("title")) is None:
        # As documented: the category is read from the text unless `category` is given; the engine
        # would otherwise let its model guess one, which the seller never said.
        raise RequestError(
            f"product {pid!r}: no fashion category in its title or category_path; name one in the field 'category'"
        )
    price = _text(form, "price", limit=32)
    if price is not None:
        try:
            product["price"] = float(price)
        except ValueError:
            raise RequestError(f"price must be a number, got {price!r}") from None
        if not math.isfinite(product["price"]) or product["price"] < 0:
            raise RequestError(f"price must be a non-negative number, got {price!r}")
    return product


__all__ = [
    "RequestError",
    "SearchRequest",
    "parse_search",
    "parse_product",
    "read_image",
    "parse_option",
    "parse_k",
    "parse_category",
]
