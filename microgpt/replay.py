"""The replay engine: the compiled engine, with the training step recorded once
and replayed in C (some 385 lines: training's and sampling's recorders share record()).

The first step runs the model code through the compiled engine over as many
positions as the document needs, rounded up to a power of two (the document's
tokens, repeated to fill them: a recording's token and target slots do not
depend on which tokens it was made with) while the arena notes what a replay
needs (src/tape/tape.h): where each position ends, the probs each position's loss
picks its target from, the token table's rows the positions read, and the
numbers derived from data (the softmax maxima, through ``model.max_data``);
each ``model.dot`` is recorded as one node over its operands (``record``).
Every later step of up to that many positions is replayed from the recording
in C: forward, backward, with the same floats, bit for bit; that first step
too, replayed from the fresh recording. A longer document records again, twice
as long (at most the block): names of up to 16 characters never pay for a
block of 64 positions. Adam is the compiled engine's, in C too. The sampler
(Sampler) is recorded the same way, once per temperature and length, and
replayed forward a position at a time; after training it needs no recording
of its own: the training tape serves it (Sampler.reuse, replay_trained.py).

What a recording cannot serve goes back to the model code, never to a guess:
a recording that met something it cannot follow (a ``.data`` read, a
user-defined node, a number derived from data in arithmetic) is refused and
every step runs the model code; an operation that raises, or a gradient that
is not finite, redoes that step on the model code, which raises or computes
exactly as the reference does.
"""
import contextlib

from . import _engine
from ._engine import Adam, ArenaMismatchError, StaleValueError, Value, default_arena, graph  # noqa: F401
from .model import ModelSampler, document_loss, parameters
from .replay_trained import TrainingTape, trained_document

name = "replay"
checked = _engine.checked

# A recording is checked against depth-first walks for other targets: every
# other target when the graph is small, else this many (each walk is one pass
# over the recorded graph).
FULL_CHECK_NODES = 5_000_000
SOME_TARGETS = 2

# A sampler's recording costs about what the model code takes for 4 to 8
# blocks of positions (its sums compact; measured at n_embd 16 and 64, n_layer
# 1 and 4); the sampler records once
# the model code has computed this many blocks' worth for that temperature, so
# a few names never pay for a recording, and many pay for it at most twice.
# When the number of documents to come is known (Sampler.expect), it records as
# soon as those, each as long as the longest so far (before the first: as the
# caller guessed, e.g. the training documents' median), would cost the model
# code more than that: 20 samples of a block of 64 record at once.
RECORD_AFTER_BLOCKS = 4

# The shortest recording: a recording's cost grows with its positions, and
# recording again for a longer document costs at most what the longer one
# does, so lengths double from here (at most the block). 16 for training: a
# default block, and the names' longest (15 characters): the names never record
# twice. 8 for a sampler, whose documents are mostly short (a sampled name
# rarely needs more than 8 positions): it records sooner and holds less.
MIN_RECORDED = 16
MIN_SAMPLER_RECORDED = 8


@contextlib.contextmanager
def compact_sums(arena):
    """Inside: Value.dot appends each sum of float products on arena as one node
    (_engine.set_compact), for a forward whose values only are read; the setting
    before is put back on the way out."""
    was = _engine.set_compact(arena, True)
    try:
        yield arena
    finally:
        _engine.set_compact(arena, was)


def recorded_length(n, block_size, shortest=MIN_RECORDED):
    """Positions to record for a document of n positions: the next power of two
    from `shortest`, at most the block. Lengths double, so the recordings of a
    run cost at most twice what its longest document's does."""
    length = shortest
    while length < n:
        length *= 2
    return min(length, block_size)


class ReplayedLoss:
    """The loss of a replayed step: ``.data`` now, ``.backward()`` in C, once.

    A second backward of one graph adds onto the gradients the first left in
    its inner nodes (the Value engines keep them); a replay keeps none, so it
    raises rather than give other numbers."""

    __slots__ = ("data", "_runner", "_tokens", "_serial", "_backward_done")

    def __init__(self, runner, tokens, data, serial):
        self.data, self._runner, self._tokens, self._serial = data, runner, tokens, serial
        self._backward_done = False

    def backward(self):
        if self._backward_done:
            raise RuntimeError("backward() of a replayed loss runs once: the replay keeps no inner "
                               "gradients for a second pass to add onto (the compiled engine's Value does)")
        self._runner.backward(self)
        self._backward_done = True


