"""What narrows a search: ``group=value`` filters (a shop's filters, a shopper's attribute edits),
a price range and a page (``offset``). One set of rules for the engine, the API and the command line.

A filter names an attribute group below the category (``Schema.attribute_groups``: colour,
pattern, sleeve_length, ...) and one of its values, at most once per group; the category itself
is chosen by the search's option (guided), not by a filter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from foundation.echo import echo
from foundation.schema import Schema

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
