"""The REST API (JSON) under ``/api``; described in ``webui/openapi.json``."""

from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from foundation.echo import echo
from search.protocol import UnknownQuery
from webui.app import AppState
from webui.document import openapi_document
from webui.forms import RequestError, parse_photo, parse_product, parse_search, read_images

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")


def _state() -> AppState:
    return current_app.extensions["fashion_search"]


def _image_url(product_id: str, photo: int = 0) -> str:
    if photo:
        return url_for("api.product_image", product_id=product_id, photo=photo)
    return url_for("api.product_image", product_id=product_id)


def _with_image_url(product: dict) -> dict:
    """A result with its matching photo's address; a product with each of its photos'."""
    out = {**product, "image_url": _image_url(product["id"], product.get("photo", 0))}
    if "images" in product:
        out["image_urls"] = [_image_url(product["id"], n) for n in range(len(product["images"]))]
    return out


def _require_token() -> None:
    token = _state().token
    if not token:
        raise RequestError("product updates are disabled: start the server with --token", 403)
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise RequestError(
            "product updates need the header 'Authorization: Bearer <token>' with the "
            "token the server was started with",
            401,
        )


@bp.errorhandler(RequestError)
def _request_error(exc: RequestError):
    _state().stats.error(exc.status)
    response = jsonify(error=str(exc))
    response.status_code = exc.status
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="fashion-search"'
    return response


@bp.errorhandler(UnknownQuery)
def _unknown_query(exc: UnknownQuery):
    _state().stats.error(404)
    return jsonify(error=str(exc)), 404


@bp.errorhandler(ValueError)
def _engine_refused(exc: ValueError):
    # The engine checks its inputs too; what it refuses is the client's to fix.
    _state().stats.error(400)
    return jsonify(error=str(exc)), 400


@bp.get("/health")
def health():
    return jsonify(status="ok", products=len(_state().engine))


@bp.get("/index")
def index_status():
    """The index being served, its last re-loads, and the bulk run into its directory (progress)."""
    state = _state()
    watcher = state.watcher
    return jsonify(
        {
            **state.engine.index_status(),
            "reload_s": watcher.interval_s if watcher else None,
            "reload_error": watcher.last_error if watcher else None,
        }
    )


@bp.get("/stats")
def stats():
    state = _state()
    return jsonify({**state.engine.stats(), "server": state.stats.summary()})


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document (``webui.document``) with this server's own categories in ``Category``'s enum."""
    return jsonify(openapi_document(_state().categories))


@bp.get("/categories")
def categories():
    return jsonify(categories=list(_state().categories))


@bp.post("/search")
def search():
    state = _state()
    query = parse_search(request.form, request.files, state.categories)
    t0 = time.perf_counter()
    response = state.engine.search(query).to_json()
    ms = (time.perf_counter() - t0) * 1e3
    state.stats.search("rerun" if query.is_rerun else query.option, ms)
    logger.debug(
        "search %s %s: %d results in %.0f ms",
        query.option or "rerun",
        response["query"].get("category"),
        len(response["results"]),
        ms,
    )
    response["results"] = [_with_image_url(r) for r in response["results"]]
    for garment in response["garments"]:
        garment["results"] = [_with_image_url(r) for r in garment["results"]]
    return jsonify(response)


@bp.get("/products/<product_id>/image")
def product_image(product_id: str):
    photo = parse_photo(request.args.get("photo"))
    data = _state().engine.thumbnail(product_id, photo)
    if data is None:
        which = f"photo {photo} of product" if photo else "image for product"
        raise RequestError(f"no {which} {echo(product_id)}", 404)
    response = Response(data, mimetype="image/jpeg")
    # A product can be replaced under the same id: revalidate, but let the browser keep the bytes.
    response.add_etag()
    response.headers["Cache-Control"] = "no-cache"
    return response.make_conditional(request)


@bp.get("/products/<product_id>")
def product(product_id: str):
    found = _state().engine.product(product_id)
    if found is None:
        raise RequestError(f"no product {echo(product_id)}", 404)
    return jsonify(_with_image_url(found))


@bp.post("/products")
def add_product():
    _require_token()
    state = _state()
    product = parse_product(request.form, state.categories)
    uploads = read_images(request.files)
    added = state.engine.add(product, [u.data for u in uploads])
    logger.info("added product %r", product["id"])
    return jsonify(_with_image_url(added)), 201


@bp.delete("/products/<product_id>")
def delete_product(product_id: str):
    _require_token()
    if not _state().engine.delete(product_id):
        raise RequestError(f"no product {echo(product_id)}", 404)
    logger.info("deleted product %r", product_id)
    return jsonify(deleted=product_id)


def load_openapi() -> dict:
    """The OpenAPI document as the code defines it (``webui.document``)."""
    return openapi_document()
