"""The bookkeeping server's client: the library scripts import (`library.py`), and `sbk`'s managers'
commands over it (`cli.py`, one module per command group, `output.py` for what they print)."""
from .library import (AuthError, BadInput, Client, ClientError, Conflict, NotFound, Page, Refused,
                      Unreachable)

__all__ = ["Client", "Page", "ClientError", "Refused", "NotFound", "Conflict", "BadInput", "Unreachable",
           "AuthError"]
