"""A run: built from its settings (or a checkpoint), trained, evaluated and saved.

``build_run`` is the one place that turns settings into a trainer, in the
reference's order of random draws: seed the one global generator, load the
documents, shuffle them, build the tokenizer, hold out the validation
documents, draw the weights. A resumed run then takes the checkpoint's weights,
Adam's moments, its step and the generator's state. ``train`` runs the steps
and decides when to evaluate and to save.
"""
import math
import os
import random
from dataclasses import dataclass, field

from . import rundir
from .checkpoint import Checkpoint, size_problem
from .data import NAMES_SHA256, Tokenizer, load_documents
from .errors import ArenaMismatchError, CheckpointError, SettingError
from .model import Config, init_state_dict
from .progress import OutputError
from .signals import StopSignals
from .state import all_finite, capture, checkpoint_of, restore_optimizer, restore_weights, snapshot
from .train import Trainer, split_documents


@dataclass
class RunSettings:
    """What defines a run. The defaults are the reference run's."""
    input: str = None          # the text to train on; None: the names data set
    seed: int = 42
    n_layer: int = Config.n_layer
    n_embd: int = Config.n_embd
    block_size: int = Config.block_size
    n_head: int = Config.n_head
    init_std: float = Config.init_std
    steps: int = 1000          # the learning rate decays linearly to 0 at the last step
    learning_rate: float = 0.01
    val_fraction: float = 0.0  # the last documents after the shuffle are held out


# settings that define a run: a resumed run takes them from its checkpoint
RUN_SETTINGS = {
    "seed": lambda c: c.seed,
    "n_layer": lambda c: c.config.n_layer,
    "n_embd": lambda c: c.config.n_embd,
    "block_size": lambda c: c.config.block_size,
    "n_head": lambda c: c.config.n_head,
    "learning_rate": lambda c: c.learning_rate,
    "val_fraction": lambda c: c.val_fraction,
}


def resume_settings(settings, ckpt, given=frozenset()):
    """Fill settings with the checkpoint's run settings; refuse the given ones that differ.

    settings: any object with RunSettings' attributes (the parsed command line, say);
    given: the names of the settings the user chose. The total of steps may be raised.
    """
    for name, saved in RUN_SETTINGS.items():
        value = saved(ckpt)
        if name in given and getattr(settings, name) != value:
            raise SettingError(f"{{{name}}} {getattr(settings, name)} differs from the checkpoint's {value}: "
                               f"a resumed run keeps the settings it started with")
        setattr(settings, name, value)
    if "steps" not in given:
        settings.steps = ckpt.num_steps
    elif settings.steps < ckpt.step:
        raise SettingError(f"{{steps}} {settings.steps} is fewer than the {ckpt.step} steps "
                           f"the checkpoint has done")


def check_sizes(settings, vocab_size=None):
    """Refuse model sizes above the limits (checkpoint.MAX_SIZES, MAX_PARAMETERS)
    before anything is built; vocab_size None checks the sizes one by one only."""
    sizes = {name: getattr(settings, name) for name in ("n_layer", "n_embd", "block_size", "n_head")}
    if vocab_size is not None:
        sizes["vocab_size"] = vocab_size
    problem = size_problem(sizes)
    if problem is not None:
        raise SettingError(problem)


def make_config(settings, vocab_size):
    check_sizes(settings, vocab_size)
    if settings.n_embd % settings.n_head:
        raise SettingError(f"{{n_embd}} {settings.n_embd} is not divisible by {{n_head}} {settings.n_head}")
    return Config(vocab_size=vocab_size, n_layer=settings.n_layer, n_embd=settings.n_embd,
                  block_size=settings.block_size, n_head=settings.n_head, init_std=settings.init_std)


@dataclass
class Run:
    engine: object
    settings: RunSettings
    docs: list                 # every document, in the shuffled order
    val_docs: list             # the held-out ones (the trainer has the rest)
    tokenizer: Tokenizer
    config: Config
    sd: dict                   # the state dict: {name: rows of Values}
    trainer: Trainer
    data_path: str
    data_sha256: str
    resumed: Checkpoint = field(default=None)  # the checkpoint it continues, if any

    def _identity(self):
        return dict(seed=self.settings.seed, val_fraction=self.settings.val_fraction,
                    data_path=os.path.abspath(self.data_path), data_sha256=self.data_sha256)

    def save(self, directory):
        """Checkpoint the run as it stands, the global generator included; returns the path.
        A state holding a non-finite number is never written: NonFinite is raised instead."""
        ckpt = capture(self.trainer, **self._identity())
        if not all_finite(ckpt):
            raise NonFinite("the weights or the optimizer's moments are not finite")
        return rundir.save(ckpt, directory)

    def save_snapshot(self, snap, directory):
        return rundir.save(checkpoint_of(snap, self.trainer, **self._identity()), directory)


