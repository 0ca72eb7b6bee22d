"""``microgpt plot``: the loss curve of a ``train --log`` file (matplotlib, optional)."""
import io
import json
import os

from .data import read_bytes, write_atomic
from .errors import DataError


def read_log(path):
    """(train, val): lists of (step, loss) from a JSON Lines log; a step logged twice
    (a run resumed from an earlier checkpoint) keeps its last value."""
    try:
        raw = read_bytes(path)
    except DataError as e:
        raise DataError(str(e).replace("input file", "log file", 1)) from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 JSON Lines log") from None
    train, val = {}, {}
    for lineno, line in enumerate(lines, 1):
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
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue  # the samples line, or anything newer we do not plot
        if isinstance(record.get("loss"), (int, float)):
            train[record["step"]] = record["loss"]
        if isinstance(record.get("val_loss"), (int, float)):
            val[record["step"]] = record["val_loss"]
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
                        "pip install matplotlib (or: pip install 'microgpt-arena[plot]')") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def plot_log(path, out):
    """Draw the training loss (and its moving average, and any validation loss) into out."""
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
    finally:
        plt.close(fig)
    try:
        write_atomic(out, buf.getvalue())
    except OSError as e:
        raise DataError(f"cannot write {out}: {e.strerror or e}") from None
