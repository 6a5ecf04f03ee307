"""What narrows a search: ``group=value`` filters (a shop's filters, a shopper's attribute edits),
a price range and a page (``offset``). One set of rules for the engine, the API and the command line.

A filter names an attribute group below the category (``Schema.attribute_groups``: colour,
pattern, sleeve_length, ...) and one of its values, at most once per group; the category itself
is chosen by the search's option (guided), not by a filter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from foundation.echo import echo
from foundation.schema import Schema, default_schema

MAX_OFFSET = 1000  # with k <= 200, at most 1,200 products of one ranking are ever re-ranked


def filter_tokens(schema: Schema) -> list[str]:
    """Every ``group=value`` a filter may be, in schema order."""
    return [f"{g.name}={v}" for g in schema.attribute_groups for v in g.values]


def parse_filters(tokens: Iterable[str], schema: Schema) -> dict[str, str]:
    """``group=value`` tokens as a group -> value mapping (schema order); ``ValueError`` naming the bad one."""
    groups = {g.name: g for g in schema.attribute_groups}
    out: dict[str, str] = {}
    for token in tokens:
        group, eq, value = str(token).partition("=")
        if not eq:
            raise ValueError(f"a filter is group=value (e.g. colour=red), got {echo(token)}")
        if group not in groups:
            hint = "; choose the category with option=guided" if group in (schema.CATEGORY, schema.GREAT) else ""
            raise ValueError(
                f"filter {echo(token)}: unknown attribute group {echo(group)}{hint}; known: {', '.join(groups)}"
            )
        if value not in groups[group].values:
            raise ValueError(
                f"filter {echo(token)}: unknown {group} {echo(value)}; known: {', '.join(groups[group].values)}"
            )
        if group in out:
            raise ValueError(f"filter {echo(token)}: {group} is already {out[group]!r}; one value per group")
        out[group] = value
    order = list(groups)
    return dict(sorted(out.items(), key=lambda gv: order.index(gv[0])))


def check_filters(filters: Mapping[str, str] | None, schema: Schema) -> dict[str, str]:
    return parse_filters((f"{g}={v}" for g, v in (filters or {}).items()), schema)


def check_price(name: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {echo(value)}")
    return float(value)


def check_price_range(price_min, price_max) -> tuple[float | None, float | None]:
    lo, hi = check_price("price_min", price_min), check_price("price_max", price_max)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"price_min {lo:g} is above price_max {hi:g}")
    return lo, hi


def check_offset(offset) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset must be an integer from 0 to {MAX_OFFSET}, got {echo(offset)}")
    return int(offset)


def narrowed_keys(filters: Mapping[str, str], price_min: float | None, price_max: float | None) -> list[str]:
    """The keys as the response states them: ``group=value``, then ``price_min=...``, ``price_max=...``."""
    keys = [f"{g}={v}" for g, v in filters.items()]
    keys += [f"price_min={price_min:g}"] if price_min is not None else []
    keys += [f"price_max={price_max:g}"] if price_max is not None else []
    return keys


DEFAULT_K = 20
MAX_K = 200


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {echo(k)}")
    return int(k)


@dataclass(frozen=True)
class Narrowing:
    """How many results, from where, among which products: checked once, where it is built.

    ``filters`` maps attribute groups to values (schema order); the price range leaves out products
    of unknown price whenever a bound is given. Build one with :meth:`of`.
    """

    k: int = DEFAULT_K
    offset: int = 0
    filters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    price_min: float | None = None
    price_max: float | None = None

    @classmethod
    def of(
        cls,
        *,
        k: int = DEFAULT_K,
        offset: int = 0,
        filters: Mapping[str, str] | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        schema: Schema | None = None,
    ) -> Narrowing:
        """A narrowing whose every part is checked; ``ValueError`` names the bad one."""
        lo, hi = check_price_range(price_min, price_max)
        checked = check_filters(filters, schema or default_schema())
        return cls(check_k(k), check_offset(offset), MappingProxyType(checked), lo, hi)

    @property
    def narrowed(self) -> bool:
        """Whether any key beyond the category narrows the products."""
        return bool(self.filters) or self.price_min is not None or self.price_max is not None

    @property
    def depth(self) -> int:
        """Products ranked to answer this page: one more than the page says whether another follows."""
        return self.offset + self.k + 1

    def keys(self) -> list[str]:
        """The keys as an answer states them: ``group=value``, then ``price_min=...``, ``price_max=...``."""
        return narrowed_keys(self.filters, self.price_min, self.price_max)

    def bounds(self) -> list[str]:
        """The keys as a note about too few products states them."""
        out = [f"{g}={v}" for g, v in self.filters.items()]
        out += [f"price >= {self.price_min:g}"] if self.price_min is not None else []
        out += [f"price <= {self.price_max:g}"] if self.price_max is not None else []
        return out

    def only(self, filters: Mapping[str, str]) -> Narrowing:
        """The same narrowing with these filters (those of it that apply to one category)."""
        return replace(self, filters=MappingProxyType(dict(filters)))

    def to_json(self) -> dict:
        return {
            "k": self.k,
            "offset": self.offset,
            "filters": dict(self.filters),
            "price_min": self.price_min,
            "price_max": self.price_max,
        }
