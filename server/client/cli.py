"""`sbk`'s managers' commands over the client library, and the one place that turns the library's
errors into one line on stderr and an exit code.

Settings come in layers: the config file (`$XDG_CONFIG_HOME/sbk/config.toml` or
`~/.config/sbk/config.toml`, keys `url`, `token`, `timeout_s`), then `SBK_URL` and
`SBK_TOKEN`, then `--url` / `--token`.
"""
import sys

from . import jobs, people, productions, sessions, sites, submissions
from .arguments import EXIT_USAGE, OneLineParser
from .library import AuthError, BadInput, Client, ClientError, Unreachable
from .output import Output

EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_AUTH = 1, 3, 4
# The most specific class first; any other ClientError (Refused, NotFound, Conflict) is EXIT_REFUSED.
EXIT_CODES = ((BadInput, EXIT_USAGE), (Unreachable, EXIT_UNREACHABLE), (AuthError, EXIT_AUTH),
              (ClientError, EXIT_REFUSED))
COMMAND_GROUPS = (people, sessions, productions, sites, submissions, jobs)
SHELLS = ("bash", "zsh")


def exit_code(exc):
    return next(code for kind, code in EXIT_CODES if isinstance(exc, kind))


def add_commands(sub):
    """Add the client commands to `sbk`'s subparsers (each group's module adds its own)."""
    before = set(sub.choices)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    for name in set(sub.choices) - before:
        sub.choices[name].set_defaults(func=run)


def run(args, stream=None, err=None):
    """Run a client command: its one line on stderr and exit code when it fails."""
    err = err or sys.stderr
    try:
        client = Client.configured(args.url, args.token)
        args.handler(client, Output(args.output, stream, err), args)
        return 0
    except ClientError as exc:
        print(f"sbk {' '.join(filter(None, (args.client_command, getattr(args, 'action', None))))}: {exc}",
              file=err)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"sbk {args.client_command}: interrupted", file=err)
        return 130


def add_completion(sub, root):
    """`sbk completion bash|zsh`: the completion script of the whole `sbk` parser (`root`)."""
    c = sub.add_parser("completion", help="print the shell completion script: "
                                          "eval \"$(sbk completion bash)\", or sbk completion zsh > ~/.zfunc/_sbk")
    c.__class__ = OneLineParser
    c.add_argument("shell", choices=SHELLS)
    c.set_defaults(func=lambda args: print_completion(root, args.shell))


def print_completion(root, shell, stream=None):
    import shtab   # only here: nothing else of sbk needs it
    print(shtab.complete(root, shell), file=stream or sys.stdout)
    return 0
