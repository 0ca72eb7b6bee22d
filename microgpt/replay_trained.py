"""Sampling on the training recording (the replay engine, after training).

The tape that replays a training step's forward computes each position's
logits exactly as the model code does, so a sampler of the same weights can
read them instead of recording a tape of its own (what that costs is about
what a training step's recording does). Training's graph has no temperature:
the sampler's softmax(logits / temperature) is computed from the logits by
the tape (Tape.tempered_probs) with the model code's operations in its order,
so the same floats. A document grows a position per forward (the positions
before it as the last forward left them), as on the sampler's own tape; if
anything else ran a forward on the tape since (a step, another document), it
computes its positions again from the first.

The forward also takes -log(probs[target]) of the position's target, which
the sampler does not know yet: it is given token 0 and never read. A forward
that fails (that target's probability is 0, say), or tempered probabilities an
operation of which would raise, hands the document to the sampler's own way
(its own recording, or the model code) from the document's first position:
the same floats, or the reference's error, and the training tape is not used
again. It serves only a tape that holds the whole block, every position's
logits kept, of the very parameters the sampler reads.
"""
import operator

TARGET = 0  # the token a forward's loss reads at a position being sampled (its value is never read)


def trained_document(sampler, temperature):
    """step() of a document on the training tape of sampler (a replay.Sampler;
    sampler.trained: a TrainingTape, or None), or None where it cannot serve."""
    if sampler.trained is None or sampler.trained.tape() is None:
        return None
    try:
        k = temperature ** -1  # (as the model code's l / temperature computes it)
    except (ArithmeticError, TypeError):  # (the model code says what)
        return None
    return TrainedDocument(sampler, sampler.trained, temperature, k).step


class TrainingTape:
    """The tape of trained (a replay.DocumentLoss) as a sampler of params reads
    it: only if trained's parameters are these very Values (checked once), and
    its tape holds the block with every position's logits kept (checked once a
    tape: a longer document records a new one)."""

    def __init__(self, trained, params, block_size):
        mine = getattr(trained, "params", None)  # (a loss the model code builds has no tape)
        self.trained, self.block_size = trained, block_size
        self.same = mine is not None and len(mine) == len(params) and all(map(operator.is_, mine, params))
        self.checked = None  # the last tape found to serve

    def tape(self):
        """trained's tape if it serves, else None."""
        tape = getattr(self.trained, "tape", None)
        if not self.same or tape is None:
            return None
        if tape is not self.checked:
            if tape.n_pos != self.block_size or not tape.has_logits:
                return None
            self.checked = tape
        return tape


class TrainedDocument:
    """One sampled document on the training tape; its tokens so far are its cache.

    sampler: a replay.Sampler, whose own_document(temperature) takes over a
    document the tape cannot serve (and every later one: its trained is
    cleared)."""

    def __init__(self, sampler, source, temperature, k):
        self.sampler, self.source, self.temperature, self.k = sampler, source, temperature, k
        self.tape, self.token = None, None  # (lent at the first position)
        self.tokens = []
        self.own_step = None  # the sampler's own way, once the tape could not serve a position

    def step(self, token_id, pos_id, want=True):
        if self.own_step is None:
            if pos_id != len(self.tokens):
                raise RuntimeError("a document's positions are fed in order from 0")
            self.tokens.append(token_id)
            probs = self.on_tape(pos_id, want)
            if probs is not False:
                return probs
            self.sampler.trained = None
            self.own_step = self.sampler.own_document(self.temperature, counted=True)
            for p, tok in enumerate(self.tokens[:-1]):  # its cache, from the document's first position
                self.own_step(tok, p, want=False)
        return self.own_step(token_id, pos_id, want)

    def on_tape(self, pos_id, want):
        """The position's probabilities (None if not wanted), or False if the tape cannot say."""
        start = pos_id
        if self.token is None or not self.source.trained.holds(self.token):
            # (the first position, or the tape ran another forward since: from position 0)
            self.tape, start = self.source.tape(), 0
            if self.tape is None:
                return False
            _, self.token = self.source.trained.lend()
        if self.tape.forward_from(self.tokens + [TARGET], start) is None:
            return False
        if not want:
            return None
        probs = self.tape.tempered_probs(pos_id, self.k)
        return False if probs is None else probs
