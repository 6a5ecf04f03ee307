"""Checking the fields of an API request before anything reaches the engine.

Each function raises ``RequestError`` (a ``ValueError``) with a message that names the field and
the bad value (cut to ~100 characters by ``foundation.echo.echo``); the API turns it into a 4xx
JSON answer. The option, k and box rules are the engine's own (``search.engine``,
``foundation.boxes``), so the web layer and the engine cannot disagree.

A field is taken exactly as sent: a field that is present must be valid (an empty ``category``
is an unknown category, not a missing one). The regular expressions below are the ones
``webui/openapi.json`` states, character for character (``tests/test_webui_api.py`` checks), so a
request the document allows is one these functions accept, except where a rule needs more than
JSON Schema can say (a box inside the photo sent with it; an id's bytes; a category read from
the title), which the document states in words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from foundation.dump import MAX_ID_CHARS, MAX_PHOTOS, MAX_TEXT, MAX_URL, check_id
from foundation.echo import echo
from foundation.images import ImageError, upright_size
from foundation.schema import default_schema
from foundation.text import category_from_text
from search.narrowing import MAX_OFFSET, Narrowing, check_offset, parse_filters
from search.query import (
    DEFAULT_K,
    GARMENT_ALONE,
    MAX_GARMENTS,
    MAX_K,
    OPTIONS,
    QUERY_ID_PATTERN,
    Query,
    check_k,
    check_option,
    check_rerun,
    check_search,
)

MAX_ID = MAX_ID_CHARS  # characters in a product id
MAX_PRICE_TEXT = 32

# Character classes, written with \u escapes so that Python's re and ECMA-262 (JSON Schema's
# `pattern`) read them alike. WHITESPACE is every character str.strip() removes that is not a
# control character.
CONTROL = r"\u0000-\u001f\u007f"
TEXT_CONTROL = r"\u0000-\u0008\u000a-\u001f\u007f"  # a text field may hold tabs
WHITESPACE = r" \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_ID_END = rf"[^{CONTROL}/\\{WHITESPACE}]"  # the first and the last character: no white space
_ID_END_NOT_DOT = rf"[^{CONTROL}/\\{WHITESPACE}.]"
_ID_MIDDLE = rf"[^{CONTROL}/\\]"
# 1 character, 2 (not both dots), or more: so never "." or "..". (A `not` in the document would say
# it more simply, but Schemathesis' coverage phase cannot judge a `not` next to binary fields.)
ID_PATTERN = rf"^(?:{_ID_END_NOT_DOT}|{_ID_END_NOT_DOT}{_ID_END}|\.{_ID_END_NOT_DOT}|{_ID_END}{_ID_MIDDLE}+{_ID_END})$"
TEXT_PATTERN = rf"^[^{TEXT_CONTROL}]*$"
NOT_BLANK_PATTERN = rf"[^\t{WHITESPACE}]"
URL_PATTERN = rf"^[\t{WHITESPACE}]*(?:(?:[Hh][Tt][Tt][Pp][Ss]?://|/)[^{TEXT_CONTROL}]*)?$"
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
BOX_PATTERN = rf"^[ \t]*{_NUMBER}[ \t]*(?:,[ \t]*{_NUMBER}[ \t]*){{3}}$"
PRICE_PATTERN = rf"^{_NUMBER}$"
K_PATTERN = r"^-?[0-9]+$"
OFFSET_PATTERN = K_PATTERN


class RequestError(ValueError):
    """A request field that cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    data: bytes
    size: tuple[int, int]  # upright (width, height), from the header


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


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
        raise RequestError(f"{field} {echo(name)}: {exc}") from None


def read_images(files, field: str = "image") -> list[Upload]:
    """Every photo sent in ``field`` (the part repeated for a product of several photos; ``files``:
    the request's MultiDict), each checked as :func:`read_image` checks one."""
    uploads = files.getlist(field)
    if not uploads:
        raise RequestError(f"no image: send the photo as the multipart file field {field!r}")
    if len(uploads) > MAX_PHOTOS:
        raise RequestError(f"{len(uploads)} photos in {field!r}; a product takes at most {MAX_PHOTOS}")
    out = []
    for n, upload in enumerate(uploads):
        try:
            out.append(read_image({field: upload}, field))
        except RequestError as exc:
            raise RequestError(f"photo {n}: {exc}" if len(uploads) > 1 else str(exc), exc.status) from None
    return out


