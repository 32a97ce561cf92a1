"""`sbk me`, `sbk token`, `sbk stats`, `sbk activities`: who I am, API tokens, and the home page."""
from .arguments import add_action, add_actions, add_command, positive
from .library import STATUSES


def cmd_me(client, out, args):
    me = client.me()
    if out.as_json:
        return out.json(me)
    out.pairs([("user", me["name"]), ("groups", me["groups"]), ("privileges", me["privileges"]),
               ("auto-sub", "enabled" if me.get("auto_sub", True) else "disabled")])


def cmd_stats(client, out, args):
    stats = client.stats(user=args.user)
    if out.as_json:
        return out.json(stats)
    out.line("SESSIONS' STATISTICS")
    out.table([("session", "session"), ("user", "user"), ("job launched", "jobs"),
               ("events generated", "events"), ("total wct (s)", "wct")], stats["sessions"], empty="no jobs yet")
    out.line("\nSITES")
    out.table([("site", "site"), *[(s, lambda r, s=s: r["jobs"].get(s, 0)) for s in STATUSES]],
              stats["sites"], empty="no jobs yet")


def cmd_activities(client, out, args):
    acts = client.activities(user=args.user, limit=args.limit)
    if out.as_json:
        return out.json(acts)
    out.table([("time", "time"), ("type", lambda a: a["type"].upper().replace("-", "")),
               ("session", "session"), ("user", "user"), ("info", "info")], acts, empty="no activities")


def cmd_token(client, out, args):
    """API tokens: list (never their hashes), create (shown once), revoke."""
    if args.action == "list":
        tokens = client.tokens(user=args.user)
        if out.as_json:
            return out.json(tokens)
        return out.table([("id", "id"), ("user", "user"), ("label", "label"), ("created", "created_at"),
                          ("expires", lambda t: (t["expires_at"] or "never") + (" (expired)" if t["expired"] else ""))],
                         tokens, empty="no tokens")
    if args.action == "create":
        made = client.create_token(args.label or "", args.expires_days, args.user)
        if out.as_json:
            return out.json(made)
        out.line(made["token"])
        print(f"token {made['id']} of {made['user']}, expires {made['expires_at'] or 'never'}: "
              "shown this once, keep it", file=out.err)
        return None
    gone = client.revoke_token(args.id)
    return out.json(gone) if out.as_json else out.line(f"token {gone['id']} of {gone['user']} revoked")


def add_commands(sub):
    add_command(sub, "me", "who the token belongs to, with groups and privileges", cmd_me)
    c = add_command(sub, "stats", "per session and user: jobs, events, wallclock; jobs per site and status", cmd_stats)
    c.add_argument("--user")
    c = add_command(sub, "activities", "the last activities (submissions, productions and requests created)",
                    cmd_activities)
    c.add_argument("--user")
    c.add_argument("--limit", type=positive, default=10)

    s = add_actions(add_command(sub, "token", "API tokens: yours, or (Developer group) anyone's", cmd_token,
                                with_actions=True))
    add_action(s, "list", "tokens (never their hashes)").add_argument(
        "--user", help="another user's (Developer group)")
    c = add_action(s, "create", "a new token, printed once")
    c.add_argument("--label", help="what the token is for")
    c.add_argument("--expires-days", type=positive, metavar="N", help="expires after N days (default: never)")
    c.add_argument("--user", help="for another user (Developer group)")
    add_action(s, "revoke", "delete a token: it is refused at once").add_argument("id", type=positive)