def build_run(engine, settings, resume=None):
    """A Run of settings on engine; resume: a Checkpoint to continue (settings must
    already be its own: see resume_settings). Draws from the global generator."""
    random.seed(settings.seed)
    input_path = settings.input
    if resume is not None and input_path is None:
        # the names data set is found (or fetched) again; any other file where it was
        input_path = None if resume.data_sha256 == NAMES_SHA256 else resume.data_path
    docs, data_path, data_sha256 = load_documents(input_path)
    if resume is not None and data_sha256 != resume.data_sha256:
        raise CheckpointError(
            f"{data_path} is not the data the checkpoint was trained on (SHA-256 {data_sha256[:16]}..., "
            f"the checkpoint's {resume.data_path} had {resume.data_sha256[:16]}...)")
    random.shuffle(docs)
    tokenizer = Tokenizer.from_documents(docs)
    if resume is not None:
        if tokenizer.chars != resume.chars:
            raise CheckpointError("the checkpoint's vocabulary does not match its data file")
        config = resume.config
    else:
        config = make_config(settings, tokenizer.vocab_size)
    train_docs, val_docs = split_documents(docs, settings.val_fraction)
    if not train_docs:
        raise SettingError(f"{{val_fraction}} {settings.val_fraction} holds out all {len(docs)} documents: "
                           f"none is left to train on")
    sd = init_state_dict(engine.Value, config)
    if resume is not None:
        restore_weights(resume, sd)
    trainer = Trainer(engine, sd, config, train_docs, tokenizer, settings.steps, settings.learning_rate)
    if resume is not None:
        restore_optimizer(resume, trainer)
        random.setstate(resume.rng_state)  # where the interrupted run's generator stood
    return Run(engine, settings, docs, val_docs, tokenizer, config, sd, trainer, data_path, data_sha256, resume)


class Stopped(Exception):
    """A signal stopped the run between two steps; its checkpoint was saved.
    ignored: how many more signals came while it was stopping (and did nothing)."""

    def __init__(self, signum, step, where, ignored=0):
        super().__init__(f"stopped at step {step}")
        self.signum, self.step, self.where, self.ignored = signum, step, where, ignored


SNAPSHOT_EVERY = 10  # steps between the in-memory copies of a run's state (out_dir, no save_every)


class NonFinite(Exception):
    """The training state stopped being finite (raised inside a step's bookkeeping)."""


class Diverged(Exception):
    """Training stopped being finite at step; nothing non-finite was saved.

    what: what happened, in words; saved: the path of the checkpoint written of
    the last finite state, or None; saved_step: its step."""

    def __init__(self, step, what, saved=None, saved_step=None):
        super().__init__(f"training diverged at step {step}: {what}")
        self.step, self.what, self.saved, self.saved_step = step, what, saved, saved_step


def train(run, progress, *, eval_every=None, out_dir=None, save_every=None, signals=None):
    """Train run to its last step, reporting each step to progress (a Progress).

    The validation loss is reported at the last step and every eval_every steps;
    with out_dir the run is saved every save_every steps and at the end, and
    Ctrl-C, SIGTERM or SIGHUP stop it after the step under way: it is saved (later
    signals are ignored until the save is done) and Stopped is raised. signals: the
    StopSignals to use (default: a new one, which restores the handlers on exit).
    Returns the checkpoint's path (None without out_dir).

    A non-finite loss, or a math error (domain, overflow) raised by a step,
    raises Diverged before anything of that step is reported or saved. With
    out_dir and no save_every, the state is copied in memory every
    SNAPSHOT_EVERY steps (and checked finite), and on divergence the last
    finite state is saved: the state before the failing step when a math error
    stopped it (Adam had not run), else the last copy; with save_every the last
    checkpoint saved stays as it is.
    """
    trainer = run.trainer
    stop = signals if signals is not None else StopSignals()
    keep_last = out_dir is not None and not save_every
    last = {"snap": snapshot(trainer) if keep_last else None}

    class _Stop(Exception):
        pass

    def on_step(step, loss, lr, dt):
        if not math.isfinite(loss):
            raise NonFinite(f"the loss is {loss}")
        progress(step, loss, lr, dt)
        refused = getattr(trainer.document_loss, "refused", None)  # (replay: a recording refused)
        if refused is not None and not last.get("refused"):
            last["refused"] = True
            progress.note(f"microgpt: note: the model code runs every step (the step cannot be "
                          f"replayed: {refused})")
        if run.val_docs and (step == trainer.num_steps or (eval_every and step % eval_every == 0)):
            val_loss = trainer.validation_loss(run.val_docs)
            if not math.isfinite(val_loss):
                raise NonFinite(f"the validation loss is {val_loss}")
            progress.validation(step, val_loss)
        if out_dir and save_every and step % save_every == 0 and step < trainer.num_steps:
            run.save(out_dir)
        if keep_last and step % SNAPSHOT_EVERY == 0:
            snap = snapshot(trainer)
            if snap is None:
                raise NonFinite("the weights or the optimizer's moments are not finite")
            last["snap"] = snap
        if stop.requested is not None:
            raise _Stop

    def diverged(step, what, snap=None):
        snap = snap or last["snap"]
        if snap is None:
            return Diverged(step, what)
        return Diverged(step, what, run.save_snapshot(snap, out_dir), snap.step)

    try:
        if out_dir is None:
            trainer.run(on_step=on_step)  # Ctrl-C: KeyboardInterrupt, as always
            return None
        with stop:
            try:
                trainer.run(on_step=on_step)
            except _Stop:
                pass
            # saved under the handlers: a signal now is only counted, and the save finishes;
            # the generator as training left it, so sampling repeats what follows
            where = run.save(out_dir)
            if stop.requested is not None:
                raise Stopped(stop.requested, trainer.step, where, stop.ignored)
            return where
    except NonFinite as e:
        raise diverged(trainer.step, str(e)) from None
    except (OutputError, OSError) as e:
        # the log or stdout failed between two steps: keep the run's progress
        error = e if isinstance(e, OutputError) else OutputError(f"cannot write output: {e.strerror or e}")
        if out_dir is not None:
            try:
                error.saved = run.save(out_dir)
            except NonFinite:
                pass
        raise error from None
    except (OverflowError, ZeroDivisionError, ValueError) as e:
        if isinstance(e, ArenaMismatchError):
            raise
        # raised inside a step, before Adam's update: the weights are still the last step's
        now = snapshot(trainer) if keep_last else None
        raise diverged(trainer.step + 1, str(e) or type(e).__name__, now) from None
