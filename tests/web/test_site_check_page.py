"""The site page shows the site's last node check and the history of reports (Flask test client, SQLite and
PostgreSQL)."""
import re

from tests.server.conftest import Api
from wrapper import check

from .conftest import HOSTILE

ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"


def report(api, site, node, results):
    r = api.post(f"/sites/{site}/checks", json=dict(check.result_dict(results, site), node=node))
    assert r.status_code == 201, r.json
    return r.json


def test_the_site_page_shows_the_last_check_with_its_lines(reader, data):
    page = reader.get("/sites/INFN-T1").get_data(as_text=True)
    assert "No node check reported yet" in page and 'id="site-check"' not in page

    api = Api(reader, data["token"])
    report(api, "INFN-T1", "wn-old.test", [check.CheckResult("python", check.OK, "3.11.2", 0.001)])
    last = report(api, "INFN-T1", "wn07.infn-t1.test", [
        check.CheckResult("python", check.OK, "3.11.2 (/usr/bin/python3)", 0.001),
        check.CheckResult("access", check.CRITICAL, f"INFN-T1: no usable SE access for read {HOSTILE}", 1.25, 4),
        check.CheckResult("se round trip", check.UNKNOWN, "not tested: no usable SE access", 0.0, 4)])

    page = reader.get("/sites/INFN-T1").get_data(as_text=True)
    summary = re.search(r'<p id="site-check-summary">(.*?)</p>', page, re.S).group(1)
    assert '<span class="no">CRITICAL</span>' in summary and "wn07.infn-t1.test" in summary
    assert last["created_at"].replace("T", " ").rstrip("Z") in summary and "reported by dev" in summary
    # the last check's lines only; the history lists every report, newest first
    assert "wn-old.test" not in re.search(r'<p id="site-check-summary">.*?</table>', page, re.S).group(0)
    history = re.search(r'<table id="site-check-history">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r'<td class="path">([^<]+)</td>', history) == ["wn07.infn-t1.test", "wn-old.test"]
    assert "access, se round trip" in history
    rows = re.findall(r'<tr><td class="(\w*)">(\w+)</td><td>([^<]+)</td><td class="num">([\d.]+)</td><td>(.*?)</td></tr>',
                      re.search(r'<table id="site-check">(.*?)</table>', page, re.S).group(1))
    assert [(cls, state, name, seconds) for cls, state, name, seconds, _ in rows] == [
        ("yes", "OK", "python", "0.00"), ("no", "CRITICAL", "access", "1.25"), ("no", "UNKNOWN", "se round trip", "0.00")]
    assert rows[1][4] == f"INFN-T1: no usable SE access for read {ESCAPED}"
    assert HOSTILE not in page
    # The other site has none.
    assert "No node check reported yet" in reader.get("/sites/INFN-TORINO").get_data(as_text=True)
