"""The GPT, one position at a time, on scalar Values.

This file is the reference model, line by line: the parameters drawn in order
from the one global generator, then linear, softmax, rmsnorm and gpt, and what
training and sampling are made of: a document read one position at a time
through a key/value cache, its loss, and the sampler's next-token probabilities.
It never names an engine: it is handed a ``Value`` class and uses only its
operators, ``.exp()``, ``.log()``, ``.relu()`` and two helpers, ``dot`` and
``max_data``. The engines and the trainer both import it; it imports neither.

Recorder contract (the replay engine, microgpt/replay.py): a recorded step is
this code's graph, node for node (each ``dot`` as one node: see dot); the
recorder only recognises shapes in it to run them faster, and checks each
before it relies on it. What it recognises is stated beside the code below
("recorder:"); code written otherwise still replays exactly (or is refused,
and the model code runs), only slower.
"""
import random
from dataclasses import dataclass, asdict


@dataclass(frozen=True)
class Config:
    vocab_size: int
    n_layer: int = 1
    n_embd: int = 16
    block_size: int = 16
    n_head: int = 4
    init_std: float = 0.08

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def as_dict(self):
        return asdict(self)


def matrix(Value, nout, nin, std):
    # drawn row by row, left to right, from the one global generator
    return [[Value(random.gauss(0, std)) for _ in range(nin)] for _ in range(nout)]


def layout(config):
    """{name: (nout, nin)}: the model's matrices, in the reference's order of drawing."""
    c = config
    shapes = {"wte": (c.vocab_size, c.n_embd), "wpe": (c.block_size, c.n_embd), "lm_head": (c.vocab_size, c.n_embd)}
    for i in range(c.n_layer):
        shapes[f"layer{i}.attn_wq"] = (c.n_embd, c.n_embd)
        shapes[f"layer{i}.attn_wk"] = (c.n_embd, c.n_embd)
        shapes[f"layer{i}.attn_wv"] = (c.n_embd, c.n_embd)
        shapes[f"layer{i}.attn_wo"] = (c.n_embd, c.n_embd)
        shapes[f"layer{i}.mlp_fc1"] = (4 * c.n_embd, c.n_embd)
        shapes[f"layer{i}.mlp_fc2"] = (c.n_embd, 4 * c.n_embd)
    return shapes


def parameter_count(config):
    """How many weights a model of config has (vocab_size, n_layer, n_embd and block_size count)."""
    return sum(nout * nin for nout, nin in layout(config).values())


def init_state_dict(Value, config):
    """The weights, drawn in the reference's order. Returns {name: (nout, nin) list of rows}."""
    return {name: matrix(Value, nout, nin, config.init_std) for name, (nout, nin) in layout(config).items()}


def parameters(state_dict):
    """Every Value of every matrix, in dict order, row-major."""
    return [p for mat in state_dict.values() for row in mat for p in row]


def dot(w, x):
    """sum(wi * xi for wi, xi in zip(w, x)): a node, and the nodes it sums.

    A Value class may supply its own (``Value.dot``): the compiled engine does,
    making the very nodes this sum makes, in the same order, in one call. It
    is the same graph either way.

    recorder: while the replay records a step, the compiled engine's dot makes
    this sum of float products as one node over its operands (the same value;
    its inner nodes, most of a step's, are never made) and the tape replays it
    as the chain below; a recording refused that way is made again node by node
    """
    own = getattr(type(w[0]), "dot", None) if len(w) else None
    return own(w, x) if own is not None else sum(wi * xi for wi, xi in zip(w, x))


def linear(x, w):
    # x: (nin,), w: (nout, nin) -> (nout,)
    # recorder: each row's sum of products is a chain (w0 * x0 + 0, then + w_k * x_k,
    # each product and partial sum read once) replayed as one loop in the same order;
    # four rows of consecutive parameters times one vector, as one matrix-row group
    return [dot(wo, x) for wo in w]


def max_data(values):
    """max(v.data for v in values): a plain number, not a node.

    A Value class may supply its own (``Value.max_data``): the compiled engine
    does, so that a recorded step knows this number came from these values and
    a replay recomputes it. It is the same number either way.
    """
    own = getattr(type(values[0]), "max_data", None)
    return own(values) if own is not None else max(v.data for v in values)


