"""The seller's intended fashion category, read from a title or a category breadcrumb.

Rules, in order of priority:

1. Breadcrumb segments (split on ``/``, ``>``, ``|``, ``»``) go from general to specific, so a
   match in a later segment beats one in an earlier segment; the title, when given beside a
   breadcrumb, is read as the last and most specific segment.
2. Inside a segment, words after a preposition that introduces another garment ("with",
   "for", "to match", ...) describe something else: a match before it wins ("skirt with
   matching blouse" is a skirt, "bag for shoes" is a bag).
3. The longest synonym wins ("dress shirt" is a shirt, not a dress; "t-shirt dress" is a dress).
4. Among equally long matches, the last one wins: English compound nouns put the head last
   ("shoe bag" is a bag, "shirt dress" is a dress).
"""

from __future__ import annotations

import functools
import re

from foundation.schema import Schema, default_schema

_SEGMENT_SPLIT = re.compile(r"\s*(?:/|>|\||»|›)\s*")
_WORD = re.compile(r"[a-z0-9]+")
_SECONDARY = re.compile(
    r"\b(?:with|without|for|to match|matching|and matching|goes with|pairs with|plus|incl|including)\b"
)
# Plurals that the synonym list need not spell out.
_IRREGULAR_PLURALS = {"dress": "dresses", "gloves": "gloves", "jeans": "jeans", "pants": "pants"}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("'s", ""))


def _plural(word: str) -> str:
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith("s"):
        return word
    if word.endswith(("x", "ch", "sh")):
        return word + "es"
    return word + "s"


@functools.cache
def _phrase_table(schema: Schema) -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}
    for cat in schema.categories.values():
        for phrase in (cat.name, *cat.synonyms):
            words = tuple(_words(phrase))
            if not words:
                continue
            for variant in (words, words[:-1] + (_plural(words[-1]),)):
                if " ".join(variant) in schema.generic_words:
                    continue
                if table.get(variant, cat.name) != cat.name:
                    raise ValueError(f"synonym {' '.join(variant)!r} is claimed by {table[variant]!r} and {cat.name!r}")
                table[variant] = cat.name
    return table


def category_from_text(*texts: str | None, schema: Schema | None = None) -> str | None:
    """The schema category the seller meant, or None when the text does not say.

    Args:
        texts: breadcrumbs and titles, general first (``category_path`` then ``title``);
            ``None`` and empty strings are ignored.
    """
    schema = schema or default_schema()
    table = _phrase_table(schema)
    longest = max(len(k) for k in table)
    segments = [s for t in texts if t for s in _SEGMENT_SPLIT.split(t) if s.strip()]
    best: tuple | None = None
    best_cat = None
    for seg_index, segment in enumerate(segments):
        lowered = segment.lower()
        cut = _SECONDARY.search(lowered)
        parts = [(1, lowered[: cut.start()]), (0, lowered[cut.start() :])] if cut else [(1, lowered)]
        for primary, part in parts:
            words = _words(part)
            for start in range(len(words)):
                for n in range(min(longest, len(words) - start), 0, -1):
                    cat = table.get(tuple(words[start : start + n]))
                    if cat is None:
                        continue
                    key = (seg_index, primary, n, start + n)
                    if best is None or key > best:
                        best, best_cat = key, cat
                    break
    return best_cat
