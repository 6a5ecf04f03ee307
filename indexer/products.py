"""A product on its way into the store: the same steps for a dump row and a product added through the API."""

from __future__ import annotations

from collections.abc import Mapping

from foundation.dump import Product, check_product
from foundation.schema import Schema, default_schema
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
        described.prepared.image_hash,
    )


def product_from_fields(fields: Mapping, schema: Schema | None = None) -> Product:
    """A product added through the API, checked by the same rules as a dump row (no image path:
    its photo comes with the request)."""
    return check_product(fields, schema=schema or default_schema(), image_required=False)


def add_products(store: Store, describer: Describer, products: list[tuple[Product, object]]) -> list[ProductRecord]:
    """Describe each (product, photo) and store them all in one transaction."""
    described = describe_items(describer, [product_item(p, source) for p, source in products])
    records = [product_record(p, d) for (p, _s), d in zip(products, described)]
    store.put(records, {p.id: d.prepared.thumbnail for (p, _s), d in zip(products, described)})
    return records