def parse_photo(value: str | None) -> int:
    """Which of a product's photos (``?photo=``): 0 to ``MAX_PHOTOS`` - 1, default 0."""
    if value is None or value == "":
        return 0
    if not re.fullmatch(r"\d{1,3}", value.strip()) or int(value) >= MAX_PHOTOS:
        raise RequestError(f"photo must be a whole number from 0 to {MAX_PHOTOS - 1}, got {echo(value)}")
    return int(value)


def parse_option(value: str | None) -> str:
    if value is None:
        return "auto"
    try:
        return check_option(value)
    except ValueError:
        raise RequestError(f"unknown option {echo(value)}; use one of {', '.join(OPTIONS)}") from None


def parse_k(value: str | None) -> int:
    if value is None:
        return DEFAULT_K
    if not _matches(K_PATTERN, value):
        raise RequestError(f"k must be an integer from 1 to {MAX_K}, got {echo(value)}")
    try:
        return check_k(int(value))
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def parse_category(value: str | None, categories: Sequence[str]) -> str | None:
    if value is None:
        return None
    if value not in categories:
        raise RequestError(f"unknown category {echo(value)}; known: {', '.join(categories)}")
    return value


def _every(form: Mapping, name: str) -> list[str]:
    """Every value of a repeatable field (a MultiDict's list; a plain mapping's value or list)."""
    if hasattr(form, "getlist"):
        return list(form.getlist(name))
    value = form.get(name)
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def parse_filters_field(values: Sequence[str]) -> dict[str, str]:
    try:
        return parse_filters(values, default_schema())
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def parse_offset(value: str | None) -> int:
    if value is None:
        return 0
    if not _matches(OFFSET_PATTERN, value):
        raise RequestError(f"offset must be an integer from 0 to {MAX_OFFSET}, got {echo(value)}")
    try:
        return check_offset(int(value))
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def parse_garment(value: str | None) -> int:
    """Which garment of an earlier answer (``garment``): 0 to ``MAX_GARMENTS`` - 1, default 0."""
    if value is None:
        return 0
    if not _matches(K_PATTERN, value) or not 0 <= int(value) < MAX_GARMENTS:
        raise RequestError(f"garment must be an integer from 0 to {MAX_GARMENTS - 1}, got {echo(value)}")
    return int(value)


def parse_query_id(value: str) -> str:
    if not _matches(QUERY_ID_PATTERN, value):
        raise RequestError(f"query_id must be the 16 characters of a search's query.id, got {echo(value)}")
    return value


def _refused(build):
    """``build()``, its ``ValueError`` as a ``RequestError`` (the engine's own rules, one message)."""
    try:
        return build()
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def parse_search(form: Mapping, files: Mapping, categories: Sequence[str]) -> Query:
    """A search from multipart fields ``image`` (or ``query_id``), ``option``, ``category``,
    ``box``, ``k``, ``filter`` (repeatable), ``price_min``, ``price_max``, ``offset``."""
    narrowing = {
        "k": parse_k(form.get("k")),
        "filters": parse_filters_field(_every(form, "filter")),
        "offset": parse_offset(form.get("offset")),
        "price_min": parse_price(form.get("price_min"), "price_min"),
        "price_max": parse_price(form.get("price_max"), "price_max"),
    }
    _refused(lambda: Narrowing.of(**narrowing))  # the price range, before anything else is read
    garment = parse_garment(form.get("garment"))
    if garment and form.get("query_id") is None:
        raise RequestError(GARMENT_ALONE)
    if form.get("query_id") is not None:
        query_id = parse_query_id(form.get("query_id"))
        given = ["image"] if files.get("image") is not None else []
        _refused(lambda: check_rerun(given + [f for f in ("option", "category", "box") if form.get(f) is not None]))
        return _refused(lambda: Query.rerun(query_id, garment=garment, **narrowing))
    option = parse_option(form.get("option"))
    category = parse_category(form.get("category"), categories)
    box_text = form.get("box")
    _refused(lambda: check_search(option, category, box_text, default_schema()))
    if box_text is not None and not _matches(BOX_PATTERN, box_text):
        raise RequestError(f"box must be 4 numbers x0,y0,x1,y1 (finite, separated by commas), got {echo(box_text)}")
    upload = read_image(files)
    return _refused(lambda: Query.search(upload.data, option, category=category, box=box_text, **narrowing))


