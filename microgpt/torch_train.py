"""The torch engine's trainer: train.Trainer's interface over the torch model.

A step is ``batch_size`` documents, the next ones in the reference's order (the
reference's step is batch_size 1), padded and masked; its loss is the mean of
their losses; Adam is torch_engine.Adam (the reference's arithmetic on one flat
vector). Under torch.distributed each process trains its share of the batch
inside DistributedDataParallel, which all-reduces the gradients; the loss
reported is the whole batch's mean.

The weights live in the model; ``sd`` and ``params`` give the state dict's
Weights back, brought up to date when read, so state.py checkpoints and
restores them as on every engine.
"""
import torch

from .errors import UsageError
from .model import parameters
from .train import BETA1, BETA2, EPS, Trainer


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
        self.optimizer = engine.Adam(list(self.model.parameters()), beta1=BETA1, beta2=BETA2, eps=EPS)
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
