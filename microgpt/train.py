"""The training loop, as the reference runs it, with what a long run needs.

A step is one document: forward (the mean cross-entropy of its positions,
model.document_loss), backward, then Adam with a learning rate that decays
linearly to 0 at the last step (Trainer.train_step). ``train`` is the loop
over the steps: forward, backward, update, log, evaluate, save, with the rules
for stopping on a signal and for divergence as plain checks in it. Sampling
is sampling.py's; building a run (settings, data, weights, resuming) is run.py's.

The seam with the engines: an engine hands over its ``Value``, its ``Adam``
(``Adam(params, beta1, beta2, eps).step(lr_t, step)`` and ``get_state()`` /
``set_state(m, v)``) and a ``graph()`` scope, and may bring a ``DocumentLoss``
(forward: ``loss = DocumentLoss(sd, config)(tokens)``, with ``loss.data`` and
``loss.backward()``) and a ``Sampler`` (model.ModelSampler's interface). The
trainer never asks which engine it runs on; engines import the model, never
this module.
"""
import math
import time
from contextlib import nullcontext

from .errors import ArenaMismatchError
from .model import document_loss, parameters
from .progress import OutputError
from .sampling import make_sampler, sample, top_k_weights  # noqa: F401 (importable from here, as before)
from .signals import StopSignals
from .state import snapshot

BETA1, BETA2, EPS = 0.85, 0.99, 1e-8


class ModelCode:
    """A document's loss built by the model code, every call (pure, compiled)."""

    def __init__(self, sd, config):
        self.sd, self.config = sd, config

    def __call__(self, tokens):
        return document_loss(self.sd, self.config, tokens)


class Trainer:
    """Owns the weights' optimizer state and runs steps 0..num_steps-1.

    train() below drives it through train_step (forward, backward, update, each a
    method), validation_loss, and its step, params, optimizer and sd (state.py
    saves and restores those). An engine that keeps its weights in its own form
    plugs in at those same steps, not with a loop of its own.
    """

    def __init__(self, engine, sd, config, docs, tokenizer, num_steps, learning_rate=0.01):
        self.engine = engine
        self.sd, self.config = sd, config
        self.docs, self.tokenizer = docs, tokenizer
        self.num_steps = num_steps
        self.learning_rate = learning_rate
        self.params = parameters(sd)
        self.optimizer = engine.Adam(self.params, beta1=BETA1, beta2=BETA2, eps=EPS)
        # the loss of a document: the model code every step, or (replay engine) a recording of it
        self.document_loss = getattr(engine, "DocumentLoss", ModelCode)(sd, config)
        self.step = 0  # the next step to run

    def lr_at(self, step):
        return self.learning_rate * (1 - step / self.num_steps)  # linear decay to 0

    def tokens_at(self, step):
        """The tokens of the document step trains on (the documents in turn)."""
        return self.tokenizer.document_tokens(self.docs[step % len(self.docs)])

    def forward(self, tokens):
        """The document's loss: built by the model code, or replayed (replay engine)."""
        return self.document_loss(tokens)

    def backward(self, loss):
        """Gradients of the loss into every node, the parameters included."""
        loss.backward()

    def update(self, lr_t, step):
        """Adam on the parameters at learning rate lr_t; zeroes their gradients."""
        self.optimizer.step(lr_t, step)

    def train_step(self, lap=None):
        """Run one step; returns (step, loss, lr) with step counted from 1.

        lap, if given, is called with "forward", "backward" and "optimizer" as
        each phase ends (the benchmark's clock); it must not touch the model.
        """
        step = self.step
        tokens = self.tokens_at(step)
        lr_t = self.lr_at(step)
        with self.engine.graph():  # the step's nodes are released at the end
            loss = self.forward(tokens)
            if lap is not None:
                lap("forward")
            self.backward(loss)
            if lap is not None:
                lap("backward")
            loss_value = loss.data
            self.update(lr_t, step)
            if lap is not None:
                lap("optimizer")
            del loss  # the pure graph is freed here, inside the step
        self.step += 1
        return step + 1, loss_value, lr_t

    def run(self, on_step=None):
        """Train to num_steps; on_step(step, loss, lr, seconds) after each step.

        The bare loop (tests, benchmarks, scripts); a run's loop, which logs,
        evaluates, saves and stops, is train() below. Whatever on_step raises stops
        the run between two steps, with the weights, the optimizer state and
        self.step consistent (a checkpoint taken then resumes exactly).
        """
        while self.step < self.num_steps:
            t0 = time.perf_counter()
            step, loss, lr = self.train_step()
            if on_step is not None:
                on_step(step, loss, lr, time.perf_counter() - t0)

    def validation_loss(self, docs):
        """Mean document loss over docs: forward only, one graph scope per document,
        no gradient, no random number drawn (so it never changes the run)."""
        total = 0.0
        for doc in docs:
            with self.engine.graph():
                total += self.forward(self.tokenizer.document_tokens(doc)).data
        return total / len(docs)


def split_documents(docs, val_fraction):
    """(train, validation): the last round(len * val_fraction) documents (at least one
    when the fraction is positive) are held out. 0 holds out nothing."""
    if not val_fraction:
        return docs, []
    n_val = max(1, round(len(docs) * val_fraction))
    return docs[:len(docs) - n_val], docs[len(docs) - n_val:]


def count_cut_documents(docs, block_size):
    """How many documents are longer than the block: trained on their first
    block_size + 1 tokens ([BOS] + characters), the rest never seen."""
    return sum(1 for doc in docs if len(doc) + 1 > block_size)


