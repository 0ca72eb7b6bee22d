"""A run: built from its settings (or a checkpoint), and saved.

``build_run`` is the one place that turns settings into a trainer, in the
reference's order of random draws: seed the one global generator, load the
documents, shuffle them, build the tokenizer, hold out the validation
documents, draw the weights. A resumed run then takes the checkpoint's weights,
Adam's moments, its step and the generator's state. ``Run.save`` is the one
way a run is written. The loop that trains it is train.py's ``train``.
"""
import os
import random
from dataclasses import dataclass, field

from . import rundir
from .checkpoint import Checkpoint
from .data import NAMES_SHA256, Tokenizer, load_documents
from .errors import CheckpointError, SettingError
from .limits import size_problem
from .model import Config, init_state_dict
from .state import all_finite, capture, checkpoint_of, restore_optimizer, restore_weights
from .train import Diverged, Stopped, Trainer, split_documents, train  # noqa: F401 (a run's loop; importable here, as before)


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
    batch_size: int = 1        # documents a step (the torch engine; the reference trains one)


# settings that define a run: a resumed run takes them from its checkpoint
RUN_SETTINGS = {
    "seed": lambda c: c.seed,
    "n_layer": lambda c: c.config.n_layer,
    "n_embd": lambda c: c.config.n_embd,
    "block_size": lambda c: c.config.block_size,
    "n_head": lambda c: c.config.n_head,
    "learning_rate": lambda c: c.learning_rate,
    "val_fraction": lambda c: c.val_fraction,
    "batch_size": lambda c: c.batch_size,
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
    """Refuse model sizes above the limits (limits.MAX_SIZES, MAX_PARAMETERS)
    before anything is built; vocab_size None checks the sizes one by one only."""
    sizes = {name: getattr(settings, name) for name in ("n_layer", "n_embd", "block_size", "n_head")}
    if vocab_size is not None:
        sizes["vocab_size"] = vocab_size
    problem = size_problem(sizes)
    if problem is not None:
        raise SettingError(problem)


def make_config(settings, vocab_size):
    check_sizes(settings, vocab_size)
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

    def save(self, directory, snap=None):
        """Checkpoint the run as it stands (the global generator included), or snap (a
        Snapshot taken earlier), into directory; returns the path. The one way a run is
        saved. A state holding a non-finite number is never written: None is returned."""
        if snap is not None:  # a snapshot is finite (snapshot() checked it)
            ckpt = checkpoint_of(snap, self.trainer, **self._identity())
        else:
            ckpt = capture(self.trainer, **self._identity())
            if not all_finite(ckpt):
                return None
        return rundir.save(ckpt, directory)


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
    trainer = make_trainer(engine, sd, config, train_docs, tokenizer, settings, resume)
    if resume is not None:
        restore_optimizer(resume, trainer)
        random.setstate(resume.rng_state)  # where the interrupted run's generator stood
    return Run(engine, settings, docs, val_docs, tokenizer, config, sd, trainer, data_path, data_sha256, resume)


def make_trainer(engine, sd, config, docs, tokenizer, settings, resume=None):
    """torch_train.TorchTrainer for an engine that trains batches (torch), else train.Trainer,
    one document a step (resume: the Checkpoint continued, whose batch size a refusal names)."""
    if getattr(engine, "trains_batches", False):
        from .torch_train import TorchTrainer
        return TorchTrainer(engine, sd, config, docs, tokenizer, settings.steps, settings.learning_rate,
                            batch_size=settings.batch_size)
    if resume is not None and resume.batch_size == settings.batch_size != 1:
        raise SettingError(f"the checkpoint was trained with batches of {resume.batch_size} documents; the "
                           f"{engine.name} engine trains one document a step: continue it with --engine torch")
    if settings.batch_size != 1:
        raise SettingError(f"{{batch_size}} {settings.batch_size}: the {engine.name} engine trains one document "
                           f"a step, as the reference; batches need the torch engine")
    return Trainer(engine, sd, config, docs, tokenizer, settings.steps, settings.learning_rate)
