"""
Test doubles shared by the in-memory tests of the HTTP proxy.
"""

from __future__ import annotations

from typing import Any

from lbtwist.config import parseConfig


def makeConfig(**poolOptions: Any) -> Any:
    """
    A one-frontend, one-pool configuration with two backends and no health
    checks.
    """
    pool: dict[str, Any] = {
        "name": "app",
        "backend": [{"url": "http://127.0.0.1:9001"}, {"url": "http://127.0.0.1:9002"}],
        "health": {"check": "none"},
    }
    frontendOptions = poolOptions.pop("frontend", {})
    pool.update(poolOptions)
    frontend = {"name": "web", "listen": "tcp:8080", "pool": "app"}
    frontend.update(frontendOptions)
    # An option given as None is left out (e.g. "pool": None).
    frontend = {key: value for key, value in frontend.items() if value is not None}
    return parseConfig({"frontend": [frontend], "pool": [pool]})
