"""The figures the page shows, all taken from the model code (model.py, train.py) run on
an exact engine: next-character probabilities, attention weights, sampled names with
their probabilities, the embeddings and their projection, and one training step's
nodes stage by stage. Nothing here recomputes the model another way.
"""
import random
import time
from contextlib import contextmanager

from .. import _pure
from ..model import document_loss, init_state_dict, reader
from ..state import restore_weights
from ..sampling import make_sampler, sample


def label(ch):
    """A character as the page prints it: whitespace made visible."""
    return {" ": "␣", "\t": "⇥", "\n": "⏎"}.get(ch, ch)


def model_on(engine, ckpt):
    """The checkpoint's weights as a state dict of engine's Values."""
    sd = init_state_dict(engine.Value, ckpt.config)  # the layout; the weights come next
    restore_weights(ckpt, sd)
    return sd


# ---------------------------------------------------------------- one name, traced

def trace_name(sd, config, tokenizer, name):
    """Run the model code over [BOS] + name (+ BOS when the block has room) and keep what
    each position shows: its input, the next token's probabilities (softmax of the
    logits) and every head's attention weights. sd: a state dict of an exact engine.

    Returns {"tokens": [...ids], "probs": [[p per token] per position],
             "attention": {"layer{li}.head{h}": [[weight per earlier position] per position]}}.
    """
    tokens = [tokenizer.bos] + tokenizer.encode(name) + [tokenizer.bos]
    n = min(config.block_size, len(tokens) - 1)
    attention, probs = {}, []

    def watch(stage, xs):
        if ".head" in stage:
            attention.setdefault(stage, []).append([w.data for w in xs])

    read = reader(sd, config, watch=watch)  # the model's one key/value-cache loop
    for pos_id in range(n):
        _, ps = read(tokens[pos_id], pos_id)
        probs.append([p.data for p in ps])
    return {"tokens": tokens[:n + 1], "probs": probs, "attention": attention}


# ---------------------------------------------------------------- sampled names

class RecordingSampler:
    """A sampler (model.ModelSampler's interface) that passes another's probabilities
    through and keeps them: the names are drawn by sampling.sample, as `microgpt sample`
    draws them, and each drawn token's probability is read back afterwards."""

    def __init__(self, inner):
        self.inner = inner
        self.documents = []  # per document: the probabilities handed out, in order

    def document(self, temperature):
        step, seen = self.inner.document(temperature), []
        self.documents.append(seen)

        def recording_step(token_id, pos_id, want=True):
            weights = step(token_id, pos_id, want)
            if weights is not None:
                seen.append(weights)
            return weights
        return recording_step


def sample_names(engine, sd, config, tokenizer, temperature, count):
    """count names drawn by sampling.sample from the global generator, each as
    (name, [probability of each drawn character, then of the end when drawn])."""
    sampler = RecordingSampler(make_sampler(engine, sd, config))
    out = []
    for _ in range(count):
        name = sample(engine, sd, config, tokenizer, temperature, sampler=sampler)
        seen = sampler.documents[-1]
        drawn = tokenizer.encode(name) + [tokenizer.bos]
        out.append((name, [weights[t] for weights, t in zip(seen, drawn)]))
    return out


# ---------------------------------------------------------------- weights

