"""The Flask application: REST API and the search page."""


def __getattr__(name):
    # ``webui.create_app`` without importing Flask when only the command line is needed.
    if name == "create_app":
        from webui import app

        return app.create_app
    if name == "serve":
        from webui import serving

        return serving.serve
    raise AttributeError(f"module 'webui' has no attribute {name!r}")
