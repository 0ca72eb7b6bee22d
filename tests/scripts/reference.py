"""The reference algorithm (docs: /work/shared/reference/ALGORITHM.md) as one plain script:
a scalar autograd Value, a one-layer GPT over characters, Adam, then 20 samples.

    python reference.py NAMES_TXT [NUM_STEPS [RUN_STEPS]]

NUM_STEPS (default 1000) sets the learning-rate schedule; RUN_STEPS (default NUM_STEPS)
is how many of those steps run, so a short run gives a prefix of the long run's losses.
Prints `step K loss REPR` per step, then `sample  I: NAME` lines when every step ran.

It depends on nothing but the standard library. The tests swap the class between the
two marker lines for `from microgpt import Value`, changing nothing else, and expect
the very same output.
"""
import math
import random
import sys

# --- the Value class: begin ---
class Value:
    """A number in a graph: its value, its gradient, and how it was made."""

    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        if not isinstance(other, Value):
            other = Value(other)
        return Value(self.data + other.data, (self, other), (1, 1))

    def __mul__(self, other):
        if not isinstance(other, Value):
            other = Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k):
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,))

    def exp(self):
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def relu(self):
        return Value(max(0, self.data), (self,), (1.0 if self.data > 0 else 0.0,))

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other ** -1

    def __rtruediv__(self, other):
        return other * self ** -1

    def backward(self):
        # depth first from here, children in order, each node once, a node after its
        # children; then the chain rule over that order reversed
        order, seen = [], set()

        def visit(v):
            if v not in seen:
                seen.add(v)
                for child in v._children:
                    visit(child)
                order.append(v)

        visit(self)
        self.grad = 1
        for v in reversed(order):
            for child, local in zip(v._children, v._local_grads):
                child.grad += local * v.grad
# --- the Value class: end ---


N_LAYER, N_EMBD, BLOCK_SIZE, N_HEAD = 1, 16, 16, 4
HEAD_DIM = N_EMBD // N_HEAD
LEARNING_RATE, BETA1, BETA2, EPS = 0.01, 0.85, 0.99, 1e-8


class Run:
    """Everything one training run holds: the documents, the tokenizer, the weights and
    Adam's moments. The global random generator is seeded here, before any draw."""

    def __init__(self, path):
        random.seed(42)
        with open(path, encoding="utf-8") as f:
            self.docs = [line.strip() for line in f.read().split("\n") if line.strip()]
        random.shuffle(self.docs)
        self.chars = sorted(set("".join(self.docs)))
        self.token_of = {c: i for i, c in enumerate(self.chars)}
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1

        def matrix(rows, cols):
            return [[Value(random.gauss(0, 0.08)) for _ in range(cols)] for _ in range(rows)]

        w = {"wte": matrix(self.vocab_size, N_EMBD), "wpe": matrix(BLOCK_SIZE, N_EMBD),
             "lm_head": matrix(self.vocab_size, N_EMBD)}
        for i in range(N_LAYER):
            for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
                w[f"layer{i}.{name}"] = matrix(N_EMBD, N_EMBD)
            w[f"layer{i}.mlp_fc1"] = matrix(4 * N_EMBD, N_EMBD)
            w[f"layer{i}.mlp_fc2"] = matrix(N_EMBD, 4 * N_EMBD)
        self.weights = w
        self.params = [p for m in w.values() for row in m for p in row]
        self.m = [0.0] * len(self.params)
        self.v = [0.0] * len(self.params)


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(row, x)) for row in w]


def softmax(logits):
    top = max(v.data for v in logits)
    exps = [(v - top).exp() for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def gpt(w, token, pos, keys, values):
    """The logits after one more token at position pos; appends to the caches keys, values."""
    x = [t + p for t, p in zip(w["wte"][token], w["wpe"][pos])]
    x = rmsnorm(x)
    for li in range(N_LAYER):
        x_res = x
        x = rmsnorm(x)
        q = linear(x, w[f"layer{li}.attn_wq"])
        k = linear(x, w[f"layer{li}.attn_wk"])
        v = linear(x, w[f"layer{li}.attn_wv"])
        keys[li].append(k)
        values[li].append(v)
        heads = []
        for h in range(N_HEAD):
            lo, hi = h * HEAD_DIM, (h + 1) * HEAD_DIM
            q_h = q[lo:hi]
            k_h = [kt[lo:hi] for kt in keys[li]]
            v_h = [vt[lo:hi] for vt in values[li]]
            scores = [sum(q_h[j] * k_h[t][j] for j in range(HEAD_DIM)) / HEAD_DIM ** 0.5
                      for t in range(len(k_h))]
            attn = softmax(scores)
            heads.extend(sum(attn[t] * v_h[t][j] for t in range(len(v_h))) for j in range(HEAD_DIM))
        x = linear(heads, w[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, x_res)]
        x_res = x
        x = rmsnorm(x)
        x = linear(x, w[f"layer{li}.mlp_fc1"])
        x = [xi.relu() for xi in x]
        x = linear(x, w[f"layer{li}.mlp_fc2"])
        x = [a + b for a, b in zip(x, x_res)]
    return linear(x, w["lm_head"])


def train_step(run, step, num_steps):
    """One step: the mean loss over one document's positions, backward, Adam. Returns the loss."""
    doc = run.docs[step % len(run.docs)]
    tokens = [run.bos] + [run.token_of[c] for c in doc] + [run.bos]
    n = min(BLOCK_SIZE, len(tokens) - 1)
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    losses = []
    for pos in range(n):
        probs = softmax(gpt(run.weights, tokens[pos], pos, keys, values))
        losses.append(-probs[tokens[pos + 1]].log())
    loss = (1 / n) * sum(losses)
    loss.backward()
    lr_t = LEARNING_RATE * (1 - step / num_steps)
    m, v = run.m, run.v
    for i, p in enumerate(run.params):
        m[i] = BETA1 * m[i] + (1 - BETA1) * p.grad
        v[i] = BETA2 * v[i] + (1 - BETA2) * p.grad ** 2
        m_hat = m[i] / (1 - BETA1 ** (step + 1))
        v_hat = v[i] / (1 - BETA2 ** (step + 1))
        p.data -= lr_t * m_hat / (v_hat ** 0.5 + EPS)
        p.grad = 0
    return loss


def sample(run, temperature=0.5):
    """One name, drawn a character at a time from the global generator."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    token, name = run.bos, []
    for pos in range(BLOCK_SIZE):
        probs = softmax([logit / temperature for logit in gpt(run.weights, token, pos, keys, values)])
        token = random.choices(range(run.vocab_size), weights=[p.data for p in probs])[0]
        if token == run.bos:
            break
        name.append(run.chars[token])
    return "".join(name)


def main(argv):
    path = argv[1]
    num_steps = int(argv[2]) if len(argv) > 2 else 1000
    run_steps = int(argv[3]) if len(argv) > 3 else num_steps
    run = Run(path)
    for step in range(run_steps):
        loss = train_step(run, step, num_steps)
        print(f"step {step + 1} loss {loss.data!r}")
    if run_steps == num_steps:
        for i in range(20):
            print(f"sample {i + 1:2d}: {sample(run)}")


if __name__ == "__main__":
    main(sys.argv)
