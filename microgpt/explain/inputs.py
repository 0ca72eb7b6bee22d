"""What `microgpt explain` reads besides the run: the training log and a benchmark report,
each checked, with one line saying what is wrong (a DataError)."""
import json

from ..data import read_utf8_lines
from ..errors import DataError
from ..jsonfields import finite, is_number
from ..plot import _loss, log_records


def read_log(path, ckpt):
    """The log of this run: {"steps", "loss", "lr" (lists, one per step), "val": [(step, loss)]}.

    A step logged twice (a run resumed from an earlier checkpoint) keeps its last value.
    The log must be this run's: every step within the run's schedule and every learning
    rate the one the run used at that step (train.Trainer.lr_at, compared exactly)."""
    train, val = {}, {}
    try:
        records = list(log_records(path))
    except DataError as e:
        raise DataError(f"--log {e}") from None
    for lineno, step, record in records:
        if step > ckpt.num_steps:
            raise DataError(f"--log {path} is not this run's: it logs step {step}, and the run has "
                            f"{ckpt.num_steps} steps")
        if is_number(record.get("val_loss")):
            if not ckpt.val_fraction:
                raise DataError(f"--log {path} is not this run's: it has a validation loss (line {lineno}), "
                                f"and the run holds out no documents")
            val[step] = _loss(path, lineno, "val_loss", record["val_loss"])
        if is_number(record.get("loss")):
            lr = record.get("lr")
            expected = ckpt.learning_rate * (1 - (step - 1) / ckpt.num_steps)
            if lr != expected:
                raise DataError(f"--log {path} is not this run's: step {step} has learning rate {lr!r}, "
                                f"the run's was {expected!r} (line {lineno})")
            train[step] = (_loss(path, lineno, "loss", record["loss"]), lr)
    if not train:
        raise DataError(f"--log {path} has no training steps (expected lines like "
                        f"{{\"step\": 1, \"loss\": 3.3, \"lr\": 0.01}} from 'microgpt train --log')")
    steps = sorted(train)
    return {"steps": steps, "loss": [train[s][0] for s in steps], "lr": [train[s][1] for s in steps],
            "val": sorted(val.items())}


BENCH_PHASES = ("forward", "backward", "optimizer")


def read_bench(path, config):
    """The engines' times from a `microgpt bench --json` report, for the configuration
    of this run when the report has it, else its first: (config dict, [{engine, median
    ms per step, ms by phase}], whether it is this run's configuration)."""
    lines = read_utf8_lines(path, "bench report")
    try:
        report = json.loads("\n".join(lines))
        configs = report["configs"]
        chosen = configs[0]
        for cfg in configs:
            if all(cfg[k] == getattr(config, k) for k in ("n_layer", "n_embd", "block_size", "n_head")):
                chosen = cfg
                break
        engines = []
        for r in chosen["results"]:
            ms = {phase: finite(r[f"{phase}_ms"]) for phase in BENCH_PHASES}
            if not all(x is not None and x >= 0 for x in ms.values()):
                raise ValueError("a time is not a finite number")
            engines.append({"engine": str(r["engine"]), "step_ms": float(r["ms_per_step"]["median"]),
                            "ms": ms})
        if not engines:
            raise ValueError("no engines")
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        raise DataError(f"--bench {path} is not a report of 'microgpt bench --json'") from None
    same = all(chosen[k] == getattr(config, k) for k in ("n_layer", "n_embd", "block_size", "n_head"))
    return {k: chosen[k] for k in ("n_layer", "n_embd", "block_size", "n_head")}, engines, same
