"""Looking at real process trees from tests, tolerant of processes that end while we look."""
import psutil


def children_matching(pid, needle):
    """The live descendants of `pid` whose command line contains `needle`."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if needle in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:      # a short-lived child just ended
            pass
    return found


def gone(processes):
    """True when every process has ended (a zombie counts as ended)."""
    def dead(p):
        try:
            return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    return all(dead(p) for p in processes)


def pids_gone(pids):
    """True when no process of `pids` is still running (zombies count as ended)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return gone(procs)
