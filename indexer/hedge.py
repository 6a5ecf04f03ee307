"""Which categories a search hedges over when the model, not the shopper, picks the garment."""

from __future__ import annotations

from collections.abc import Callable

HEDGE_MASS = 0.8  # auto searches the likeliest garments, then categories, until they hold this much probability
HEDGE_MAX = 3
HEDGE_MIN_P = 0.05  # a garment or category less likely than this is never worth a search


def hedge_categories(categories, great_of: Callable[[str], str] | None = None) -> list[tuple[str, float]]:
    """The categories auto mode searches, at most ``HEDGE_MAX``; the likeliest is always searched.

    First the garments (great-categories, by their summed probability) until they hold
    ``HEDGE_MASS``, each by its likeliest category: a photo of a top and trousers searches both.
    Then, while slots remain and the categories searched hold less than ``HEDGE_MASS``, the next
    likeliest categories: a photo of one top that may be a T-shirt or a long-sleeve searches both.
    """
    ranked = sorted(((str(c), float(p)) for c, p in categories), key=lambda cp: -cp[1])
    if not ranked:
        return []
    great_of = great_of or (lambda c: c)
    garments: dict[str, list] = {}
    for c, p in ranked:
        garments.setdefault(great_of(c), [c, p, 0.0])[2] += p
    first = great_of(ranked[0][0])
    out, mass = [ranked[0]], garments[first][2]
    others = sorted((v for g, v in garments.items() if g != first), key=lambda cpm: -cpm[2])
    for c, p, g_mass in others:
        if mass >= HEDGE_MASS or len(out) >= HEDGE_MAX or g_mass < HEDGE_MIN_P:
            break
        out.append((c, p))
        mass += g_mass
    chosen = {c for c, _ in out}
    for c, p in ranked:
        if len(out) >= HEDGE_MAX or sum(q for _, q in out) >= HEDGE_MASS or p < HEDGE_MIN_P:
            break
        if c not in chosen:
            out.append((c, p))
    return out
