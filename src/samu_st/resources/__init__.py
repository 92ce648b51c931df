"""Files shipped inside the package: the demo's pipeline and step configs."""

from __future__ import annotations

from pathlib import Path


def resource_path(name: str) -> Path:
    """Path of a packaged resource file (``demo.yaml``, ``mini.yaml``)."""
    path = Path(__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"packaged resource {name} is missing from {path.parent}")
    return path
