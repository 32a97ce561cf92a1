"""severus: the job wrapper that runs on worker nodes.

Standard library only at import time; gfal2, psutil and requests are used
when importable. Ships as one file, severus.pyz (see wrapper/pack.py).
"""
__version__ = "0.1.0"
