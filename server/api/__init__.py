"""The HTTP API under /api/v1: one blueprint per resource."""
from werkzeug.routing import IntegerConverter

from shared.schema import MAX_INT

from . import catalog, jobs, meta, people, productions, requests, sessions, sites, submissions

PREFIX = "/api/v1"
BLUEPRINTS = (meta.bp, jobs.bp, catalog.bp, sessions.bp, productions.bp, requests.bp, sites.bp,
              submissions.bp, people.bp)


class IdConverter(IntegerConverter):
    """A row id in a path: digits up to 2**53, so a huge number is a 404, not a database overflow."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_INT)


def register(app):
    app.url_map.converters["id"] = IdConverter
    for bp in BLUEPRINTS:
        app.register_blueprint(bp, url_prefix=PREFIX)
