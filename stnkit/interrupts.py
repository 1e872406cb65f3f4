"""Ctrl-C and SIGTERM at every phase of start-up end it as an interruption (exit 130).

Python turns SIGINT into :class:`KeyboardInterrupt` but lets SIGTERM end the process at once:
exit 143, no message, and whatever start-up had begun (a run name's lock claim, a run file being
created) left behind. :func:`install` makes SIGTERM a ``KeyboardInterrupt`` too, from the first
moment of the command line, so modules loading, a recipe validating or data loading all stop the
same way. :class:`Deferral` holds both signals back while a run file is made, and hands any that
came to the run's own handler once it is in place: no signal lands between the file's creation
and the handler that ends a run cleanly, as ``interrupted`` with a checkpoint.

This module imports only the standard library: it is installed before anything heavy loads.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["SIGNALS", "Deferral", "install"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> Callable[[], None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` from now on; returns a function that puts
    the previous handlers back. Does nothing outside the main thread (signals go only there)."""
    if not _main_thread():
        return lambda: None
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, _interrupt)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


class Deferral:
    """Inside ``with``: SIGINT and SIGTERM are recorded, not acted on.

    :meth:`hand_over` puts the previous handlers back and returns the signals that came, for the
    next handler to act on. Left without a hand-over (start-up failed), the recorded signals are
    delivered to the previous handlers on the way out.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}
        self._active = False

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def __enter__(self) -> Deferral:
        if _main_thread():
            self._previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
            for signum in SIGNALS:
                signal.signal(signum, self._record)
            self._active = True
        return self

    def _restore(self) -> None:
        if self._active:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._active = False

    def hand_over(self) -> list[int]:
        """Stop holding signals back; return those that came (to be acted on by the caller)."""
        self._restore()
        received, self.received = self.received, []
        return received

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        received = self.hand_over()
        for signum in received:
            handler = self._previous.get(signum, signal.SIG_DFL)
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
