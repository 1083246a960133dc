"""Finished demo runs on disk, each under a key of everything that determines it, so a killed study resumes.

A run's file is `<folder>/<key>.json` with key = the first 20 hex digits of SHA-256 over the canonical JSON of
`{"context": …, "settings": …}`: the context is what every run of a study shares (the experiment's data and model
settings, a fingerprint of the preference pairs and their δ, `STORE_VERSION`), the settings what makes this run
itself (regime, method switches, learning rate, seed, what is measured). A file is used only when the context and
settings stored inside it equal the requested ones, so a run made with any other setting is never mixed in. Files
are written to a temporary name, synced and renamed: a kill leaves a run complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STORE_VERSION = 2  # bump when the code changes what a run with given settings computes (2: one thread per run)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class RunStore:
    """Get and put run records under the key of their settings (module docstring)."""

    def __init__(self, folder: Path, context: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.context = json.loads(_canonical({**context, "store_version": STORE_VERSION}))
        self.hits = 0

    def key(self, settings: dict[str, Any]) -> str:
        payload = _canonical({"context": self.context, "settings": settings})
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def path(self, settings: dict[str, Any]) -> Path:
        return self.folder / f"{self.key(settings)}.json"

    def get(self, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record of a run with exactly these settings and context, else None (also for a file that
        does not parse: it is rerun and overwritten)."""
        path = self.path(settings)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        wanted = json.loads(_canonical(settings))
        if not isinstance(stored, dict) or stored.get("context") != self.context or stored.get("settings") != wanted:
            return None
        self.hits += 1
        return stored["record"]

    def put(self, settings: dict[str, Any], record: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(settings)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(_canonical({"context": self.context, "settings": settings, "record": record}))
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the run's record (a power loss, not only a kill)
        os.replace(tmp, path)
        return path
