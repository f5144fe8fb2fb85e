"""A tiny progress bar for long CLI work (imports, index builds, benchmarks).

Draws ``desc  42%|########        | 420/1000 [00:03<00:04, 140.0 it/s]`` on an interactive stderr and stays
completely silent otherwise: when the stream is not a TTY, when ``CI`` or ``NO_PROGRESS`` is set, or when
``TERM=dumb``. Stdlib only, so it costs no dependency; it writes counts and rates, never item contents.

Usage::

    with Progress(total=len(rows), desc="import") as bar:
        for row in bar.iter(rows):
            ...
    # or: for row in track(rows, desc="import"): ...
    # or: bar.update(n) after each batch
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import TextIO, TypeVar

__all__ = ["Progress", "progress_enabled", "track"]

T = TypeVar("T")
_FALSEY = frozenset({"", "0", "false", "no", "off"})


def progress_enabled(stream: TextIO | None = None) -> bool:
    """True when a bar would be seen by a person: a TTY, not CI, not opted out with ``NO_PROGRESS``."""
    stream = stream if stream is not None else sys.stderr
    for var in ("CI", "NO_PROGRESS"):
        if os.environ.get(var, "").strip().lower() not in _FALSEY:
            return False
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counter with a throttled one-line display; a context manager that always ends its line on exit."""

    def __init__(
        self,
        total: int | None = None,
        *,
        desc: str = "",
        unit: str = "it",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.count = 0
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = progress_enabled(self._stream) if enabled is None else enabled
        self._min_interval = min_interval
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._closed = False
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def iter(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield from ``iterable``, counting each item; takes ``total`` from ``len()`` when not given."""
        if self.total is None and isinstance(iterable, Sized):
            self.total = len(iterable)
        for item in iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        """Add ``n`` finished units; redraws at most every ``min_interval`` seconds."""
        self.count += n
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        if now - self._last_draw >= self._min_interval or (
            self.total is not None and self.count >= self.total
        ):
            self._last_draw = now
            self._draw(now)

    def render(self, now: float | None = None, width: int | None = None) -> str:
        """The bar text for the current state (exposed for tests; no terminal needed)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.count / elapsed
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            frac = min(self.count / self.total, 1.0)
            eta = (self.total - self.count) / rate if rate > 0 else 0.0
            tail = f" {self.count}/{self.total} [{_clock(elapsed)}<{_clock(eta)}, {rate:.1f} {self.unit}/s]"
            width = width if width is not None else shutil.get_terminal_size((80, 20)).columns
            bar_width = max(width - len(head) - len(tail) - 7, 5)
            filled = int(frac * bar_width)
            return f"{head}{frac * 100:3.0f}%|{'#' * filled}{' ' * (bar_width - filled)}|{tail}"
        return f"{head}{self.count} {self.unit} [{_clock(elapsed)}, {rate:.1f} {self.unit}/s]"

    def _draw(self, now: float) -> None:
        try:
            self._stream.write("\r" + self.render(now) + "\x1b[K")
            self._stream.flush()
            self._drawn = True
        except (OSError, ValueError):
            self.enabled = False  # terminal went away: progress is never worth a crash

    def close(self) -> None:
        """Draw the final state and end the line (only if anything was shown)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(time.monotonic())
            if self._drawn:
                try:
                    self._stream.write("\n")
                    self._stream.flush()
                except (OSError, ValueError):
                    pass


def track(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    stream: TextIO | None = None,
    enabled: bool | None = None,
) -> Iterator[T]:
    """Iterate with a bar; the bar is closed when the loop ends, breaks or raises."""
    with Progress(total, desc=desc, unit=unit, stream=stream, enabled=enabled) as bar:
        yield from bar.iter(iterable)
