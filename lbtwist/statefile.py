# -*- test-case-name: tests.test_statefile -*-
"""
The state file: runtime changes made through the admin API (drain, disable,
weight) kept across restarts and reloads.

The file is JSON::

    {"pools": {"app": {"b1": {"state": "draining"}, "b2": {"weight": 3}}}}

An override has a C{state} (C{"draining"} or C{"disabled"}), a C{weight} (a
positive integer), or both.  A missing file means no overrides; a file that
cannot be read or parsed is logged and ignored, and so is each entry that
is not a valid override.  Saving writes a temporary file next to the state
file and renames it over the old one, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict

from twisted.logger import Logger

__all__ = ["OVERRIDE_STATES", "Overrides", "StateFile"]

_log = Logger()

OVERRIDE_STATES = ("draining", "disabled")
"""The states an override may set; C{up} and C{down} are not persisted."""

Overrides = Dict[str, Dict[str, Dict[str, object]]]
"""Overrides by pool name, then backend name: C{{"state": ..., "weight": ...}}."""


def _validOverride(value: dict[str, object]) -> tuple[dict[str, object], list[str]]:
    """
    Check one backend's override as read from the file.

    @param value: The JSON object.
    @return: The override with its valid keys (unknown keys are left out),
        and the names of the keys that have invalid values.
    """
    override: dict[str, object] = {}
    invalid = []
    if "state" in value:
        if value["state"] in OVERRIDE_STATES:
            override["state"] = value["state"]
        else:
            invalid.append("state")
    if "weight" in value:
        weight = value["weight"]
        if type(weight) is int and weight > 0:
            override["weight"] = weight
        else:
            invalid.append("weight")
    return override, invalid


class StateFile:
    """
    A JSON file of runtime overrides, read at startup and rewritten after
    every change.

    @ivar path: The file's path.
    """

    def __init__(self, path: str) -> None:
        """
        @param path: The file's path; its directory must exist to save.
        """
        self.path = path

    def __repr__(self) -> str:
        """
        @return: A description naming the path.
        """
        return f"<StateFile {self.path!r}>"

    def load(self) -> Overrides:
        """
        Read the overrides.

        @return: The valid overrides by pool and backend; empty if the file
            does not exist, cannot be read or is not a valid state file
            (which is logged).
        """
        try:
            with open(self.path, "rb") as f:
                document = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            _log.error(
                "ignoring state file {path}: {error}", path=self.path, error=str(e)
            )
            return {}
        pools = document.get("pools") if isinstance(document, dict) else None
        if not isinstance(pools, dict):
            _log.error('ignoring state file {path}: no "pools" object', path=self.path)
            return {}
        overrides: Overrides = {}
        for pool, backends in pools.items():
            if not isinstance(backends, dict):
                _log.warn(
                    "state file {path}: ignoring pool {pool}: not an object",
                    path=self.path,
                    pool=pool,
                )
                continue
            for backend, value in backends.items():
                if not isinstance(value, dict):
                    _log.warn(
                        "state file {path}: ignoring override of {pool}/{backend}:"
                        " not an object",
                        path=self.path,
                        pool=pool,
                        backend=backend,
                    )
                    continue
                override, invalid = _validOverride(value)
                for key in invalid:
                    _log.warn(
                        "state file {path}: ignoring invalid {key} of "
                        "{pool}/{backend}: {value!r}",
                        path=self.path,
                        pool=pool,
                        backend=backend,
                        key=key,
                        value=value[key],
                    )
                if override:
                    overrides.setdefault(pool, {})[backend] = override
        return overrides

    def save(self, overrides: Overrides) -> None:
        """
        Replace the file's contents with C{overrides}, atomically: the file
        either keeps its old contents or has all of the new ones.

        @param overrides: The overrides by pool and backend; pools without
            backends are left out.
        @raise OSError: If the file cannot be written.
        """
        document = {
            "pools": {
                pool: backends for pool, backends in overrides.items() if backends
            }
        }
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        directory, name = os.path.split(os.path.abspath(self.path))
        fd, temporary = tempfile.mkstemp(
            prefix=f".{name}.", suffix=".tmp", dir=directory
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
