"""Graceful stops: SIGTERM (preemption) and SIGINT (Ctrl-C) end the run after the current step."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """While active, SIGTERM and SIGINT only set `signal_name`; the loop checks it between steps.

    A second Ctrl-C interrupts at once, for a run that does not stop quickly enough.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if number == signal.SIGINT and self.signal_name == "SIGINT":
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name

    @property
    def exit_code(self) -> int:
        """0 after SIGTERM (a clean, resumable stop); 130 after Ctrl-C, as shells expect."""
        return 130 if self.signal_name == "SIGINT" else 0