class Stopped(Exception):
    """A signal stopped the run between two steps; its checkpoint was saved.
    ignored: how many more signals came while it was stopping (and did nothing)."""

    def __init__(self, signum, step, where, ignored=0):
        super().__init__(f"stopped at step {step}")
        self.signum, self.step, self.where, self.ignored = signum, step, where, ignored


class Diverged(Exception):
    """Training stopped being finite at step; nothing non-finite was saved.

    what: what happened, in words; saved: the path of the checkpoint written of
    the last finite state, or None; saved_step: its step."""

    def __init__(self, step, what, saved=None, saved_step=None):
        super().__init__(f"training diverged at step {step}: {what}")
        self.step, self.what, self.saved, self.saved_step = step, what, saved, saved_step


SNAPSHOT_EVERY = 10  # steps between the in-memory copies of a run's state (out_dir, no save_every)
NOT_FINITE = "the weights or the optimizer's moments are not finite"
# what an operation raises inside a step when the numbers run away (ArenaMismatchError,
# a ValueError too, is a misuse and is let through)
MATH_ERRORS = (OverflowError, ZeroDivisionError, ValueError)


def train(run, progress, *, eval_every=None, out_dir=None, save_every=None, signals=None):
    """Train run (a run.Run: its trainer, val_docs and save) to its last step,
    reporting each step to progress (a Progress).

    Each step: forward, backward, update (the trainer's train_step), then log,
    evaluate (the validation loss, at the last step and every eval_every steps)
    and save (with out_dir: every save_every steps, and at the end). Returns the
    checkpoint's path (None without out_dir).

    With out_dir, Ctrl-C, SIGTERM or SIGHUP stop the run after the step under
    way: it is saved (later signals are ignored until the save is done) and
    Stopped is raised. signals: the StopSignals to use (default: a new one,
    which restores the handlers on exit). Without out_dir Ctrl-C raises
    KeyboardInterrupt, as always.

    Divergence: a non-finite loss, or a math error (domain, overflow) raised by
    a step, raises Diverged before anything of that step is reported or saved.
    With out_dir and no save_every, the state is copied in memory every
    SNAPSHOT_EVERY steps (and checked finite), and on divergence the last
    finite state is saved: the state before the failing step when a math error
    stopped it (Adam had not run), else the last copy; with save_every the last
    checkpoint saved stays as it is. The log or stdout failing raises
    OutputError, the run saved first (with out_dir, when finite).
    """
    trainer, val_docs = run.trainer, run.val_docs
    stop = signals if signals is not None else StopSignals()
    keep_last = out_dir is not None and not save_every
    last_finite = snapshot(trainer) if keep_last else None  # what a divergence saves
    told_refused = False  # whether the note that a step cannot be replayed was printed

    def diverged(step, what, snap=None):
        snap = snap or last_finite
        if snap is None:
            return Diverged(step, what)
        return Diverged(step, what, run.save(out_dir, snap), snap.step)

    try:
        with stop if out_dir is not None else nullcontext():
            while trainer.step < trainer.num_steps:
                t0 = time.perf_counter()
                try:
                    step, loss, lr = trainer.train_step()  # forward, backward, update
                except ArenaMismatchError:  # Values of two arenas: a misuse, not a divergence
                    raise
                except MATH_ERRORS as e:  # raised before Adam's update: the weights are the last step's
                    raise diverged(trainer.step + 1, str(e) or type(e).__name__,
                                   snapshot(trainer) if keep_last else None) from None
                if not math.isfinite(loss):
                    raise diverged(step, f"the loss is {loss}")
                progress(step, loss, lr, time.perf_counter() - t0)  # log
                refused = getattr(getattr(trainer, "document_loss", None), "refused", None)  # (replay)
                if refused is not None and not told_refused:
                    progress.note(f"microgpt: note: the model code runs every step (the step cannot be "
                                  f"replayed: {refused})")
                    told_refused = True

                if val_docs and (step == trainer.num_steps or (eval_every and step % eval_every == 0)):
                    try:
                        val_loss = trainer.validation_loss(val_docs)  # evaluate
                    except MATH_ERRORS as e:  # (the step just ran: these are the weights' own numbers)
                        raise diverged(step, f"the validation loss: {str(e) or type(e).__name__}",
                                       snapshot(trainer) if keep_last else None) from None
                    if not math.isfinite(val_loss):
                        raise diverged(step, f"the validation loss is {val_loss}")
                    progress.validation(step, val_loss)

                if out_dir and save_every and step % save_every == 0 and step < trainer.num_steps:
                    if run.save(out_dir) is None:  # save
                        raise diverged(step, NOT_FINITE)
                if keep_last and step % SNAPSHOT_EVERY == 0:
                    copy = snapshot(trainer)  # or keep a copy in memory
                    if copy is None:
                        raise diverged(step, NOT_FINITE)
                    last_finite = copy
                if stop.requested is not None:  # a signal came during the step: stop between two
                    break

            if out_dir is None:
                return None
            # saved under the handlers: a signal now is only counted, and the save finishes;
            # the generator as training left it, so sampling repeats what follows
            where = run.save(out_dir)
            if where is None:
                raise diverged(trainer.step, NOT_FINITE)
            if stop.requested is not None:
                raise Stopped(stop.requested, trainer.step, where, stop.ignored)
            return where
    except (OutputError, OSError) as e:
        # the log or stdout failed between two steps: keep the run's progress
        error = e if isinstance(e, OutputError) else OutputError(f"cannot write output: {e.strerror or e}")
        error.broken_pipe = isinstance(e, BrokenPipeError)
        if out_dir is not None:
            error.saved = run.save(out_dir)  # (None when not finite)
        raise error from None
