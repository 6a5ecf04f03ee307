"""The Flask application: REST API and the search page."""


def __getattr__(name):
    # ``webui.create_app`` without importing Flask when only the command line is needed.
    if name in ("create_app", "serve"):
        from webui import app

        return getattr(app, name)
    raise AttributeError(f"module 'webui' has no attribute {name!r}")
