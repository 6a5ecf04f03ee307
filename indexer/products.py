"""A product on its way into the store: the same steps for a dump row and a product added through the API."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from foundation.dump import Product
from indexer.describe import Described, Describer, Item, describe_items
from indexer.store import ProductRecord, Store


def product_fields(product: Product) -> tuple:
    """A product's own fields, as the content hash sees them (the same for bulk and the API)."""
    return (product.title, product.category_path, product.price, product.url, product.category)


def product_item(product: Product, source) -> Item:
    """A product as describe_items sees it: the same for a dump row and a product added through the API."""
    return Item(
        source=source,
        category=product.category,
        texts=(product.category_path, product.title),
        label=product.attributes.get("category"),
        fields=product_fields(product),
    )


def product_record(product: Product, described: Described) -> ProductRecord:
    described.description.timings_ms = {}
    return ProductRecord(
        product.id,
        product.title,
        product.category_path,
        product.price,
        product.url,
        str(product.image) if str(product.image) not in ("", ".") else "",
        described.description,
        described.content_hash,
    )


def product_from_fields(fields: Mapping) -> Product:
    """A product from the API's checked fields (``id``, ``title``, ``category_path``, ``price``, ``url``,
    ``category``); the web layer has already refused what is malformed."""
    pid = str(fields.get("id") or "").strip()
    if not pid:
        raise ValueError("a product needs a non-empty id")
    price = fields.get("price")
    if price is not None and (not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0):
        raise ValueError(f"price must be a non-negative number, got {price!r}")
    return Product(
        id=pid,
        image=Path(""),
        title=str(fields.get("title") or ""),
        category_path=str(fields.get("category_path") or ""),
        price=None if price is None else float(price),
        url=str(fields["url"]) if fields.get("url") else None,
        category=fields.get("category") or None,
    )


def add_products(store: Store, describer: Describer, products: list[tuple[Product, object]]) -> list[ProductRecord]:
    """Describe each (product, photo) and store them all in one transaction."""
    described = describe_items(describer, [product_item(p, source) for p, source in products])
    records = [product_record(p, d) for (p, _s), d in zip(products, described)]
    store.put(records, {p.id: d.prepared.thumbnail for (p, _s), d in zip(products, described)})
    return records
