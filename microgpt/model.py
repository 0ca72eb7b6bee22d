"""The GPT, one position at a time, on scalar Values.

This file is the reference model, line by line: the parameters drawn in order
from the one global generator, then linear, softmax, rmsnorm and gpt. It never
names an engine: it is handed a ``Value`` class and uses only its operators,
``.exp()``, ``.log()``, ``.relu()`` and two helpers, ``dot`` and ``max_data``.

Recorder contract (the replay engine, microgpt/replay.py): a recorded step is
this code's graph, node for node; the recorder only recognises shapes in it to
run them faster, and checks each before it relies on it. What it recognises
is stated beside the code below ("recorder:"); code written otherwise still
replays exactly (or is refused, and the model code runs), only slower.
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


def init_state_dict(Value, config):
    """The weights, drawn in the reference's order. Returns {name: (nout, nin) list of rows}."""
    c, std = config, config.init_std
    sd = {
        "wte": matrix(Value, c.vocab_size, c.n_embd, std),
        "wpe": matrix(Value, c.block_size, c.n_embd, std),
        "lm_head": matrix(Value, c.vocab_size, c.n_embd, std),
    }
    for i in range(c.n_layer):
        sd[f"layer{i}.attn_wq"] = matrix(Value, c.n_embd, c.n_embd, std)
        sd[f"layer{i}.attn_wk"] = matrix(Value, c.n_embd, c.n_embd, std)
        sd[f"layer{i}.attn_wv"] = matrix(Value, c.n_embd, c.n_embd, std)
        sd[f"layer{i}.attn_wo"] = matrix(Value, c.n_embd, c.n_embd, std)
        sd[f"layer{i}.mlp_fc1"] = matrix(Value, 4 * c.n_embd, c.n_embd, std)
        sd[f"layer{i}.mlp_fc2"] = matrix(Value, c.n_embd, 4 * c.n_embd, std)
    return sd


def parameters(state_dict):
    """Every Value of every matrix, in dict order, row-major."""
    return [p for mat in state_dict.values() for row in mat for p in row]


def dot(w, x):
    """sum(wi * xi for wi, xi in zip(w, x)): a node, and the nodes it sums.

    A Value class may supply its own (``Value.dot``): the compiled engine does,
    making the very nodes this sum makes, in the same order, in one call. It
    is the same graph either way.
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


def gpt(sd, config, token_id, pos_id, keys, values):
    """Logits (vocab_size,) for one token at one position.

    keys[li] and values[li] are the layer's cache: one (n_embd,) list per position
    seen so far in this document; this call appends the current position's.
    """
    n_head, head_dim = config.n_head, config.head_dim
    tok_emb = sd["wte"][token_id]  # (n_embd,)
    pos_emb = sd["wpe"][pos_id]  # (n_embd,)
    x = [t + p for t, p in zip(tok_emb, pos_emb)]
    x = rmsnorm(x)

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
            head_out = [dot(attn_weights, [v_t[j] for v_t in v_h])
                        for j in range(head_dim)]  # (head_dim,)
            x_attn.extend(head_out)
        x = linear(x_attn, sd[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, x_residual)]
        # 2) MLP
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, sd[f"layer{li}.mlp_fc1"])  # (4 * n_embd,)
        x = [xi.relu() for xi in x]
        x = linear(x, sd[f"layer{li}.mlp_fc2"])  # (n_embd,)
        x = [a + b for a, b in zip(x, x_residual)]

    return linear(x, sd["lm_head"])  # (vocab_size,)
