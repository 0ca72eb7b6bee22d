"""Ctrl-C and SIGTERM as a request to stop a run between two steps."""
import signal


class StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM ask the training loop to stop.

    The first signal only sets ``requested``: the step under way finishes, so
    the checkpoint taken next is consistent. A second one raises
    KeyboardInterrupt at once (no save; the last checkpoint on disk stands).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self):
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay as they were
                pass
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False


def signal_name(signum):
    """How a user calls the signal: Ctrl-C for SIGINT, else its name (SIGTERM)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
