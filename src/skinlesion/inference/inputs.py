"""Turning the paths a user names (files and folders) into the image files to score."""

from __future__ import annotations

from pathlib import Path

from skinlesion.data.scan import iter_class_files


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, and every non-hidden file below each folder given (sorted, links not followed)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(f for f in iter_class_files(p, "") if not f.name.startswith("."))
        else:
            out.append(p)
    return out
