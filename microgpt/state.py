"""A trainer's state into a Checkpoint and back: weights, Adam's moments, the step."""
import math
import random
from dataclasses import dataclass

from .checkpoint import Checkpoint
from .errors import CheckpointError


def _shaped(flat, sd):
    """A flat list in params order, cut into {name: rows} like the state dict."""
    out, i = {}, 0
    for name, mat in sd.items():
        rows = []
        for row in mat:
            rows.append([float(x) for x in flat[i:i + len(row)]])
            i += len(row)
        out[name] = rows
    return out


def capture(trainer, *, seed, val_fraction, data_path, data_sha256):
    """A checkpoint of trainer now, with the global generator's current state."""
    sd = trainer.sd
    m, v = trainer.optimizer.get_state()
    return Checkpoint(
        config=trainer.config,
        chars=list(trainer.tokenizer.chars),
        weights={name: [[float(p.data) for p in row] for row in mat] for name, mat in sd.items()},
        adam_m=_shaped(list(m), sd),
        adam_v=_shaped(list(v), sd),
        step=trainer.step,
        num_steps=trainer.num_steps,
        learning_rate=trainer.learning_rate,
        seed=seed,
        val_fraction=val_fraction,
        rng_state=random.getstate(),
        data_path=data_path,
        data_sha256=data_sha256,
        batch_size=getattr(trainer, "batch_size", 1),
    )


def _finite_list(xs):
    total = sum(xs)  # finite only if every term is; else look term by term
    return math.isfinite(total) or all(math.isfinite(x) for x in xs)


def all_finite(ckpt):
    """Whether every weight and moment of a checkpoint is a finite number."""
    return all(_finite_list(row) for mats in (ckpt.weights, ckpt.adam_m, ckpt.adam_v)
               for mat in mats.values() for row in mat)


@dataclass
class Snapshot:
    """A trainer's state between two steps, in memory: flat lists in params order."""
    step: int
    weights: list
    m: list
    v: list
    rng_state: tuple


def snapshot(trainer):
    """The trainer's state now, or None if a weight or a moment is not finite."""
    weights = [float(p.data) for p in trainer.params]
    m, v = (list(x) for x in trainer.optimizer.get_state())
    if not (_finite_list(weights) and _finite_list(m) and _finite_list(v)):
        return None
    return Snapshot(trainer.step, weights, m, v, random.getstate())


def checkpoint_of(snap, trainer, *, seed, val_fraction, data_path, data_sha256):
    """A Checkpoint of a Snapshot taken from trainer (the same layout and run)."""
    sd = trainer.sd
    return Checkpoint(config=trainer.config, chars=list(trainer.tokenizer.chars),
                      weights=_shaped(snap.weights, sd), adam_m=_shaped(snap.m, sd),
                      adam_v=_shaped(snap.v, sd), step=snap.step, num_steps=trainer.num_steps,
                      learning_rate=trainer.learning_rate, seed=seed, val_fraction=val_fraction,
                      rng_state=snap.rng_state, data_path=data_path, data_sha256=data_sha256,
                      batch_size=getattr(trainer, "batch_size", 1))


def _check_shapes(what, rows_by_name, sd):
    if list(rows_by_name) != list(sd):
        raise CheckpointError(f"checkpoint {what} hold matrices {_names(rows_by_name)}; "
                              f"its config needs {_names(sd)}")
    for name, mat in sd.items():
        rows = rows_by_name[name]
        shape = (len(rows), len(rows[0]) if rows else 0)
        if len(rows) != len(mat) or any(len(r) != len(m) for r, m in zip(rows, mat)):
            raise CheckpointError(f"checkpoint {what} '{name}' have shape {shape[0]}x{shape[1]}, "
                                  f"its config needs {len(mat)}x{len(mat[0])}")


def _names(d):
    names = list(d)
    return ", ".join(names) if len(names) <= 4 else ", ".join(names[:4]) + f", ... ({len(names)} in all)"


def restore_weights(ckpt, sd):
    """Copy the checkpoint's weights into the Values of sd (a state dict built from
    ckpt.config, whose layout is the model's); wrong names or shapes are refused."""
    _check_shapes("weights", ckpt.weights, sd)
    for name, mat in sd.items():
        for row, saved in zip(mat, ckpt.weights[name]):
            for p, x in zip(row, saved):
                p.data = x


def restore_optimizer(ckpt, trainer):
    """Adam's moments and the step reached, into a trainer over the restored weights."""
    _check_shapes("optimizer moments", ckpt.adam_m, trainer.sd)
    _check_shapes("optimizer moments", ckpt.adam_v, trainer.sd)
    flat_m = [x for mat in ckpt.adam_m.values() for row in mat for x in row]
    flat_v = [x for mat in ckpt.adam_v.values() for row in mat for x in row]
    trainer.optimizer.set_state(flat_m, flat_v)
    trainer.step = ckpt.step