def matrices(ckpt):
    """[(name, rows, cols, share of all parameters)] in the state dict's order."""
    sizes = [(name, len(rows), len(rows[0])) for name, rows in ckpt.weights.items()]
    total = sum(r * c for _, r, c in sizes)
    return [(name, r, c, r * c / total) for name, r, c in sizes], total


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def pca_2d(rows, iterations=500):
    """The rows (one per token) projected on their two main directions: [(x, y)] and the
    share of the variance each direction explains. Plain Python (power iteration on the
    centred rows, the first direction projected out for the second): no dependency."""
    n, d = len(rows), len(rows[0])
    mean = [sum(r[j] for r in rows) / n for j in range(d)]
    x = [[r[j] - mean[j] for j in range(d)] for r in rows]  # (n, d)
    total = sum(v * v for r in x for v in r)
    directions = []
    for _ in range(2):
        v = max(x, key=lambda r: dot(r, r))  # a start with a part along the main direction
        for _ in range(iterations):
            xv = [dot(r, v) for r in x]
            w = [sum(x[i][j] * xv[i] for i in range(n)) for j in range(d)]  # X^T X v
            for u in directions:
                c = dot(w, u)
                w = [a - c * b for a, b in zip(w, u)]
            norm = dot(w, w) ** 0.5
            if norm <= 1e-12 * (total or 1):  # no variance left in any other direction
                w = [0.0] * d
                break
            w = [a / norm for a in w]
            done = max(abs(a - b) for a, b in zip(w, v)) < 1e-10
            v = w
            if done:
                break
        biggest = max(range(d), key=lambda j: abs(w[j]))
        directions.append([-a for a in w] if w[biggest] < 0 else w)  # a fixed sign
    coords = [(dot(r, directions[0]), dot(r, directions[1])) for r in x]
    share = [sum(c[k] ** 2 for c in coords) / total if total else 0.0 for k in range(2)]
    return coords, share


# ---------------------------------------------------------------- one training step's graph

@contextmanager
def node_counter(engine):
    """Yields counts() -> (nodes, edges) made so far, counted by the engine: the compiled
    arena's length, or (pure) the Value constructions seen while the block runs."""
    if hasattr(engine, "default_arena"):
        arena = engine.default_arena()
        with engine.graph():
            yield lambda: (len(arena), arena.num_edges)
        return
    cls, made = engine.Value, [0, 0]
    original = cls.__dict__["__init__"]

    def counting_init(self, data, children=(), local_grads=()):
        made[0] += 1
        made[1] += len(children)
        original(self, data, children, local_grads)
    cls.__init__ = counting_init
    try:
        with engine.graph():
            yield lambda: tuple(made)
    finally:
        cls.__init__ = original


def stage_of(mark):
    """The page's row for a gpt stage name: each layer's attention and MLP on their own."""
    if ".head" in mark:
        return None  # inside the layer's attention: counted with it
    return {"embedding": "embeddings", "lm_head": "lm_head"}.get(mark, mark)


def step_nodes(engine, sd, config, tokens):
    """The nodes one training step's forward builds on document tokens, stage by stage,
    counted by the engine while document_loss (train.py) runs; then what backward does.

    Returns {"stages": [(stage, nodes, edges)], "positions": n, "nodes", "edges",
             "forward_s", "backward_s"}; backward creates no node: it visits the nodes the
    loss depends on and does one multiply-add per edge (reachable counts, pure engine).
    """
    by_stage = {}
    with node_counter(engine) as counts:
        last = [counts()]

        def close(stage):
            now = counts()
            nodes, edges = by_stage.get(stage, (0, 0))
            by_stage[stage] = (nodes + now[0] - last[0][0], edges + now[1] - last[0][1])
            last[0] = now

        def watch(mark, xs):
            stage = stage_of(mark)
            if stage is not None:
                close(stage)

        t0 = time.perf_counter()
        loss = document_loss(sd, config, tokens, observe=lambda *a: close("softmax and loss"), watch=watch)
        close("softmax and loss")  # the mean over positions
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        reach = reachable(loss) if isinstance(loss, _pure.Value) else None
        del loss
    order = ["embeddings"] + [f"layer{li}.{part}" for li in range(config.n_layer)
                              for part in ("attention", "mlp")] + ["lm_head", "softmax and loss"]
    stages = [(s,) + by_stage[s] for s in order]
    return {"stages": stages, "positions": min(config.block_size, len(tokens) - 1),
            "nodes": sum(s[1] for s in stages), "edges": sum(s[2] for s in stages),
            "reachable": reach, "forward_s": t1 - t0, "backward_s": t2 - t1}


def reachable(root):
    """(nodes, edges) of the pure graph under root: what its backward walks."""
    seen, stack, edges = {root}, [root], 0
    while stack:
        v = stack.pop()
        edges += len(v._children)
        for child in v._children:
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return len(seen), edges


def seeded(seed, rng_state):
    """Set the global generator: seed when given, else the checkpoint's state (as
    `microgpt sample` does, so the names are the ones it would print)."""
    if seed is not None:
        random.seed(seed)
    else:
        random.setstate(rng_state)
