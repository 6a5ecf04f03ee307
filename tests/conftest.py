"""Shared fixtures: a small synthetic catalogue, the shared real datasets (skipped when absent), and
the API's contract (``webui/openapi.json``) checked on every response the web tests receive."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

pytest_plugins = ["tests.webui_api_fixtures"]  # the API tests' engines, apps and clients

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def synth_dump(tmp_path_factory) -> Path:
    """A 120-product synthetic catalogue, made once per test session."""
    from catalogues.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), 120, seed=7, progress=False)


@pytest.fixture(scope="session")
def clothing_dir() -> Path:
    path = SHARED / "clothing"
    if not (path / "images.csv").is_file():
        pytest.skip(f"shared clothing photos not found at {path}")
    return path


@pytest.fixture(scope="session")
def ccp_dir() -> Path:
    path = SHARED / "ccp"
    if not (path / "annotations.jsonl").is_file():
        pytest.skip(f"shared ccp photos not found at {path}")
    return path


# -- the API contract ---------------------------------------------------------------------------


def _jpeg_as_text(data: bytes, **_parameters) -> str:
    """An ``image/jpeg`` body, checked to be a JPEG and handed to its schema as a string.

    The document's schema for it is ``{"type": "string", "contentMediaType": "image/jpeg"}``; OpenAPI 3.1
    schemas are JSON Schema, which has no bytes type, so the bytes are given to it one character per byte.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format != "JPEG":
            raise ValueError(f"an image/jpeg body holds a {im.format} image")
        im.verify()
    return data.decode("latin-1")


def _problem(error: Exception) -> str:
    """What openapi-core found, in a line: each schema error at its JSON path, not the whole body."""
    cause = error.__cause__
    schema_errors = getattr(cause, "schema_errors", None)
    if schema_errors:
        return "; ".join(f"{type(error).__name__} at {e.json_path}: {e.message[:300]}" for e in schema_errors)
    try:
        text = str(error)
    except Exception:  # openapi-core words some errors by decoding the body as UTF-8
        text = f"{type(error).__name__}: {cause!r}"
    return text[:500]


class ApiContract:
    """Checks an API response against ``webui/openapi.json`` with openapi-core.

    The operation is found from the method and the path as the server routes them (the API
    blueprint's own URL rules, so a path finds its operation, or none, exactly as Flask routes it);
    then the status must be one the operation documents, the content type one it documents for
    that status, and the body must validate against that content's schema. A path or method the
    API does not serve must be answered as the document's description promises every refused
    request is: a 4xx JSON ``Error``.
    """

    def __init__(self):
        from flask import Flask
        from jsonschema import Draft202012Validator
        from openapi_core import Config, OpenAPI

        from webui.api import bp, load_openapi

        self.doc = load_openapi()
        self.openapi = OpenAPI.from_dict(
            self.doc, config=Config(extra_media_type_deserializers={"image/jpeg": _jpeg_as_text})
        )
        self._error = Draft202012Validator(self.doc["components"]["schemas"]["Error"])
        routes = Flask("routes")
        routes.register_blueprint(bp)
        self._urls = routes.url_map.bind("localhost")
        self.checked = 0

    def _template(self, rule: str) -> str:
        """The document's path for a Flask URL rule: ``<path:product_id>`` is ``{id}`` there."""
        shape = re.sub(r"<(?:\w+:)?\w+>", "{}", rule)
        for path in self.doc["paths"]:
            if re.sub(r"\{\w+\}", "{}", path) == shape:
                return path
        raise AssertionError(f"the API serves {rule} but webui/openapi.json does not describe it")

    def check(
        self,
        method: str,
        path: str,
        status: int,
        content_type: str | None,
        body: bytes,
        *,
        headers=None,
        undocumented=(),
    ) -> None:
        """Fail when the response breaks the document; ``undocumented``: statuses known to be missing
        from it, whose body must still be an ``Error``."""
        from openapi_core.testing import MockRequest, MockResponse
        from werkzeug.exceptions import MethodNotAllowed, NotFound

        if not (path == "/api" or path.startswith("/api/")):
            return  # the page and its assets: not the API
        where = f"{method} {path} answered {status} {content_type}"
        self.checked += 1
        try:
            rule, args = self._urls.match(path, method, return_rule=True)
        except (NotFound, MethodNotAllowed):
            assert 400 <= status < 500, f"{where}: no operation serves it, yet it was not refused"
            self._check_error(where, content_type, body)
            return
        if status in undocumented:
            assert str(status) not in self._operation(rule.rule, method)["responses"], (
                f"{where}: {status} is documented now; drop it from `undocumented`"
            )
            self._check_error(where, content_type, body)
            return
        template = self._template(rule.rule)
        names = re.findall(r"\{(\w+)\}", template)
        request = MockRequest(
            "http://localhost", method, path, path_pattern=template, view_args=dict(zip(names, args.values()))
        )
        response = MockResponse(body, status, headers=dict(headers or {}), content_type=content_type or "")
        result = self.openapi.unmarshal_response(request, response)
        if result.errors:
            problems = "; ".join(_problem(e) for e in result.errors)
            raise AssertionError(f"{where} breaks webui/openapi.json: {problems}")

    def _operation(self, rule: str, method: str) -> dict:
        return self.doc["paths"][self._template(rule)][method.lower()]

    def _check_error(self, where: str, content_type: str | None, body: bytes) -> None:
        assert (content_type or "").split(";")[0] == "application/json", f"{where}: not JSON"
        errors = [e.message for e in self._error.iter_errors(json.loads(body))]
        assert not errors, f"{where}: not an Error object: {errors}"


@pytest.fixture(scope="session")
def api_contract() -> ApiContract:
    return ApiContract()


@pytest.fixture(scope="session")
def checked_client(api_contract):
    """``checked_client(app)``: a Flask test client whose every response is checked by ``api_contract``.

    ``undocumented``: statuses webui/openapi.json does not list yet (their body must be an Error).
    """
    from flask.testing import FlaskClient

    class CheckedClient(FlaskClient):
        undocumented: tuple = ()

        def open(self, *args, **kwargs):
            response = super().open(*args, **kwargs)
            request = response.request
            api_contract.check(
                request.method,
                request.path,
                response.status_code,
                response.content_type,
                response.get_data(),
                headers=response.headers,
                undocumented=self.undocumented,
            )
            return response

    def make(app, *, undocumented=()):
        app.test_client_class = CheckedClient
        client = app.test_client()
        client.undocumented = tuple(undocumented)
        return client

    return make
