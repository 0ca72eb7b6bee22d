"""The torch engine: the GPT of torch_model.py behind the engines' interface.

A peer of pure, compiled and replay (engine.py picks it for ``--engine torch``),
but not an exact one: it computes the same model in another order of roundings
(float64 losses within about 1e-14 of the scalar engines' over 1000 steps).

- The weights are drawn as every engine draws them (``model.init_state_dict``
  with ``Weight``, a plain holder of a float, as its Value), so the initial
  weights are the scalar engines' bit for bit; the trainer copies them into
  the torch model. ``trainer.sd`` and ``trainer.params`` give the holders back,
  brought up to date from the model when read, so checkpoints (state.py) are
  the same rows of numbers on every engine.
- A step is ``batch_size`` documents, the next ones in the reference's order
  (the reference's step is batch_size 1), padded and masked; its loss is the
  mean of their losses. Adam is the reference's arithmetic, line for line, on
  one flat vector of every parameter.
- Under torch.distributed (``microgpt train --nproc-per-node N``, or torchrun)
  each process trains its share of the batch inside DistributedDataParallel,
  which all-reduces the gradients; the loss reported is the whole batch's mean.
"""
import contextlib

import torch

from .errors import UsageError
from .model import parameters
from .torch_model import GPT, load_weights, softmax
from .train import BETA1, BETA2, EPS, Trainer

name = "torch"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


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


class TorchEngine:
    """The engine's interface (name, Value, graph, Trainer, Sampler) with its options:
    device, dtype (float64 on the CPU by default, else float32), threads (the CPU's)."""
    name = "torch"
    Value = Weight

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


class Adam:
    """The reference's Adam (ALGORITHM.md, section 5), on one flat vector holding every
    parameter in params order; the model's parameters and their gradients are views into it.
    Each line rounds as the reference's does: no fused multiply-add, divisions as divisions."""

    def __init__(self, params, beta1=BETA1, beta2=BETA2, eps=EPS):
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
        self.m.copy_(torch.tensor(m, dtype=torch.float64))  # (copy_ converts to the moments' dtype)
        self.v.copy_(torch.tensor(v, dtype=torch.float64))


class TorchTrainer(Trainer):
    """train.Trainer's interface on the torch model: train_step, run, validation_loss,
    sd and params (the Weights, brought up to date when read), optimizer.get_state."""

    def __init__(self, engine, sd, config, docs, tokenizer, num_steps, learning_rate=0.01, batch_size=1):
        if batch_size % engine.world_size:
            raise UsageError(f"--batch-size {batch_size} does not divide evenly among "
                             f"{engine.world_size} processes")
        self.engine, self.config = engine, config
        self.docs, self.tokenizer = docs, tokenizer
        self.num_steps, self.learning_rate, self.batch_size = num_steps, learning_rate, batch_size
        self._sd, self._weights = sd, parameters(sd)
        self.model = engine.model(sd, config)
        self.optimizer = Adam(list(self.model.parameters()))
        self.forward_model = self.model
        if engine.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.forward_model = DistributedDataParallel(self.model)
        self.step = 0
        self._synced = True  # whether the Weights hold the model's weights

    # --- the Weights: what checkpoints and samplers read
    def sync(self):
        if not self._synced:
            for w, x in zip(self._weights, self.optimizer.flat.tolist()):
                w.data = x
            self._synced = True

    @property
    def sd(self):
        self.sync()
        return self._sd

    @property
    def params(self):
        self.sync()
        return self._weights

    # --- the data
    def documents_at(self, step):
        """This process's share of the documents step trains on: the batch is the next
        batch_size documents in the reference's order; process r takes its r-th part."""
        share = self.batch_size // self.engine.world_size
        first = step * self.batch_size + self.engine.rank * share
        return [self.docs[(first + j) % len(self.docs)] for j in range(share)]

    def batch(self, docs):
        """(idx, targets, lengths): (B, T), (B, T), (B,) tensors, documents padded to the longest."""
        rows, lengths = [], []
        for doc in docs:
            tokens = self.tokenizer.document_tokens(doc)[:self.config.block_size + 1]
            rows.append(tokens)
            lengths.append(len(tokens) - 1)
        width = max(lengths) + 1
        rows = [r + [self.tokenizer.bos] * (width - len(r)) for r in rows]
        t = torch.tensor(rows, device=self.engine.device)
        return t[:, :-1], t[:, 1:], torch.tensor(lengths, device=self.engine.device)

    # --- a step
    def train_step(self, lap=None):
        step = self.step
        lr_t = self.lr_at(step)
        docs = self.documents_at(step)
        with self.engine.autocast():
            _, doc_losses = self.forward_model(*self.batch(docs))
        loss = doc_losses.float().sum() if doc_losses.dtype == torch.bfloat16 else doc_losses.sum()
        loss = loss * (1 / len(docs))  # the mean of this process's documents' losses
        if lap is not None:
            lap("forward")
        loss.backward()  # (DistributedDataParallel averages the gradients across processes)
        if lap is not None:
            lap("backward")
        loss_value = self.global_mean(loss.detach())
        self.optimizer.step(lr_t, step)
        if lap is not None:
            lap("optimizer")
        self._synced = False
        self.step += 1
        return step + 1, loss_value, lr_t

    def global_mean(self, loss):
        if self.engine.world_size > 1:
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss = loss / self.engine.world_size
        return float(loss)

    def run(self, on_step=None):
        try:
            super().run(on_step)
        finally:
            self.sync()

    VALIDATION_BATCH = 256

    @torch.no_grad()
    def validation_loss(self, docs):
        """The mean document loss over docs, as train.Trainer's (summed in document order)."""
        total = 0.0
        for i in range(0, len(docs), self.VALIDATION_BATCH):
            with self.engine.autocast():
                _, losses = self.model(*self.batch(docs[i:i + self.VALIDATION_BATCH]))
            for x in losses.double().tolist():
                total += x
        return total / len(docs)


class Sampler:
    """train.ModelSampler's interface: the next token's probabilities, one position at a
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


TorchEngine.Trainer = TorchTrainer  # build_run calls engine.Trainer(engine, sd, ...), as train.Trainer
