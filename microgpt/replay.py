"""The replay engine: the compiled engine, with the training step recorded once
and replayed in C.

The first step runs the model code through the compiled engine over a whole
block of positions (the document's tokens, repeated to fill the block: a
recording's token and target slots do not depend on which tokens it was made
with) while the arena notes what a replay needs (src/tape.h): where each
position ends, the probs each position's loss picks its target from, the token
table's rows the positions read, and the numbers derived from data (the softmax
maxima, through ``model.max_data``). Every later step of up to that many
positions is replayed from the recording in C: forward, backward, with the
same floats, bit for bit; that first step too, replayed from the fresh
recording. Adam is the compiled engine's, in C too.

What a recording cannot serve goes back to the model code, never to a guess:
a recording that met something it cannot
follow (a ``.data`` read, a user-defined node, a number derived from data in
arithmetic) is refused and every step runs the model code; an operation that
raises, or a gradient that is not finite, redoes that step on the model code,
which raises or computes exactly as the reference does.
"""
from . import _engine
from ._engine import Adam, ArenaMismatchError, StaleValueError, Value, default_arena, graph  # noqa: F401
from .model import parameters
from .train import document_loss

name = "replay"
checked = _engine.checked

# A recording is checked against depth-first walks for other targets: every
# other target when the graph is small, else this many (each walk is one pass
# over the recorded graph).
FULL_CHECK_NODES = 5_000_000
SOME_TARGETS = 2


class ReplayedLoss:
    """The loss of a replayed step: ``.data`` now, ``.backward()`` in C."""

    __slots__ = ("data", "_runner", "_tokens", "_serial")

    def __init__(self, runner, tokens, data, serial):
        self.data, self._runner, self._tokens, self._serial = data, runner, tokens, serial

    def backward(self):
        self._runner.backward(self)


class DocumentLoss:
    """document_loss(sd, config, tokens), recorded once (a whole block) and replayed.

    Call it with a document's tokens inside a ``graph()`` scope; it returns the
    loss (a ReplayedLoss, or a Value when the model code ran), whose
    ``backward()`` adds the gradients into the parameters' ``.grad``.
    """

    def __init__(self, sd, config):
        self.sd, self.config = sd, config
        self.params = parameters(sd)
        self.arena = self.params[0].arena
        offset = 0
        for matrix_name, rows in sd.items():  # the token embedding's place among the parameters
            if matrix_name == "wte":
                break
            offset += len(rows) * len(rows[0])
        self.table = (offset, len(sd["wte"]), len(sd["wte"][0]))
        self.tape = None       # the recording of a whole block
        self.refused = None    # why steps cannot be replayed (then the model code runs every step)
        self.recordings = 0
        self.model_steps = 0   # steps the model code computed where no replay could
        self._serial = 0

    def __call__(self, tokens):
        n = min(self.config.block_size, len(tokens) - 1)
        tokens = list(tokens[:n + 1])
        if self.tape is None and self.refused is None:
            self.record(tokens)
        if self.tape is not None:  # it holds a whole block: every document fits
            try:
                loss = self.tape.forward(tokens)
            except ValueError:  # a token outside the vocabulary: the model code says what
                loss = None
            if loss is not None:
                self._serial += 1
                return ReplayedLoss(self, tokens, loss, self._serial)
        self.model_steps += 1
        return document_loss(self.sd, self.config, tokens)

    def backward(self, loss):
        if loss._serial != self._serial:
            raise RuntimeError("backward() of a replayed loss must follow its own forward")
        if not self.tape.backward():  # a gradient that is not finite: the model code decides
            self.model_steps += 1
            document_loss(self.sd, self.config, loss._tokens).backward()

    def record(self, tokens):
        """Run the model code once over a whole block while the arena notes the
        step; keep the tape (or the reason there is none). The graph it built is
        released with the caller's scope."""
        block = self.config.block_size + 1
        tokens = (tokens * (block // len(tokens) + 1))[:block]
        arena = self.arena
        start = len(arena)
        ends, losses, cands, logits_rows = [], [], [], []

        def observe(logits, probs, loss_t):
            ends.append(len(arena))
            losses.append(loss_t)
            cands.append(probs)
            logits_rows.append(logits)

        _engine.begin_recording(arena)
        try:
            loss = document_loss(self.sd, self.config, tokens, observe)
        finally:
            spoiled, derived = _engine.end_recording(arena)
        self.recordings += 1
        if spoiled is not None:
            self.refused = spoiled
            return
        size = (len(arena) - start) * len(cands[0])
        try:
            self.tape = _engine.build_tape(
                arena, self.params, start, ends, losses, loss, cands, logits_rows, tokens,
                *self.table, derived, 0 if size <= FULL_CHECK_NODES else SOME_TARGETS)
        except _engine.ReplayRefused as e:
            self.refused = str(e)
