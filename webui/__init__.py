"""The Flask application: REST API and the search page."""
