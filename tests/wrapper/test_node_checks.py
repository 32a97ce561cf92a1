"""RUNNING-01, the node checks of a real `severus run`: what of the site is wrong is found before any transfer."""
import subprocess

from .test_cli import ROOT, Node
from .test_report import event_server  # noqa: F401


def test_a_fallback_site_without_its_configuration_on_the_node_is_002_at_running_01(tmp_path, event_server):
    node = Node(tmp_path, event_server)
    node.site_config.write_text(node.site_config.read_text() + '[stageout]\nfallback_sites = ["GHOST-SITE"]\n')
    proc = subprocess.run(node.argv(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (final,) = event_server.finals()
    assert final["code"] == 2 and final["report"]["failed_step"] == "RUNNING-01", final
    assert "GHOST-SITE" in final["message"] and "fallback" in final["message"], final
    assert not (node.workdir / "software").exists(), "the software was staged"
