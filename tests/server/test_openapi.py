"""The served OpenAPI document is valid and lists every route of the app."""
import re

from openapi_spec_validator import validate


def test_served_spec_is_valid_openapi_3(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    validate(r.json)


def test_spec_covers_every_api_route(app, client):
    spec = client.get("/api/v1/openapi.json").json
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
        served |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented
