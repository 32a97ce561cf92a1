"""Batch backends: an explicit registry of name -> class, and one way to build one from config."""
from .base import (BATCH_STATES, FINAL_BATCH_STATES, Backend, BackendError, BackendUnavailable, BatchState, Bunch,
                   JobSpec, split_bunches)
from .arc import ArcBackend
from .htcondor import HTCondorBackend
from .local import LocalBackend
from .slurm import SlurmBackend

BACKENDS = {
    "local": LocalBackend,
    "slurm": SlurmBackend,
    "htcondor": HTCondorBackend,
    "arc": ArcBackend,
}


def create_backend(name, **options):
    """Build the backend `name` with its options (keyword arguments of its class)."""
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise BackendError(f"bad options for backend {name!r}: {exc}") from exc


__all__ = ["ArcBackend", "BACKENDS", "BATCH_STATES", "FINAL_BATCH_STATES", "Backend", "BackendError",
           "BackendUnavailable", "BatchState", "Bunch", "HTCondorBackend", "JobSpec", "LocalBackend", "SlurmBackend",
           "create_backend", "split_bunches"]
