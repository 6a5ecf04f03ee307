"""The search page: one HTML page whose script talks to the JSON API."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("views", __name__)


@bp.get("/")
def index():
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    return render_template("index.html", max_upload_mb=f"{limit / 2**20:g}" if limit else None)
