"""``microgpt plot``: the loss curve of a ``train --log`` file (matplotlib, optional)."""
import io
import json
import math
import os
import stat

from . import rundir
from .data import read_utf8_lines, same_file, write_atomic
from .errors import DataError, shown
from .jsonfields import finite, is_number
from .limits import MAX_STEPS as MAX_STEP  # a logged step is one a run can count to

MAX_LOSS = 1e300  # beyond it, the axes' arithmetic (a range, its ticks) can overflow a float


def _step(path, lineno, value):
    """A record's step as an int: a whole number in 0..MAX_STEP, else DataError."""
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise DataError(f"{path} line {lineno}: step {value!r} is not a whole number")
        value = int(value)
    if not 0 <= value <= MAX_STEP:
        raise DataError(f"{path} line {lineno}: step {shown(value)} is out of range (0 to {MAX_STEP})")
    return value


def _loss(path, lineno, key, value):
    """A record's loss as a float: finite, at most MAX_LOSS in size, else DataError."""
    x = finite(value)
    if x is None or abs(x) > MAX_LOSS:
        raise DataError(f"{path} line {lineno}: {key} {shown(value)} is not a finite number "
                        f"of size at most {MAX_LOSS:g}")
    return x


def log_records(path):
    """Each record of a JSON Lines log that has a step: (line number, step, record).
    Other lines (the samples line, anything newer) are skipped; a line that is not
    JSON raises DataError."""
    for lineno, line in enumerate(read_utf8_lines(path, "log file"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {lineno} is not JSON ({e.msg}); "
                            f"expected a log written by 'microgpt train --log'") from None
        except (RecursionError, ValueError) as e:  # nested too deep, an integer too long
            raise DataError(f"{path} line {lineno} cannot be read as a log record "
                            f"({'nested too deep' if isinstance(e, RecursionError) else e})") from None
        if isinstance(record, dict) and is_number(record.get("step")):
            yield lineno, _step(path, lineno, record["step"]), record


def read_log(path):
    """(train, val): lists of (step, loss) from a JSON Lines log; a step logged twice
    (a run resumed from an earlier checkpoint) keeps its last value."""
    train, val = {}, {}
    for lineno, step, record in log_records(path):
        if is_number(record.get("loss")):
            train[step] = _loss(path, lineno, "loss", record["loss"])
        if is_number(record.get("val_loss")):
            val[step] = _loss(path, lineno, "val_loss", record["val_loss"])
    if not train:
        raise DataError(f"{path} has no training steps to plot (expected lines like "
                        f"{{\"step\": 1, \"loss\": 3.3}} from 'microgpt train --log')")
    return sorted(train.items()), sorted(val.items())


def moving_average(values, window):
    out, total = [], 0.0
    for i, x in enumerate(values):
        total += x
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def import_pyplot():
    try:
        import matplotlib
    except ImportError:
        raise DataError("plotting needs matplotlib, which is not installed: "
                        "pip install matplotlib (or: pip install \".[plot]\" in a checkout)") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def check_out(out, what="image file"):
    """Refuse an output path that is there and not a regular file (a FIFO, a device, a
    directory: replacing it would destroy it), or whose folder does not exist."""
    try:
        info = os.stat(out)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(folder):
            raise DataError(f"cannot write {out}: its folder {folder} does not exist") from None
        return
    except OSError as e:
        raise DataError(f"cannot write {out}: {e.strerror or e}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{out} is there and is not a regular file (a device, a FIFO or a directory); "
                        f"name a new or a regular {what}")


def check_out_path(out, run_dir, what, log=None, bench=None):
    """check_out, for a command that reads the run in run_dir (and maybe a --log, a --bench
    report): refuse an out that would replace one of them, or whose folder is not writable."""
    check_out(out, what)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.access(folder, os.W_OK):
        raise DataError(f"cannot write {out}: its folder {folder} is not writable")
    for name, path in (("the run's checkpoint", rundir.checkpoint_path(run_dir)), ("the --log file", log),
                       ("the --bench report", bench)):
        if path and same_file(path, out):
            raise DataError(f"--out {out} is {name}; choose another file")


def plot_log(path, out):
    """Draw the training loss (and its moving average, and any validation loss) into out:
    a temporary file in out's folder renamed over it, so out holds the whole image or
    what it held before. out must be a regular file or not exist, in an existing folder."""
    check_out(out)
    train, val = read_log(path)
    fmt = os.path.splitext(out)[1][1:].lower() or "png"
    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        if fmt not in fig.canvas.get_supported_filetypes():
            raise DataError(f"cannot write a .{fmt} image; use .png, .svg or .pdf")
        steps, losses = [s for s, _ in train], [x for _, x in train]
        window = max(1, len(losses) // 50)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3 if window > 1 else 1.0, linewidth=0.8,
                label="training loss")
        if window > 1:
            ax.plot(steps, moving_average(losses, window), color="tab:blue", linewidth=1.6,
                    label=f"training loss, mean of {window} steps")
        if val:
            ax.plot([s for s, _ in val], [x for _, x in val], "o-", color="tab:orange", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"microgpt: {os.path.basename(path)}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=100)
    except (ArithmeticError, ValueError) as e:  # the accepted numbers are bounded; a last guard
        raise DataError(f"cannot draw {path}: its numbers are out of matplotlib's range ({e})") from None
    finally:
        plt.close(fig)
    check_out(out)  # again: drawing takes a while
    try:
        write_atomic(out, buf.getvalue(), make_folder=False)
    except OSError as e:
        raise DataError(f"cannot write {out}: {e.strerror or e}") from None
