"""Files written whole or not at all: each goes to a temporary name beside its target first, and replaces
the target only once complete; a failed or interrupted write (a full disk, Ctrl-C) removes the temporary
file and leaves the target as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def atomic(tmp: Path, path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)``, then rename ``tmp`` to ``path``; on any error or interrupt, remove ``tmp``."""
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) through ``path.tmp``."""
    path = Path(path)
    atomic(path.with_name(path.name + ".tmp"), path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
