"""Ctrl-C, SIGTERM and SIGHUP as a request to stop a run between two steps."""
import signal


def install(signals, handler):
    """Set handler for each of signals; returns the handlers they had. Outside the
    main thread signals cannot be caught: they stay as they were (and are not returned)."""
    previous = {}
    for signum in signals:
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            pass
    return previous


def restore(previous):
    """Put back the handlers install() returned."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class StopSignals:
    """While active, Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the training loop to stop.

    The first signal only sets ``requested``: the step under way finishes and the
    checkpoint is saved while the handlers are still in place. Every later signal is
    counted in ``ignored`` and does nothing else, so a quick second or third Ctrl-C
    can neither interrupt the save (which must finish: it is what the first one asked
    for) nor end the process in a traceback. To abandon a step at once, a user has
    Ctrl-\\ (SIGQUIT) or kill -9; the last checkpoint on disk stands.

    linger: once a stop was requested, leave the handlers in place on exit, so that
    signals stay ignored while the process prints its last line and ends (the command
    line); otherwise the previous handlers are put back.
    """

    SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)

    def __init__(self, linger=False):
        self.requested = None
        self.ignored = 0
        self.linger = linger
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is None:
            self.requested = signum
        else:
            self.ignored += 1

    def __enter__(self):
        self._previous = install(self.SIGNALS, self._handle)
        return self

    def __exit__(self, *exc):
        if not (self.linger and self.requested is not None):
            restore(self._previous)
        self._previous = {}
        return False


def ignore_stop_signals():
    """Ignore the stop signals from now on (a process that is ending on one)."""
    install(StopSignals.SIGNALS, signal.SIG_IGN)


def signal_name(signum):
    """How a user calls the signal: Ctrl-C for SIGINT, else its name (SIGTERM, SIGHUP)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised where the program stands (see raise_on_termination).
    A BaseException, as KeyboardInterrupt is: no ``except Exception`` swallows it."""

    def __init__(self, signum):
        super().__init__(signal_name(signum))
        self.signum = signum


class raise_on_termination:
    """While active, SIGTERM and SIGHUP raise Terminated, as Ctrl-C raises KeyboardInterrupt,
    so that cleanup on the way out runs (a child process killed and waited for) instead of
    the process ending at once; on exit the previous handlers are put back."""

    SIGNALS = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s)

    def __init__(self):
        self._previous = {}

    def _handle(self, signum, frame):
        raise Terminated(signum)

    def __enter__(self):
        self._previous = install(self.SIGNALS, self._handle)
        return self

    def __exit__(self, *exc):
        restore(self._previous)
        self._previous = {}
        return False
