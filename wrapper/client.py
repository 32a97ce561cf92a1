"""HTTP client for the sbk API, standard library only (urllib).

One place turns transport failures into two exceptions the rest of the
wrapper reasons about: ServerUnreachable (try again later) and ServerRefused
(the server answered 4xx: do not repeat the same request).
"""
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

API_PREFIX = "/api/v1"


class ServerError(Exception):
    """Base of the client's errors."""
    status = None


class ServerUnreachable(ServerError):
    """No answer, a timeout, or a 5xx: the request may be retried."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class ServerRefused(ServerError):
    """A 4xx answer: retrying the same request will not help."""

    def __init__(self, status, error, message):
        super().__init__(f"HTTP {status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message


class ServerClient:
    """Talks JSON to `<url>/api/v1` with a bearer token."""

    def __init__(self, url, token, timeout=30.0):
        self.base = url.rstrip("/") + API_PREFIX
        self.token = token
        self.timeout = timeout

    def request(self, method, path, body=None, params=None, data=None,
                content_type="application/json", timeout=None):
        """Send one request; return the decoded JSON reply (or None for an empty one)."""
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            if exc.code >= 500:
                raise ServerUnreachable(f"HTTP {exc.code} from {url}", exc.code) from None
            try:
                reply = json.loads(raw)
                error, message = reply.get("error", "error"), reply.get("message", "")
            except (ValueError, AttributeError):
                error, message = "error", raw[:200].decode("utf-8", "replace")
            raise ServerRefused(exc.code, error, message) from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            # HTTPException: a reply cut short (the server killed mid-answer) is "try again".
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(f"{url}: {reason}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerUnreachable(f"{url}: reply is not JSON") from None

    def get(self, path, **params):
        return self.request("GET", path, params=params or None)

    def post(self, path, body):
        return self.request("POST", path, body=body)
