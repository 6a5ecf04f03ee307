"""A product on its way into the store: the same steps for a dump row and a product added through the API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from foundation.dump import Product, check_product
from foundation.schema import Schema, default_schema
from indexer.describe import DescribedPhoto, Describer, Item, describe_items
from indexer.prepare import content_hash
from indexer.store import Photo, ProductRecord, Store


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


def stored_photo(path: str, described: DescribedPhoto) -> Photo:
    """A described photo as the store keeps it (its timings left out)."""
    described.description.timings_ms = {}
    return Photo(path, described.prepared.image_hash, described.description)


def product_record(product: Product, photos: Sequence[Photo], chash: str) -> ProductRecord:
    """The record of a product and its stored photos, in order (``chash``: the content hash of its
    photos' bytes, :func:`product_fields` and the models, ``indexer.prepare.content_hash``)."""
    if not photos:
        raise ValueError(f"product {product.id!r} has no photo to store")
    return ProductRecord(
        product.id, product.title, product.category_path, product.price, product.url, tuple(photos), chash
    )


def product_from_fields(fields: Mapping, schema: Schema | None = None) -> Product:
    """A product added through the API, checked by the same rules as a dump row (no image path:
    its photo comes with the request)."""
    return check_product(fields, schema=schema or default_schema(), image_required=False)


def add_products(
    store: Store, describer: Describer, products: list[tuple[Product, Sequence[object]]]
) -> list[ProductRecord]:
    """Describe each (product, photos: a list, or one photo) and store them all in one transaction."""
    products = [(p, list(s) if isinstance(s, (list, tuple)) else [s]) for p, s in products]
    items = [product_item(p, source) for p, sources in products for source in sources]
    described = iter(describe_items(describer, items))
    records, thumbs = [], {}
    for p, sources in products:
        mine = [next(described) for _ in sources]
        # a dump row's own paths; photos sent through the API have none
        paths = [str(photo.path) for photo in p.photos] if len(p.photos) == len(mine) else [""] * len(mine)
        chash = content_hash([d.prepared.image_hash for d in mine], product_fields(p), describer.signature)
        records.append(product_record(p, [stored_photo(path, d) for path, d in zip(paths, mine)], chash))
        thumbs[p.id] = [d.prepared.thumbnail for d in mine]
    store.put(records, thumbs)
    return records