def softmax(logits):
    # subtracting the largest logit keeps exp in range; it is a plain number,
    # which every (val - max_val) wraps as a constant leaf of the graph
    # recorder: max_data's number is recomputed at each replay from these logits (only
    # its negation may follow it into the graph: other arithmetic on it is refused);
    # e / total is e * total ** -1, one pow of total kept for every e
    max_val = max_data(logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def gpt(sd, config, token_id, pos_id, keys, values, watch=None):
    """Logits (vocab_size,) for one token at one position.

    keys[li] and values[li] are the layer's cache: one (n_embd,) list per position
    seen so far in this document; this call appends the current position's.
    watch, when given, is shown the Values as each stage ends, as watch(stage, xs):
    "embedding", "layer{li}.head{h}" (the attention weights), "layer{li}.attention",
    "layer{li}.mlp", "lm_head". It only looks (``microgpt explain`` draws from it).
    """
    n_head, head_dim = config.n_head, config.head_dim
    tok_emb = sd["wte"][token_id]  # (n_embd,)
    pos_emb = sd["wpe"][pos_id]  # (n_embd,)
    x = [t + p for t, p in zip(tok_emb, pos_emb)]
    x = rmsnorm(x)
    if watch is not None:
        watch("embedding", x)

    for li in range(config.n_layer):
        # 1) multi-head attention
        x_residual = x
        x = rmsnorm(x)
        q = linear(x, sd[f"layer{li}.attn_wq"])  # (n_embd,)
        k = linear(x, sd[f"layer{li}.attn_wk"])
        v = linear(x, sd[f"layer{li}.attn_wv"])
        keys[li].append(k)
        values[li].append(v)
        x_attn = []
        for h in range(n_head):
            hs = h * head_dim
            q_h = q[hs:hs + head_dim]  # (head_dim,)
            k_h = [ki[hs:hs + head_dim] for ki in keys[li]]  # (T, head_dim)
            v_h = [vi[hs:hs + head_dim] for vi in values[li]]  # (T, head_dim)
            attn_logits = [dot(q_h, k_t) / head_dim ** 0.5 for k_t in k_h]  # (T,)
            attn_weights = softmax(attn_logits)  # (T,)
            if watch is not None:
                watch(f"layer{li}.head{h}", attn_weights)
            head_out = [dot(attn_weights, [v_t[j] for v_t in v_h])
                        for j in range(head_dim)]  # (head_dim,)
            x_attn.extend(head_out)
        x = linear(x_attn, sd[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, x_residual)]
        if watch is not None:
            watch(f"layer{li}.attention", x)
        # 2) MLP
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, sd[f"layer{li}.mlp_fc1"])  # (4 * n_embd,)
        x = [xi.relu() for xi in x]
        x = linear(x, sd[f"layer{li}.mlp_fc2"])  # (n_embd,)
        x = [a + b for a, b in zip(x, x_residual)]
        if watch is not None:
            watch(f"layer{li}.mlp", x)

    logits = linear(x, sd["lm_head"])  # (vocab_size,)
    if watch is not None:
        watch("lm_head", logits)
    return logits


def reader(sd, config, temperature=None, watch=None):
    """A new document, read one position at a time (positions in order from 0).

    Returns read(token_id, pos_id, want=True) -> (logits, probs): the logits for
    the next token, and their softmax (the logits divided by temperature first,
    when given, as the sampler does), or None when not wanted (the position
    only fills the key/value cache); watch is handed to gpt. This is the one
    key/value-cache loop of both training (document_loss) and sampling
    (ModelSampler).
    """
    keys = [[] for _ in range(config.n_layer)]  # per layer: one (n_embd,) list per position read
    values = [[] for _ in range(config.n_layer)]

    def read(token_id, pos_id, want=True):
        logits = gpt(sd, config, token_id, pos_id, keys, values, watch)
        if not want:
            return logits, None
        return logits, softmax(logits if temperature is None else [l / temperature for l in logits])
    return read


def document_loss(sd, config, tokens, observe=None, temperature=None, watch=None):
    """Mean cross-entropy over the first min(block_size, len(tokens) - 1) positions.

    observe(logits, probs, loss_t), when given, sees each position once it is
    built (a recorder notes where it ends; see replay.py). temperature, when
    given, divides the logits first, as the sampler does (a replayed sampler
    records its positions through this; training never passes it). watch is
    handed to gpt, which shows it each stage's Values (microgpt explain).
    """
    n = min(config.block_size, len(tokens) - 1)
    read = reader(sd, config, temperature, watch)
    losses = []
    for pos_id in range(n):
        token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
        logits, probs = read(token_id, pos_id)
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


class ModelSampler:
    """The next token's probabilities, one position at a time, by the model code:
    the reference's sampler (pure, compiled). An engine may bring its own with
    this interface (replay.py's Sampler)."""

    def __init__(self, sd, config):
        self.sd, self.config = sd, config

    def document(self, temperature):
        """A new document: step(token_id, pos_id, want) feeds the token at pos_id
        (positions in order from 0) and returns the next token's probabilities
        (softmax of the logits / temperature) as floats, or None if not wanted."""
        read = reader(self.sd, self.config, temperature)

        def step(token_id, pos_id, want=True):
            _, probs = read(token_id, pos_id, want)
            return None if probs is None else [p.data for p in probs]
        return step
