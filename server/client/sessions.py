"""`sbk session` and `sbk software`: sessions, their job parameters, step templates and releases."""
from .arguments import add_action, add_actions, add_command, comma_list, key_values


def cmd_session(client, out, args):
    if args.action == "list":
        sessions = client.sessions()
        if out.as_json:
            return out.json(sessions)
        return out.table([("session", "name"), ("module", "payload_module"),
                          ("parameters", lambda s: [p["name"] for p in s["parameters"]]),
                          ("releases", lambda s: [f"{sw['version']} {sw['revision']}" for sw in s["software"]]),
                          ("description", "description")], sessions)
    if args.action == "create":
        session = client.create_session(args.name, args.description or "",
                                        [_parameter(p) for p in args.param or ()], args.payload_module)
    elif args.action == "param":
        param = _parameter(args.param)
        session = client.define_parameter(args.name, param["name"], param["allowed"])
    elif args.action == "step":
        session = client.define_step(args.name, args.step, args.module, key_values(args.param or (), "--param"),
                                     args.arg or [])
    elif args.action == "step-delete":
        session = client.delete_step(args.name, args.step)
    else:
        session = client.session(args.name)
    if out.as_json:
        return out.json(session)
    out.pairs([("session", session["name"]), ("payload module", session["payload_module"]),
               ("description", session["description"])])
    out.line()
    out.table([("parameter", "name"), ("allowed values", lambda p: p["allowed"] or "(any)")],
              session["parameters"], empty="no job parameters")
    out.line()
    out.table([("step", "name"), ("module", "module"), ("parameters", "parameters"), ("args", "args")],
              session.get("steps", []), empty="no step templates")
    out.line()
    software_table(out, session["software"])


def _parameter(text):
    name, _, allowed = text.partition("=")
    return {"name": name, "allowed": comma_list(allowed)}


def software_table(out, releases):
    out.table([("id", "id"), ("session", "session"), ("name", "name"), ("version", "version"),
               ("revision", "revision"), ("workdir", "workdir"), ("exe", "exe"), ("lfn", "lfn"),
               ("retired", lambda sw: "retired" if sw.get("retired") else "")],
              releases, empty="no software releases")


def cmd_software(client, out, args):
    if args.action == "add":
        sw = client.add_software(args.session, name=args.name, version=args.version, revision=args.revision,
                                 lfn=args.lfn, adler32=args.adler32, workdir=args.workdir, exe=args.exe,
                                 env=key_values(args.env, "--env"))
        return out.json(sw) if out.as_json else out.line(
            f"software {sw['name']} {sw['version']} {sw['revision']} added to {sw['session']} (id {sw['id']})")
    if args.action in ("retire", "restore"):   # 409 release-in-use while an open production uses it
        sw = client.retire_software(args.session, args.id, retired=args.action == "retire")
        return out.json(sw) if out.as_json else out.line(
            f"software {sw['name']} {sw['version']} {sw['revision']} of {sw['session']} {args.action}d")
    if args.session:
        releases = client.session(args.session)["software"]
    else:
        releases = [sw for s in client.sessions() for sw in s["software"]]
    return out.json(releases) if out.as_json else software_table(out, releases)


def add_commands(sub):
    s = add_actions(add_command(sub, "session", "sessions and their job parameters", cmd_session, with_actions=True))
    add_action(s, "list", "all sessions")
    add_action(s, "show", "one session").add_argument("name")
    c = add_action(s, "create", "a new session")
    c.add_argument("name")
    c.add_argument("--description")
    c.add_argument("--payload-module", help="payload module (default: the name in lower case)")
    c.add_argument("--param", action="append", metavar="NAME[=V1,V2]", help="a job parameter (repeat)")
    c = add_action(s, "param", "define a job parameter or replace its allowed values")
    c.add_argument("name", help="the session")
    c.add_argument("param", metavar="NAME[=V1,V2]")
    c = add_action(s, "step", "define a step template (a module instance a request may choose with --step), "
                              "or replace one no request uses")
    c.add_argument("name", help="the session")
    c.add_argument("step", help="the step's name")
    c.add_argument("--module", required=True, help="its payload module (generic, fastsim, dq, a site's, ...)")
    c.add_argument("--param", action="append", metavar="NAME=VALUE", help="a default parameter (repeat)")
    c.add_argument("--arg", action="append", metavar="ARG", help="a command-line argument (repeat, in order)")
    c = add_action(s, "step-delete", "remove a step template no request uses")
    c.add_argument("name", help="the session")
    c.add_argument("step")

    s = add_actions(add_command(sub, "software", "software releases of the sessions", cmd_software,
                                with_actions=True))
    add_action(s, "list", "releases").add_argument("session", nargs="?")
    c = add_action(s, "add", "register a release (tarball by LFN)")
    c.add_argument("session")
    for flag in ("name", "version", "lfn", "adler32", "workdir", "exe"):
        c.add_argument(f"--{flag}", required=True)
    c.add_argument("--revision", type=int, default=0)
    c.add_argument("--env", action="append", metavar="K=V")
    for verb, help_text in (("retire", "retire a release: no new production may use it"),
                            ("restore", "make a retired release available again")):
        c = add_action(s, verb, help_text)
        c.add_argument("session")
        c.add_argument("id", type=int, help="the release's id (sbk software list)")
