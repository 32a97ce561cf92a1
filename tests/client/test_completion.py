"""`sbk completion bash|zsh`: scripts the shells accept, naming sbk's commands and their actions."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("serve", "demo", "jobs", "job", "submit", "resubmit", "kill", "session", "production", "request",
            "site", "token", "stats", "activities", "completion")


def completion(shell):
    return subprocess.run([sys.executable, "-m", "server.cli", "completion", shell], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_bash_completion_is_valid_bash_and_names_the_commands(tmp_path):
    done = completion("bash")
    assert done.returncode == 0 and done.stderr == ""
    script = tmp_path / "sbk.bash"
    script.write_text(done.stdout)
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    named = re.search(r"^_shtab_sbk_subparsers=\(([^)]*)\)$", done.stdout, re.M).group(1).split()
    assert set(COMMANDS) <= set(named), named
    assert "set-status" in done.stdout and "--output" in done.stdout and "complete -o" in done.stdout
    # the completion function answers: the commands after `sbk `, the actions after `sbk request `
    probe = tmp_path / "probe.bash"
    probe.write_text(f"source {script}\n"
                     "COMP_WORDS=(sbk re); COMP_CWORD=1; _shtab_sbk; echo \"${COMPREPLY[@]}\"\n"
                     "COMP_WORDS=(sbk request s); COMP_CWORD=2; _shtab_sbk; echo \"${COMPREPLY[@]}\"\n")
    answered = subprocess.run(["bash", str(probe)], capture_output=True, text=True, timeout=60)
    first, second = answered.stdout.splitlines()[:2]
    assert set(first.split()) == {"reap", "request", "resubmit"}, answered.stdout + answered.stderr
    assert set(second.split()) == {"show", "set-status"}, answered.stdout + answered.stderr


def test_zsh_completion_names_the_commands():
    done = completion("zsh")
    assert done.returncode == 0 and done.stdout.startswith("#compdef sbk")
    for name in COMMANDS:
        assert f"\n    {name}:'" in done.stdout, name
    if shutil.which("zsh"):
        checked = subprocess.run(["zsh", "-n"], input=done.stdout, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("shell", ["fish", ""])
def test_other_shells_are_refused_in_one_line(shell):
    done = completion(shell)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "invalid choice" in done.stderr