def _text(form: Mapping, name: str, *, limit: int = MAX_TEXT) -> str | None:
    """A free-text field as sent: at most ``limit`` characters, no control characters but tabs;
    white space at its ends is dropped, and a blank one counts as not given."""
    value = form.get(name)
    if value is None:
        return None
    if len(value) > limit:
        raise RequestError(f"{name} is {len(value)} characters long; the limit is {limit}")
    if not _matches(TEXT_PATTERN, value):
        raise RequestError(f"{name} {echo(value)} holds control characters")
    return value.strip() or None


def parse_id(value: str | None) -> str:
    """A product id exactly as sent: ``foundation.dump.check_id``'s rules, and no white space at its ends."""
    if value is None or value == "":
        raise RequestError("a product needs an id")
    if len(value) > MAX_ID:
        raise RequestError(f"id is {len(value)} characters long; the limit is {MAX_ID}")
    if value != value.strip():
        raise RequestError(f"id {echo(value)} has white space at an end")
    try:
        return check_id(value)
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def parse_price(value: str | None, name: str = "price") -> float | None:
    if value is None:
        return None
    if len(value) > MAX_PRICE_TEXT or not _matches(PRICE_PATTERN, value):
        raise RequestError(f"{name} must be a number, got {echo(value)}")
    price = float(value)
    if not math.isfinite(price) or price < 0:
        raise RequestError(f"{name} must be a non-negative number, got {echo(value)}")
    return price


def parse_product(form: Mapping, categories: Sequence[str]) -> dict:
    """A product row (as in a dump) from fields ``id``, ``title``, ``category_path``, ``price``, ``url``
    and, to override what the text says, ``category``."""
    pid = parse_id(form.get("id"))
    product: dict = {"id": pid}
    for name in ("title", "category_path"):
        value = _text(form, name)
        if value is not None:
            product[name] = value
    url = _text(form, "url", limit=MAX_URL)
    if url is not None:
        if not _matches(URL_PATTERN, url):
            raise RequestError(f"url {echo(url)} is not an http(s) address or a path starting with '/'")
        product["url"] = url
    category = parse_category(form.get("category"), categories)
    if category is not None:
        product["category"] = category
    if "title" not in product and "category_path" not in product:
        raise RequestError(f"product {echo(pid)} needs a title or a category_path to tell its category")
    if category is None and category_from_text(product.get("category_path"), product.get("title")) is None:
        # As documented: the category is read from the text unless `category` is given; the engine
        # would otherwise let its model guess one, which the seller never said.
        raise RequestError(
            f"product {echo(pid)}: no fashion category in its title or category_path; name one in the field 'category'"
        )
    price = parse_price(form.get("price"))
    if price is not None:
        product["price"] = price
    return product


__all__ = [
    "RequestError",
    "parse_search",
    "parse_product",
    "parse_id",
    "parse_price",
    "read_image",
    "read_images",
    "parse_photo",
    "parse_option",
    "parse_k",
    "parse_category",
    "parse_offset",
    "parse_query_id",
    "parse_filters_field",
    "QUERY_ID_PATTERN",
    "OFFSET_PATTERN",
    "ID_PATTERN",
    "TEXT_PATTERN",
    "NOT_BLANK_PATTERN",
    "URL_PATTERN",
    "BOX_PATTERN",
    "PRICE_PATTERN",
]
