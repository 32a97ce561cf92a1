"""The client's tests use the server tests' app (SQLite and PostgreSQL) through tests/client/inprocess.py."""
from tests.server.conftest import (  # noqa: F401  (fixtures used here by name)
    api, app, client, db_url, event, new_token, postgres_cluster, production, submit)