class Recorder:
    """What a recording of the model code reads of the weights, built once: the
    state dict, the config, the parameters in order and where the token
    embedding sits among them. DocumentLoss and Sampler are recorders."""

    def __init__(self, sd, config):
        self.sd, self.config = sd, config
        self.params = parameters(sd)
        self.table = token_table(sd)

    def make_tape(self, tokens, positions, temperature=None, forward_only=False):
        """record() over these weights: (tape, None) or (None, why not)."""
        return record(self.sd, self.config, self.params, self.table, tokens, positions, temperature, forward_only)


class DocumentLoss(Recorder):
    """document_loss(sd, config, tokens), recorded (as many positions as the
    documents have needed, rounded up) and replayed.

    Call it with a document's tokens inside a ``graph()`` scope; it returns the
    loss (a ReplayedLoss, or a Value when the model code ran), whose
    ``backward()`` adds the gradients into the parameters' ``.grad``.
    """

    def __init__(self, sd, config):
        super().__init__(sd, config)
        self.tape = None       # the recording (tape.n_pos positions)
        self.refused = None    # why steps cannot be replayed (then the model code runs every step)
        self.recordings = 0
        self.model_steps = 0   # steps the model code computed where no replay could
        self._serial = 0

    def __call__(self, tokens):
        n = min(self.config.block_size, len(tokens) - 1)
        tokens = list(tokens[:n + 1])
        if self.refused is None and (self.tape is None or n > self.tape.n_pos):
            self.record(tokens)  # the first document, or one longer than the recording
        if self.tape is not None and n <= self.tape.n_pos:
            try:
                loss = self.tape.forward(tokens)
            except ValueError:  # a token outside the vocabulary: the model code says what
                loss = None
            if loss is not None:
                self._serial += 1
                return ReplayedLoss(self, tokens, loss, self._serial)
        self.model_steps += 1
        return document_loss(self.sd, self.config, tokens)

    def lend(self):
        """The tape for forwards that are not a step's (a sampler's document),
        and a token: the tape holds that borrower's positions while holds(token).
        A loss of an earlier forward can no longer run backward (its values are gone)."""
        self._serial += 1
        return self.tape, self._serial

    def holds(self, token):
        """No forward since the lend that gave this token (replayed steps count)."""
        return token == self._serial

    def backward(self, loss):
        if loss._serial != self._serial:
            raise RuntimeError("backward() of a replayed loss must follow its own forward")
        if not self.tape.backward():  # a gradient that is not finite: the model code decides
            self.model_steps += 1
            document_loss(self.sd, self.config, loss._tokens).backward()

    def record(self, tokens):
        """Record recorded_length(positions of tokens) positions (the document's
        tokens, repeated); keep the tape or the reason there is none. A tape it
        replaces is freed first: one recording is held at a time."""
        n = min(self.config.block_size, len(tokens) - 1)
        self.tape = None
        self.tape, self.refused = self.make_tape(tokens, recorded_length(n, self.config.block_size))
        self.recordings += 1


def token_table(sd):
    """(first parameter slot, rows, columns) of the token embedding among the parameters."""
    offset = 0
    for matrix_name, rows in sd.items():
        if matrix_name == "wte":
            break
        offset += len(rows) * len(rows[0])
    return offset, len(sd["wte"]), len(sd["wte"][0])


