"""The training loop and the sampler, as the reference runs them.

A step is one document: forward (the mean cross-entropy of its positions),
backward, then Adam with a learning rate that decays linearly to 0 at the last
step. Sampling starts from BOS and draws each next token from the softmax of the
logits divided by the temperature, until BOS or the end of the block.

Engine-agnostic: the engine hands over its ``Value``, its ``Adam`` and a
``graph()`` scope; the loop never asks which engine it runs on.
"""
import random
import time

from .model import gpt, softmax, parameters

BETA1, BETA2, EPS = 0.85, 0.99, 1e-8


def document_loss(sd, config, tokens, observe=None, temperature=None):
    """Mean cross-entropy over the first min(block_size, len(tokens) - 1) positions.

    observe(logits, probs, loss_t), when given, sees each position once it is
    built (a recorder notes where it ends; see replay.py). temperature, when
    given, divides the logits first, as the sampler does (a replayed sampler
    records its positions through this; training never passes it).
    """
    n = min(config.block_size, len(tokens) - 1)
    keys = [[] for _ in range(config.n_layer)]
    values = [[] for _ in range(config.n_layer)]
    losses = []
    for pos_id in range(n):
        token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
        logits = gpt(sd, config, token_id, pos_id, keys, values)
        probs = softmax(logits if temperature is None else [l / temperature for l in logits])
        loss_t = -probs[target_id].log()
        losses.append(loss_t)
        if observe is not None:
            observe(logits, probs, loss_t)
    return mean_of(losses)


def mean_of(losses):
    """The document's loss: the mean of its positions' losses.

    Recorder contract (replay): a recording recognises this mean as written
    here, node for node: sum() from Value(0), adding the losses left to right,
    then times the constant 1 / n (the tape's builder checks it). A mean written
    otherwise (``sum(losses[1:], losses[0])``: the same floats but for the sign
    of a zero) is refused: every step then runs the model code, and
    ``microgpt train`` says so in one line.
    """
    return (1 / len(losses)) * sum(losses)


class ModelCode:
    """A document's loss built by the model code, every call (pure, compiled)."""

    def __init__(self, sd, config):
        self.sd, self.config = sd, config

    def __call__(self, tokens):
        return document_loss(self.sd, self.config, tokens)


class Trainer:
    """Owns the weights' optimizer state and runs steps 0..num_steps-1."""

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

        Whatever on_step raises stops the run between two steps, with the
        weights, the optimizer state and self.step consistent (a checkpoint
        taken then resumes exactly).
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


def top_k_weights(weights, k):
    """Keep the k largest weights (ties: the lower token id first), zero the rest."""
    if k >= len(weights):
        return weights
    kept = set(sorted(range(len(weights)), key=lambda i: -weights[i])[:k])
    return [w if i in kept else 0.0 for i, w in enumerate(weights)]


class ModelSampler:
    """The next token's probabilities, one position at a time, by the model code:
    the reference's sampler, with a key/value cache per document (pure, compiled).
    An engine may bring its own with this interface (replay.py)."""

    def __init__(self, sd, config):
        self.sd, self.config = sd, config

    def document(self, temperature):
        """A new document: step(token_id, pos_id, want) feeds the token at pos_id
        (positions in order from 0) and returns the next token's probabilities
        (softmax of the logits / temperature) as floats, or None if not wanted."""
        keys = [[] for _ in range(self.config.n_layer)]
        values = [[] for _ in range(self.config.n_layer)]

        def step(token_id, pos_id, want=True):
            logits = gpt(self.sd, self.config, token_id, pos_id, keys, values)
            if not want:
                return None
            probs = softmax([l / temperature for l in logits])
            return [p.data for p in probs]
        return step


def sample(engine, sd, config, tokenizer, temperature=0.5, top_k=None, prefix="", sampler=None):
    """Draw one document from the model with the global generator; returns its text.

    prefix: characters fed after BOS before sampling starts; the returned text
    begins with it. top_k: sample among the k most likely tokens only. With the
    defaults this is exactly the reference's sampler. sampler: where the
    probabilities come from (made once for many samples, it keeps what it can,
    such as a replay's recording); by default the engine's, else the model code.
    """
    if sampler is None:
        sampler = make_sampler(engine, sd, config)
    token_id = tokenizer.bos
    forced = tokenizer.encode(prefix)
    chars = list(prefix)
    with engine.graph():
        step = sampler.document(temperature)
        for pos_id in range(config.block_size):
            weights = step(token_id, pos_id, want=pos_id >= len(forced))
            if pos_id < len(forced):  # still reading the prefix: its next character is given
                token_id = forced[pos_id]
                continue
            if top_k is not None:
                weights = top_k_weights(weights, top_k)
            token_id = random.choices(range(tokenizer.vocab_size), weights=weights)[0]
            if token_id == tokenizer.bos:
                break
            chars.append(tokenizer.chars[token_id])
    return "".join(chars)


def make_sampler(engine, sd, config):
    """The engine's sampler (replay records one), else the model code's."""
    return getattr(engine, "Sampler", ModelSampler)(sd, config)
