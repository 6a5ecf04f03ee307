"""The attribute schema: groups, values, applicability, synonyms and dataset label maps.

The schema is the project's vocabulary. Its groups, in file order, are the order in which the
attribute model generates a product's attributes; each ``group=value`` pair is one token. The
schema's fingerprint is saved with every model so that a model trained on one schema refuses to
load with another.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SCHEMA_PATH = Path(__file__).with_name("schema.toml")

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)


class SchemaError(ValueError):
    """The schema file, or data checked against it, is inconsistent."""


@dataclass(frozen=True)
class Group:
    name: str
    values: tuple[str, ...]
    # Great-categories or fashion categories the group applies to; None means all.
    applies_to: frozenset[str] | None = None


@dataclass(frozen=True)
class Category:
    name: str
    great: str
    synonyms: tuple[str, ...]


class Schema:
    """Attribute groups in generation order, with the token vocabulary built from them."""

    GREAT = "great_category"
    CATEGORY = "category"
    COLOUR = "colour"

    def __init__(self, raw: Mapping, source: str = "<memory>"):
        self.source = source
        self.version = int(raw.get("version", 1))
        self.groups: tuple[Group, ...] = tuple(
            Group(g["name"], tuple(g["values"]), frozenset(g["applies_to"]) if "applies_to" in g else None)
            for g in raw["groups"]
        )
        self.categories: dict[str, Category] = {
            name: Category(name, spec["great"], tuple(spec.get("synonyms", ())))
            for name, spec in raw["categories"].items()
        }
        self.datasets: dict[str, dict[str, str | None]] = {
            ds: {label: (cat or None) for label, cat in labels.items()}
            for ds, labels in raw.get("datasets", {}).items()
        }
        self.generic_words: frozenset[str] = frozenset(raw.get("generic_words", ()))
        # colour value -> RGB shades of it (the `[colours]` table; not part of the fingerprint)
        self.colour_swatches: dict[str, tuple[tuple[int, int, int], ...]] = {
            name: tuple(tuple(shade) for shade in shades) for name, shades in raw.get("colours", {}).items()
        }
        self._group_by_name = {g.name: g for g in self.groups}
        self.tokens: tuple[str, ...] = SPECIAL_TOKENS + tuple(f"{g.name}={v}" for g in self.groups for v in g.values)
        self._token_ids = {t: i for i, t in enumerate(self.tokens)}
        self._check()
        canonical = json.dumps(
            {
                "groups": [[g.name, list(g.values), sorted(g.applies_to or [])] for g in self.groups],
                "categories": {c.name: c.great for c in self.categories.values()},
            },
            sort_keys=True,
        )
        self.fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]

    # -- construction checks -------------------------------------------------------------
    def _check(self) -> None:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise SchemaError(f"{self.source}: duplicate group names in {names}")
        for required in (self.GREAT, self.CATEGORY):
            if required not in self._group_by_name:
                raise SchemaError(f"{self.source}: the schema needs a {required!r} group")
        if names[:2] != [self.GREAT, self.CATEGORY]:
            raise SchemaError(f"{self.source}: {self.GREAT!r} and {self.CATEGORY!r} must be the first groups")
        for g in self.groups:
            if len(set(g.values)) != len(g.values):
                raise SchemaError(f"{self.source}: group {g.name!r} repeats a value")
            for target in g.applies_to or ():
                if target not in self.great_categories and target not in self.categories:
                    raise SchemaError(f"{self.source}: group {g.name!r} applies to unknown {target!r}")
        if set(self.categories) != set(self.group(self.CATEGORY).values):
            missing = set(self.group(self.CATEGORY).values) ^ set(self.categories)
            raise SchemaError(f"{self.source}: categories and the category group differ on {sorted(missing)}")
        for c in self.categories.values():
            if c.great not in self.great_categories:
                raise SchemaError(f"{self.source}: category {c.name!r} has unknown great-category {c.great!r}")
        colours = self._group_by_name.get(self.COLOUR)
        for name, shades in self.colour_swatches.items():
            if colours is None or name not in colours.values:
                raise SchemaError(f"{self.source}: [colours] names {name!r}, which is not a value of group 'colour'")
            if not shades or any(
                len(s) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in s) for s in shades
            ):
                raise SchemaError(f"{self.source}: colour {name!r} needs a list of [r, g, b] shades, 0 to 255 each")
        for ds, labels in self.datasets.items():
            for label, cat in labels.items():
                if cat is not None and cat not in self.categories:
                    raise SchemaError(f"{self.source}: dataset {ds!r} maps {label!r} to unknown category {cat!r}")

    # -- lookups -------------------------------------------------------------------------
    @property
    def great_categories(self) -> tuple[str, ...]:
        return self._group_by_name[self.GREAT].values

    @property
    def category_names(self) -> tuple[str, ...]:
        return self._group_by_name[self.CATEGORY].values

    @property
    def attribute_groups(self) -> tuple[Group, ...]:
        """The groups below the category (colour, pattern, ...): what tells products of one category
        apart, and what a search may filter on."""
        return tuple(g for g in self.groups if g.name not in (self.GREAT, self.CATEGORY))

    def group(self, name: str) -> Group:
        try:
            return self._group_by_name[name]
        except KeyError:
            raise SchemaError(f"unknown attribute group {name!r}; known: {', '.join(self._group_by_name)}") from None

    def check_category(self, category: str) -> str:
        if category not in self.categories:
            raise SchemaError(f"unknown category {category!r}; known: {', '.join(self.category_names)}")
        return category

    def great_category(self, category: str) -> str:
        return self.categories[self.check_category(category)].great

    def applies(self, group: str | Group, category: str) -> bool:
        g = group if isinstance(group, Group) else self.group(group)
        if g.applies_to is None:
            return True
        return category in g.applies_to or self.great_category(category) in g.applies_to

    def applicable_groups(self, category: str) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if self.applies(g, category))

    def token(self, group: str, value: str) -> str:
        return f"{group}={value}"

    def token_id(self, token: str) -> int:
        try:
            return self._token_ids[token]
        except KeyError:
            raise SchemaError(f"unknown attribute token {token!r}") from None

    def parse_token(self, token_id: int) -> tuple[str, str]:
        group, _, value = self.tokens[token_id].partition("=")
        return group, value

    def dataset_category(self, dataset: str, label: str) -> str | None:
        """Schema category for a shared dataset's label; None when deliberately left out."""
        try:
            return self.datasets[dataset][label]
        except KeyError:
            raise SchemaError(f"dataset {dataset!r} label {label!r} has no mapping in {self.source}") from None

    # -- attributes ----------------------------------------------------------------------
    def attribute_errors(self, attributes: Mapping[str, str], category: str | None = None) -> list[str]:
        """Why a product's attributes do not fit the schema (empty when they do)."""
        errors = []
        category = attributes.get(self.CATEGORY, category)
        for group, value in attributes.items():
            g = self._group_by_name.get(group)
            if g is None:
                errors.append(f"unknown attribute group {group!r}")
            elif value not in g.values:
                errors.append(f"unknown value {value!r} for {group!r}")
            elif category in self.categories and not self.applies(g, category):
                errors.append(f"{group!r} does not apply to {category!r}")
        if category in self.categories and self.GREAT in attributes:
            if attributes[self.GREAT] != self.great_category(category):
                errors.append(f"great_category {attributes[self.GREAT]!r} contradicts category {category!r}")
        return errors

    def complete(self, attributes: Mapping[str, str], category: str) -> dict[str, str]:
        """The attributes with category and great-category filled in from ``category``."""
        out = dict(attributes)
        out[self.CATEGORY] = category
        out[self.GREAT] = self.great_category(category)
        return out

    def encode(self, attributes: Mapping[str, str]) -> list[int]:
        """Token ids in schema order: BOS, one token per known group, EOS."""
        ids = [self._token_ids[BOS]]
        for g in self.groups:
            if g.name in attributes:
                ids.append(self.token_id(self.token(g.name, attributes[g.name])))
        ids.append(self._token_ids[EOS])
        return ids

    def decode(self, token_ids) -> dict[str, str]:
        out = {}
        for t in token_ids:
            name = self.tokens[int(t)]
            if name in SPECIAL_TOKENS:
                continue
            group, value = self.parse_token(int(t))
            out[group] = value
        return out

    def to_dict(self) -> dict:
        """The raw form, to be saved beside a model."""
        return {
            "version": self.version,
            "groups": [
                {
                    "name": g.name,
                    "values": list(g.values),
                    **({"applies_to": sorted(g.applies_to)} if g.applies_to else {}),
                }
                for g in self.groups
            ],
            "categories": {c.name: {"great": c.great, "synonyms": list(c.synonyms)} for c in self.categories.values()},
            "generic_words": sorted(self.generic_words),
            "colours": {name: [list(s) for s in shades] for name, shades in self.colour_swatches.items()},
            "datasets": {ds: {k: v or "" for k, v in m.items()} for ds, m in self.datasets.items()},
        }


def load_schema(path: str | Path | None = None) -> Schema:
    """Read a schema file (TOML); the packaged default when ``path`` is None."""
    if path is None:
        return default_schema()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SchemaError(f"cannot read schema {path}: {exc}") from exc
    return Schema(raw, source=str(path))


@functools.cache
def default_schema() -> Schema:
    return Schema(tomllib.loads(DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8")), source=str(DEFAULT_SCHEMA_PATH))
