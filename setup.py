"""Severus: a grid job wrapper (`severus`) and its bookkeeping service (`sbk`)."""
from setuptools import find_packages, setup

setup(
    name="severus",
    version="0.1.0",
    description="Grid job wrapper and bookkeeping service (descendant of SuperB's Severus/SBK4)",
    # The wrapper (severus, severus.pyz) runs on CPython >= 3.9; the server and the client (sbk) need
    # >= 3.11 (tomllib): their requirements below are installed there only, and sbk on an older
    # Python says so in one line (server/__init__.py).
    python_requires=">=3.9",
    packages=find_packages(include=["shared", "wrapper", "wrapper.*", "server", "server.*", "site_configs"]),
    package_data={"server.web": ["templates/*.html", "static/*"], "site_configs": ["*.toml"]},
    include_package_data=True,
    # The wrapper itself needs nothing beyond the standard library (tomli only
    # on Python < 3.11, and psutil, zlib-ng when present); the rest is for the server and the client.
    install_requires=[
        # On every Python: `severus pack` copies tomli's pure-Python sources into severus.pyz for
        # the nodes' Pythons < 3.11, whatever Python packs it (a plain `pip install .` under 3.11
        # had none to copy). Nothing imports it at run time on >= 3.11.
        "tomli>=1.1",
        "flask>=2.2; python_version >= '3.11'",
        "peewee>=3.15; python_version >= '3.11'",
        "requests>=2.25; python_version >= '3.11'",
        "psutil>=5.8",
        "gunicorn>=20; python_version >= '3.11'",
        "psycopg2-binary>=2.9; python_version >= '3.11'",
        "prometheus-client>=0.14; python_version >= '3.11'",
        # The arc backend signs the proxies it delegates to a CE (and sbk demo makes its test PKI).
        "cryptography>=3.1; python_version >= '3.11'",
        # The wrapper's adler32 uses zlib-ng's SIMD code when importable (stdlib zlib otherwise).
        "zlib-ng>=0.4",
        # sbk's client: tables and progress bars on a terminal, `sbk completion bash|zsh`.
        "rich>=13; python_version >= '3.11'",
        "shtab>=1.6; python_version >= '3.11'",
        # The API's typed definitions: they validate requests and make /api/v1/openapi.json (server/api/schemas/).
        "pydantic>=2.6; python_version >= '3.11'",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout", "vermin", "openapi-spec-validator", "tomli",
                 "schemathesis", "selenium", "scitokens"],
    },
    entry_points={
        "console_scripts": [
            "severus = wrapper.cli:main",
            "sbk = server.cli:main",
        ],
        # Sites add their own payload modules here (see wrapper/payload.py).
        "severus.payload_modules": [],
    },
)