def record(sd, config, params, table, tokens, positions, temperature=None, forward_only=False):
    """Run the model code once over `positions` positions (at most the block;
    tokens repeated to fill them: a recording's slots do not depend on which
    tokens it was made with) while the arena notes the step; returns (tape,
    None), or (None, why it cannot be replayed). temperature: the sampler's,
    which divides the logits. forward_only: the backward order is not checked
    for other targets (a sampler's tape).

    The recording is compact first (each model.dot one node over its operands,
    its inner nodes never made: a graph only a tape is built from); one that
    is refused is made again node by node, so that what is replayed, or the
    reason it is not, is the node-by-node graph's. Either graph is released
    once the tape is built (nothing else holds it)."""
    block = min(positions, config.block_size) + 1
    tokens = (list(tokens) * (block // len(tokens) + 1))[:block]
    tape, why = record_once(sd, config, params, table, tokens, temperature, forward_only, True)
    if tape is None:
        tape, why = record_once(sd, config, params, table, tokens, temperature, forward_only, False)
    return tape, why


def record_once(sd, config, params, table, tokens, temperature, forward_only, compact):
    """record()'s one recording, compact or node by node; its graph released after."""
    # a scope, not a bare mark: nothing below its mark is reclaimed or dropped while
    # the model code runs (no handle to the graph is left after: the tape holds the
    # parameters only)
    with params[0].arena.graph():
        return build_recording(sd, config, params, table, tokens, temperature, forward_only, compact)


def build_recording(sd, config, params, table, tokens, temperature, forward_only, compact):
    """The model code run while the arena records, then the tape: (tape, None) or (None, why)."""
    arena = params[0].arena
    start, start_edges = len(arena), arena.num_edges
    ends, losses, cands, logits_rows = [], [], [], []

    def observe(logits, probs, loss_t):
        ends.append(len(arena))
        losses.append(loss_t)
        cands.append(probs)
        logits_rows.append(logits)

    _engine.begin_recording(arena, compact)
    try:
        loss = document_loss(sd, config, tokens, observe, temperature)
    except (ArithmeticError, ValueError) as e:  # (a position's -log(p) of a p that underflowed)
        return None, f"the model code raised while recording: {e}"
    finally:
        spoiled, derived = _engine.end_recording(arena)
    if spoiled is not None:
        return None, spoiled
    # the walks' work: the edges (a node-by-node graph has about half as many nodes)
    size = (arena.num_edges - start_edges) // 2 * len(cands[0])
    try:
        return _engine.build_tape(
            arena, params, start, ends, losses, loss, cands, logits_rows, tokens,
            *table, derived, -1 if forward_only else 0 if size <= FULL_CHECK_NODES else SOME_TARGETS,
            consume=True), None  # (record_once releases the graph)
    except _engine.ReplayRefused as e:
        return None, str(e)


class Sampler(Recorder):
    """model.ModelSampler's interface, replayed: a recording a temperature (as
    many positions as the longest document sampled so far, rounded up as
    recorded_length does; each position's -log(probs[target]) with a target
    sampling ignores; made once the model code has sampled RECORD_AFTER_BLOCKS
    times that many positions), then each position is one call into C, whose
    cache is the tape's values of the positions before it. A document that
    outgrows the recording records again, twice as long, and computes its
    positions so far on it. A recording refused, or a position an operation of
    which would raise, takes the model code, from the document's first position
    (the same floats: the model code is what was recorded)."""

    def __init__(self, sd, config):
        super().__init__(sd, config)
        self.tapes = {}            # float(temperature) -> (tape, why there is none)
        self.model = ModelSampler(sd, config)
        self.record_after_blocks = RECORD_AFTER_BLOCKS
        self.before_recording = {}  # float(temperature) -> positions the model code computed
        self.longest = {}          # float(temperature) -> positions of the longest document
        self.model_positions = 0   # positions the model code computed where no replay could
        self.documents_left = None  # documents still to be drawn, when the caller said (expect)
        self.guessed = None        # positions a document takes, guessed before any is drawn
        self.trained = None        # the training tape that serves the documents (reuse)
        self.forwards = 0          # forwards run on its tapes (a document knows if another ran since)

    def reuse(self, trained):
        """Sample on the tape of `trained` (the DocumentLoss that trained these
        weights) where it can serve (replay_trained.py): no recording of its own."""
        self.trained = TrainingTape(trained, self.params, self.config.block_size)

    def expect(self, documents, positions=None):
        """`documents` more documents will be drawn (at any temperatures), each
        of about `positions` positions if the caller can guess."""
        self.documents_left, self.guessed = documents, positions

    def longest_at(self, key):
        """Positions of the longest document sampled at this temperature, else the guess."""
        return self.longest.get(key, self.guessed or 1)

    def model_document(self, temperature):
        """model.ModelSampler's document, its sums compact (each model.dot one node:
        the same values, a twentieth of the nodes at a large size; only values are
        read) while each position runs."""
        step, arena = self.model.document(temperature), self.params[0].arena

        def compact_step(token_id, pos_id, want=True):
            with compact_sums(arena):
                return step(token_id, pos_id, want)
        return compact_step

    def record_after(self, key):
        """Positions the model code samples at this temperature before a recording."""
        return self.record_after_blocks * self.length(self.longest_at(key))

    def worth_recording(self, key):
        """Record now? Once the model code has sampled record_after(key) positions
        at this temperature, or when the documents still to come (this one
        included, when the caller said how many), each as long as the longest
        so far, would cost it that many (before the first, as long as the
        caller guessed; nothing is known of their length without a guess)."""
        known = key in self.longest or self.guessed is not None
        coming = (self.documents_left or 0) * self.longest_at(key) if known else 0
        return max(self.before_recording.get(key, 0), coming) >= self.record_after(key)

    def length(self, positions):
        """Positions a recording for documents of `positions` holds."""
        return recorded_length(positions, self.config.block_size, MIN_SAMPLER_RECORDED)

    def document(self, temperature):
        step = trained_document(self, temperature)  # (on the training tape, where it serves)
        if step is None:
            return self.own_document(temperature)
        if self.documents_left:
            self.documents_left -= 1
        return step

    def own_document(self, temperature, counted=False):
        """A document on this sampler's own recording, or by the model code
        (counted: document() took it off documents_left already, on the training
        tape, which then could not serve it)."""
        key = float(temperature)
        model_code = key not in self.tapes and not self.worth_recording(key)
        if self.documents_left and not counted:
            self.documents_left -= 1
        if model_code:
            return self.counted(self.model_document(temperature), key)
        tape = self.tape_for(key, self.longest_at(key))
        if tape is None:
            return self.model_document(temperature)
        return ReplayedDocument(self, key, tape, temperature).step

    def tape_for(self, key, positions):
        """The tape at this temperature, recorded again if it holds fewer than
        `positions` positions; None if a recording was refused."""
        tape, _ = self.tapes.get(key, (None, None))
        if key not in self.tapes or (tape is not None and tape.n_pos < positions):
            self.tapes.pop(key, None)  # (the old tape is freed before the new is made)
            self.tapes[key] = self.make_tape([0], self.length(positions), key, forward_only=True)
        return self.tapes[key][0]

    def fed(self, key, pos_id):
        self.longest[key] = max(self.longest.get(key, 1), pos_id + 1)

    def counted(self, step, key):
        def counting_step(token_id, pos_id, want=True):
            self.before_recording[key] = self.before_recording.get(key, 0) + 1
            self.fed(key, pos_id)
            return step(token_id, pos_id, want)
        return counting_step


class ReplayedDocument:
    """One sampled document on a tape: the tokens fed so far are its cache."""

    def __init__(self, sampler, key, tape, temperature):
        self.sampler, self.key, self.tape, self.temperature = sampler, key, tape, temperature
        self.tokens = []
        self.model_step = None  # the model code, once a position could not be replayed
        self.forwards = None    # sampler.forwards after this document's last forward

    def step(self, token_id, pos_id, want=True):
        if self.model_step is None:
            if pos_id != len(self.tokens):
                raise RuntimeError("a document's positions are fed in order from 0")
            self.tokens.append(token_id)
            self.sampler.fed(self.key, pos_id)
            # (another document's forward since, on a tape of this sampler: from position 0)
            loss, start = None, pos_id if self.forwards == self.sampler.forwards else 0
            if pos_id >= self.tape.n_pos:  # longer than the recording: a longer one, from position 0
                self.tape, start = self.sampler.tape_for(self.key, pos_id + 1), 0
            if self.tape is not None:
                loss = self.tape.forward_from(self.tokens + [0], start)  # (0: a target never read)
                self.sampler.forwards += 1
                self.forwards = self.sampler.forwards
            if loss is not None:
                return self.tape.probs(pos_id) if want else None
            self.model_step = self.sampler.model_document(self.temperature)
            for p, tok in enumerate(self.tokens[:-1]):  # the model code's cache, from position 0
                self.model_step(tok, p, want=False)
            self.sampler.model_positions += len(self.tokens) - 1
        self.sampler.model_positions += 1
        return self.model_step(token_id, pos_id, want)
