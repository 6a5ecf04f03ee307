"""Attribute schema, category-from-text and the guided attribute model."""

from attributes.schema import Schema, SchemaError, default_schema, load_schema
from attributes.text import category_from_text

__all__ = ["Schema", "SchemaError", "default_schema", "load_schema", "category_from_text"]
