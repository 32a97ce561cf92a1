"""The client library talking to the Flask app in-process: a requests adapter over Flask's test client
(the httpx WSGITransport idea), so tests use the real Client, its error mapping included."""
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from server.client import Client

URL = "http://sbk.test"


class FlaskAdapter(BaseAdapter):
    """Sends each prepared request to a Flask test client and answers with its response."""

    def __init__(self, test_client):
        super().__init__()
        self.test_client = test_client

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        answer = self.test_client.open(url.path, method=request.method, query_string=url.query,
                                       headers=dict(request.headers), data=request.body)
        response = requests.Response()
        response.status_code, response._content = answer.status_code, answer.data
        response.headers = CaseInsensitiveDict(answer.headers)
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        return response

    def close(self):
        pass


def in_process(api, token=None):
    """A Client whose requests reach `api`'s app (tests/server/conftest.Api) with its token (or `token`)."""
    http = requests.Session()
    http.mount(URL, FlaskAdapter(api.client))
    return Client(URL, token or api.token, http=http)
