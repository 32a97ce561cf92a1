"""The HTTP API under /api/v1: one blueprint per resource."""
from . import catalog, jobs, meta, people, productions, requests, sessions, sites, submissions

PREFIX = "/api/v1"
BLUEPRINTS = (meta.bp, jobs.bp, catalog.bp, sessions.bp, productions.bp, requests.bp, sites.bp,
              submissions.bp, people.bp)


def register(app):
    for bp in BLUEPRINTS:
        app.register_blueprint(bp, url_prefix=PREFIX)
