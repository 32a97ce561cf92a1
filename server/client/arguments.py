"""`sbk`'s client arguments: the flags every command takes, one-line errors, and the value parsers."""
import argparse

from .library import BadInput
from .output import MODES

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """Wrong arguments: one line and exit 2, not the whole usage text."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def common_flags():
    """The flags of every client command: output, server, token."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--output", "-o", choices=MODES, default="table",
                   help="table (aligned, coloured on a terminal), json (the server's JSON) or csv")
    p.add_argument("--json", dest="output", action="store_const", const="json", help="the same as --output json")
    p.add_argument("--url", help="server URL (default: $SBK_URL, the config file, http://127.0.0.1:8080)")
    p.add_argument("--token", help="API token (default: $SBK_TOKEN or the config file)")
    return p


def add_command(sub, name, help_text, handler, with_actions=False):
    """A client command on `sbk`'s subparsers; commands with actions take the common flags after the
    action (`sbk production list --json`), through `add_actions`."""
    p = sub.add_parser(name, help=help_text, parents=[] if with_actions else [common_flags()],
                       description=help_text)
    p.__class__ = OneLineParser
    p.set_defaults(client_command=name, handler=handler)
    return p


def add_actions(p):
    """The actions of a command (`list`, `show`, ...): add each with `action(actions, name, help)`."""
    return p.add_subparsers(dest="action", required=True, parser_class=OneLineParser)


def add_action(actions, name, help_text):
    return actions.add_parser(name, parents=[common_flags()], help=help_text)


def positive(text):
    """A whole number of 1 or more (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be 1 or more")
    return value


def key_values(items, what, sep="="):
    """["K=V", ...] (or another separator) as a dict; BadInput on a malformed item."""
    out = {}
    for item in items or ():
        key, found, value = item.partition(sep)
        if not found or not key:
            raise BadInput(f"{what} must look like NAME{sep}VALUE, not {item!r}")
        out[key.strip()] = value.strip()
    return out


def comma_list(text):
    return [x.strip() for x in text.split(",") if x.strip()] if text else []
