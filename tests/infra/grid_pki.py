"""The test grid PKI: its code is shipped in server/grid_pki.py (`sbk demo` makes one too);
the names the tests import live on here. The session fixture `grid_pki` is in secure_se.py."""
from server.grid_pki import (AUDIENCE, FULL_SCOPE, INSTALL_HINT, ISSUER, OTHER_DN, USER_DN, VO,
                             GridPKI, make_pki, make_proxy, missing_tools)

__all__ = ["AUDIENCE", "FULL_SCOPE", "INSTALL_HINT", "ISSUER", "OTHER_DN", "USER_DN", "VO", "GridPKI",
           "make_pki", "make_proxy", "missing_tools"]
