"""The torch engine: the GPT of torch_model.py behind the engines' interface.

A peer of pure, compiled and replay (engine.py picks it for ``--engine torch``),
but not an exact one: it computes the same model in another order of roundings
(float64 losses within about 1e-14 of the scalar engines' over 1000 steps).

The weights are drawn as every engine draws them (``model.init_state_dict``
with ``Weight``, a plain holder of a float, as its Value), so the initial
weights are the scalar engines' bit for bit; ``TorchEngine.model`` copies them
into a torch_model.GPT on the engine's device and dtype. Adam is the
reference's arithmetic, line for line, on one flat vector of every parameter.
The trainer (batches, several processes) is torch_train.py's.
"""
import contextlib

import torch

from .adam_inputs import check_betas, check_second_moments, check_step
from .errors import UsageError
from .torch_model import GPT, load_weights, softmax
from .torch_options import DEVICES, DTYPES as DTYPE_NAMES

name = "torch"
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


class Weight:
    """One weight as the state dict holds it: a float in ``.data`` (the engine's Value)."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def resolve_device(device):
    """A torch.device for "auto" (CUDA when present, else the CPU), "cpu", "cuda" or "mps";
    one line (UsageError) for a device that is not there."""
    device = device or "auto"
    if device not in DEVICES:
        raise UsageError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available here (this torch "
                         f"{torch.__version__} sees none); use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: Apple's Metal is not available here; use --device cpu")
    return torch.device(device)


class Adam:
    """The reference's Adam (as _pure.Adam runs it), on one flat vector holding every
    parameter in params order; the model's parameters and their gradients are views into
    it. Each line rounds as the reference's does: no fused multiply-add, divisions as
    divisions."""

    def __init__(self, params, beta1, beta2, eps):
        check_betas(beta1, beta2)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        with torch.no_grad():
            self.flat = torch.cat([p.reshape(-1) for p in params])
        self.grad = torch.zeros_like(self.flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = self.flat[offset:offset + n].view_as(p)
            p.grad = self.grad[offset:offset + n].view_as(p)  # backward adds into these
            offset += n
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.scratch_a, self.scratch_b = torch.empty_like(self.flat), torch.empty_like(self.flat)

    @torch.no_grad()
    def step(self, lr_t, step):
        # in place, through two scratch vectors: a large model's fresh temporaries would cost
        # more than the arithmetic (each a new mapping of memory); every product and sum is
        # still rounded once, in the reference's order
        check_step(step)
        b1, b2, g, a, b = self.beta1, self.beta2, self.grad, self.scratch_a, self.scratch_b
        # m = beta1 * m + (1 - beta1) * grad
        self.m.mul_(b1).add_(torch.mul(g, 1 - b1, out=a))
        # v = beta2 * v + (1 - beta2) * grad ** 2
        self.v.mul_(b2).add_(torch.mul(g, g, out=a).mul_(1 - b2))
        # p -= lr_t * m_hat / (v_hat ** 0.5 + eps), m_hat = m / (1 - beta1 ** t), v_hat likewise
        torch.div(self.m, 1 - b1 ** (step + 1), out=a).mul_(lr_t)
        torch.div(self.v, 1 - b2 ** (step + 1), out=b).sqrt_().add_(self.eps)
        self.flat.sub_(a.div_(b))
        g.zero_()

    def get_state(self):
        return self.m.tolist(), self.v.tolist()

    def set_state(self, m, v):
        check_second_moments(v)
        self.m.copy_(torch.tensor(m, dtype=torch.float64))  # (copy_ converts to the moments' dtype)
        self.v.copy_(torch.tensor(v, dtype=torch.float64))


class TorchEngine:
    """The engine's interface (name, Value, graph, Adam, Sampler) with its options:
    device, dtype (float64 on the CPU by default, else float32), threads (the CPU's).
    It trains batches of documents: run.py gives it torch_train.TorchTrainer."""
    name = "torch"
    Value = Weight
    Adam = Adam
    trains_batches = True

    def __init__(self, device="auto", dtype=None, threads=None):
        self.device = resolve_device(device)
        dtype = dtype or ("float64" if self.device.type == "cpu" else "float32")
        if dtype not in DTYPES:
            raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        self.dtype_name = dtype
        if threads or self.device.type == "cpu":
            # one thread unless asked: a step of this small model is many small operations,
            # and threads that wait for each other on a busy machine cost more than they give
            torch.set_num_threads(threads or 1)
        self.rank, self.world_size = 0, 1  # set by distributed.setup() under torch.distributed

    @property
    def param_dtype(self):
        # bfloat16 is autocast over float32 weights: Adam's moments need the float32 range
        return torch.float32 if self.dtype_name == "bfloat16" else DTYPES[self.dtype_name]

    def autocast(self):
        if self.dtype_name != "bfloat16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @property
    def label(self):
        text = f"torch, device {self.device}, dtype {self.dtype_name}"
        if self.device.type == "cpu":
            n = torch.get_num_threads()
            text += f", {n} thread{'s' * (n > 1)}"
        if self.world_size > 1:
            text += f", {self.world_size} processes"
        return text

    def graph(self):
        return torch.no_grad()

    def model(self, sd, config):
        """A GPT on this engine's device and dtype holding the weights of sd (rows of Weights)."""
        model = GPT(config).to(device=self.device, dtype=self.param_dtype)
        load_weights(model, {name: [[w.data for w in row] for row in mat] for name, mat in sd.items()})
        return model

    def Sampler(self, sd, config):  # noqa: N802 (the engines' interface names a class)
        return Sampler(self, sd, config)


class Sampler:
    """model.ModelSampler's interface: the next token's probabilities, one position at a
    time (the model run over the document so far: the block is short)."""

    def __init__(self, engine, sd, config):
        self.engine = engine
        self.model = engine.model(sd, config)

    def document(self, temperature):
        tokens = []

        @torch.no_grad()
        def step(token_id, pos_id, want=True):
            tokens.append(token_id)
            if not want:
                return None
            with self.engine.autocast():
                logits = self.model(torch.tensor([tokens], device=self.engine.device))[0, -1]
            probs = softmax(logits.double() * temperature ** -1)  # model.py's l / temperature
            return probs.tolist()
        return step
