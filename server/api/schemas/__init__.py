"""The API's typed definitions: request bodies, query parameters and replies (pydantic), by concern.

server/api/endpoint.py validates input with them and server/openapi.py makes /api/v1/openapi.json from
them. They hold the shapes (types, ranges, lengths); the rules that need the database or several fields
stay in the core modules (server/production_requests.py, server/sessions.py, ...). Bodies refuse unknown
fields; replies allow more, so that a field added to a view breaks no client, but every field sent today
is declared. The wrapper's messages (job description, events) are shared/'s: wire.py documents them, and
tests/server/test_schema_parity.py proves the two agree.
"""
from .base import *         # noqa: F401,F403
from .jobs import *         # noqa: F401,F403
from .people import *       # noqa: F401,F403
from .production import *   # noqa: F401,F403
from .sites import *        # noqa: F401,F403
from .wire import Event, JobDescription   # noqa: F401
