"""The search page: one HTML page whose script talks to the JSON API, and its example photos."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template, request

from foundation.schema import default_schema

bp = Blueprint("views", __name__)

INDEX_POLL_MS = 10_000  # how often the page asks /api/index whether the catalogue changed


def attribute_groups() -> dict:
    """What the page's attribute chips offer: each group below the category with its values, in
    schema order, and the categories it applies to (the page sends the shopper's pick as a filter)."""
    schema = default_schema()
    return {
        "groups": [
            {
                "name": g.name,
                "values": list(g.values),
                "categories": [c for c in schema.category_names if schema.applies(g, c)],
            }
            for g in schema.attribute_groups
        ]
    }


@bp.get("/")
def index():
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return render_template(
        "index.html",
        max_upload_mb=f"{limit / 2**20:g}" if limit else None,
        attribute_groups=attribute_groups(),
        index_poll_ms=int(current_app.config.get("INDEX_POLL_MS", INDEX_POLL_MS)),
        examples=list(current_app.extensions["fashion_search"].examples.values()),
    )


@bp.get("/examples/<name>")
def example(name: str):
    """An example photo, by the name the server listed at start-up: never a path on disk."""
    found = current_app.extensions["fashion_search"].examples.get(name)
    if found is None:
        abort(404)
    response = Response(found.data, mimetype=found.mimetype)
    response.add_etag()
    response.headers["Cache-Control"] = "no-cache"  # a rebuilt demo may write other photos under the same names
    return response.make_conditional(request)
