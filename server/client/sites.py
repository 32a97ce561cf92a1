"""`sbk site`: sites, their thresholds, bunch size, per-session and per-production switches."""
from .arguments import add_action, add_actions, add_command, positive
from .library import BadInput
from .output import counts

SITE_SETTINGS = ("description", "threshold_prepared", "threshold_running", "threshold_failed", "bunch_size")


def cmd_site(client, out, args):
    if args.action == "reset":
        reply = client.reset_site(args.name)
        if out.as_json:
            return out.json(reply)
        return out.line(f"site {reply['site']} reset: its {reply['failed_before']} failed job(s) of the last 24 h no "
                        f"longer count against its failed threshold ({reply['threshold_failed'] or 'none'})")
    if args.action == "list":
        sites = client.sites()
        if out.as_json:
            return out.json(sites)
        return out.table([("site", "name"), ("prepared", lambda s: s["thresholds"]["prepared"]),
                          ("running", lambda s: s["thresholds"]["running"]),
                          ("failed", lambda s: s["thresholds"]["failed"]), ("bunch", "bunch_size"),
                          ("se", lambda s: s["se"].get("access") if s["se"] else None),
                          ("last submission", "last_submission"), ("description", "description")],
                         sites, empty="no sites")
    if args.action == "add":
        site = client.add_site(args.name, **_site_settings(args))
    elif args.action == "set":
        site = client.update_site(args.name, **_site_changes(args))
    else:
        site = client.site(args.name)
    if out.as_json:
        return out.json(site)
    t = site["thresholds"]
    out.pairs([("site", site["name"]), ("thresholds", f"prepared {t['prepared']}, running {t['running']}, "
                                                      f"failed {t['failed']}"),
               ("bunch dimension", site["bunch_size"]), ("description", site["description"]),
               ("se", site["se"] or None), ("jobs", counts(site.get("jobs", {})) or "0"),
               ("last activity", site.get("last_activity")), ("last submission", site["last_submission"])])
    out.line()
    out.table([("session", "session"), ("enabled", "enabled"), ("supported", "supported")],
              site.get("sessions", []), empty="no per-session switches (every session enabled)")
    out.line()
    out.table([("production", "production"), ("allowed", "allowed"), ("last submission", "last_submission"),
               ("by", "last_submitted_by")], site.get("productions", []),
              empty="no per-production switches (every production allowed)")


def _site_settings(args):
    return {key: getattr(args, key) for key in SITE_SETTINGS if getattr(args, key) is not None}


def _site_changes(args):
    """PATCH /sites/NAME of `sbk site set`'s flags; BadInput when there is nothing to change."""
    body = _site_settings(args)
    sessions, productions = {}, {}
    for names, flag, value in ((args.enable_session, "enabled", True), (args.disable_session, "enabled", False),
                               (args.support_session, "supported", True),
                               (args.unsupport_session, "supported", False)):
        for name in names or ():
            sessions.setdefault(name, {})[flag] = value
    for names, value in ((args.allow_production, True), (args.disallow_production, False)):
        for name in names or ():
            productions[name] = {"allowed": value}
    if sessions:
        body["sessions"] = sessions
    if productions:
        body["productions"] = productions
    if args.reload_se:
        body["reload_se"] = True
    if not body:
        raise BadInput("nothing to set: give a threshold, --bunch-size, --description or a switch")
    return body


def add_commands(sub):
    s = add_actions(add_command(sub, "site", "sites: thresholds, bunch size, switches", cmd_site, with_actions=True))
    add_action(s, "list", "all sites")
    add_action(s, "show", "one site with its switches").add_argument("name")
    add_action(s, "reset", "the shifter's reset: failed jobs so far no longer count against the site's failed "
                           "threshold (the jobs stay as they are)").add_argument("name")
    for action, text in (("add", "a new site"), ("set", "change a site")):
        c = add_action(s, action, text)
        c.add_argument("name")
        c.add_argument("--description")
        for key in ("prepared", "running", "failed"):
            c.add_argument(f"--threshold-{key}", type=int, metavar="N")
        c.add_argument("--bunch-size", type=positive, metavar="N")
    for flag in ("enable-session", "disable-session", "support-session", "unsupport-session",
                 "allow-production", "disallow-production"):
        c.add_argument(f"--{flag}", action="append", metavar="NAME")
    c.add_argument("--reload-se", action="store_true", help="reread [se] from site_configs/<name>.toml")
