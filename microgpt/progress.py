"""What a training run reports as it goes: the per-step line and the JSON Lines log."""
import json
import time

from .errors import DataError


class OutputError(DataError):
    """The log or stdout could not be written (a full disk, /dev/full, a closed pipe).
    saved: the checkpoint written when training stopped for it, if any; broken_pipe: stdout's
    reader went away (`| head`), which ends the command without a word."""
    saved = None
    broken_pipe = False


def format_seconds(s):
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The per-step line: the reference's text, then ms/step and the time left.

    Called as on_step(step, loss, lr, seconds) after each step; with a log (an
    open text file) it also writes one JSON object per step, floats exact.
    """

    def __init__(self, num_steps, out, log=None):
        self.num_steps, self.out, self.log = num_steps, out, log
        self.tty = out.isatty()
        self.t_start = time.perf_counter()
        self.done_at_start = None
        self.line_open = False  # a progress line ended in \r, waiting to be overwritten

    def record(self, obj):
        """One JSON object as one line of the log, if a log is kept."""
        if self.log is not None:
            try:
                self.log.write(json.dumps(obj) + "\n")
                self.log.flush()
            except OSError as e:
                raise OutputError(f"cannot write log file {getattr(self.log, 'name', '')}: "
                                  f"{e.strerror or e}") from None

    def end_line(self):
        """Finish an open progress line so that other output starts on a fresh one."""
        if self.line_open:
            print(file=self.out, flush=True)
            self.line_open = False

    def note(self, text):
        """A line of its own between two steps (a note on how the run is computed)."""
        self.end_line()
        print(text, file=self.out, flush=self.tty)

    def validation(self, step, val_loss):
        """The validation loss after step: a line of its own, and a log record."""
        self.end_line()
        print(f"step {step:4d} / {self.num_steps:4d} | val loss {val_loss:.4f}", file=self.out, flush=self.tty)
        self.record({"step": step, "val_loss": val_loss})

    def __call__(self, step, loss, lr, dt):
        if self.done_at_start is None:
            self.done_at_start = step - 1
            self.t_start = time.perf_counter() - dt
        self.record({"step": step, "loss": loss, "lr": lr, "dt": dt})
        elapsed = time.perf_counter() - self.t_start
        per_step = elapsed / (step - self.done_at_start)
        eta = per_step * (self.num_steps - step)
        line = (f"step {step:4d} / {self.num_steps:4d} | loss {loss:.4f}"
                f" | {per_step * 1000:7.1f} ms/step | eta {format_seconds(eta)}")
        end = "\r" if self.tty and step < self.num_steps else "\n"
        print(line, end=end, file=self.out, flush=self.tty)
        self.line_open = end == "\r"
