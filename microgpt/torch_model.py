"""The GPT of model.py, vectorised on PyTorch: a batch of documents at once.

It is model.py line for line, on tensors: token and position embeddings,
rmsnorm (no weight, eps 1e-5), then per layer rmsnorm, causal multi-head
attention (q, k, v, o without bias, scale 1/sqrt(head_dim)), a residual,
rmsnorm, an MLP (fc1 to 4x, ReLU, fc2), a residual; an untied lm_head and no
final norm. Its parameters carry the state dict's names and shapes
(``wte``, ``wpe``, ``lm_head``, ``layer{i}.attn_wq`` ...), so the weights move
between this model and the scalar engines as they are.

The operations are written in the reference's order where it changes the
rounding (softmax as exp / sum with the largest logit subtracted as a constant,
the probabilities then -log, divisions by a number as products by its inverse),
so float64 losses stay within about 1e-15 of the scalar engines'.
"""
import torch
from torch import nn

from .model import Config  # noqa: F401  (the same configuration as the scalar model)


def rmsnorm(x):
    # x: (..., C); no weight, as in model.py
    ms = (x * x).sum(-1, keepdim=True) * (1 / x.shape[-1])
    return x * (ms + 1e-5) ** -0.5


def softmax(logits):
    # the largest logit is a constant (no gradient flows through it), as in model.py;
    # masked positions hold -inf and contribute exp(-inf) = 0
    max_val = logits.max(dim=-1, keepdim=True).values.detach()
    exps = (logits - max_val).exp()
    return exps * exps.sum(-1, keepdim=True) ** -1


class Block(nn.Module):
    """One transformer layer: attention then MLP, each on an rmsnorm'd input with a residual."""

    def __init__(self, config):
        super().__init__()
        c = config.n_embd
        self.n_head = config.n_head
        self.attn_wq = nn.Parameter(torch.zeros(c, c))
        self.attn_wk = nn.Parameter(torch.zeros(c, c))
        self.attn_wv = nn.Parameter(torch.zeros(c, c))
        self.attn_wo = nn.Parameter(torch.zeros(c, c))
        self.mlp_fc1 = nn.Parameter(torch.zeros(4 * c, c))
        self.mlp_fc2 = nn.Parameter(torch.zeros(c, 4 * c))

    def attention(self, x):
        B, T, C = x.shape
        H = self.n_head
        hd = C // H
        # (B, T, C) -> (B, H, T, hd)
        q = (x @ self.attn_wq.T).view(B, T, H, hd).transpose(1, 2)
        k = (x @ self.attn_wk.T).view(B, T, H, hd).transpose(1, 2)
        v = (x @ self.attn_wv.T).view(B, T, H, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (hd ** 0.5) ** -1  # (B, H, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = softmax(att.masked_fill(~causal, float("-inf")))
        y = att @ v  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)  # the heads side by side
        return y @ self.attn_wo.T

    def mlp(self, x):
        return torch.relu(x @ self.mlp_fc1.T) @ self.mlp_fc2.T

    def forward(self, x):
        x = self.attention(rmsnorm(x)) + x
        x = self.mlp(rmsnorm(x)) + x
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        c = config
        # registered in the state dict's order: wte, wpe, lm_head, then the layers
        self.wte = nn.Parameter(torch.zeros(c.vocab_size, c.n_embd))
        self.wpe = nn.Parameter(torch.zeros(c.block_size, c.n_embd))
        self.lm_head = nn.Parameter(torch.zeros(c.vocab_size, c.n_embd))
        for i in range(c.n_layer):
            self.add_module(f"layer{i}", Block(c))

    @property
    def layers(self):
        return [getattr(self, f"layer{i}") for i in range(self.config.n_layer)]

    def forward(self, idx, targets=None, lengths=None):
        """idx: (B, T) token ids. Returns the logits (B, T, vocab_size); with targets
        (B, T) and lengths (B,) (the positions of each document that count; the rest
        is padding), also each document's loss (B,): the mean of -log p(target) over
        its positions."""
        B, T = idx.shape
        x = self.wte[idx] + self.wpe[:T]  # (B, T, C)
        x = rmsnorm(x)
        for block in self.layers:
            x = block(x)
        logits = x @ self.lm_head.T  # (B, T, vocab_size)
        if targets is None:
            return logits
        probs = softmax(logits)
        p_target = probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
        # padding takes p = 1 (a loss of 0) before the log, so no inf or nan reaches a gradient
        counted = torch.arange(T, device=idx.device) < lengths.unsqueeze(-1)  # (B, T)
        losses = -torch.where(counted, p_target, torch.ones_like(p_target)).log()
        return logits, losses.sum(-1) * lengths.to(losses.dtype) ** -1


def load_weights(model, rows_by_name):
    """Copy {name: rows of floats} (a checkpoint's weights, the state dict's layout) into model."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.tensor(rows_by_name[name], dtype=torch.float64))


def from_safetensors(path, device="cpu"):
    """The model saved by `microgpt export`: its config from the file's metadata."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(path, "pt") as f:
        config = Config(**json.loads(f.metadata()["config"]))
    tensors = load_file(path, device=device)
    model = GPT(config).to(device=device, dtype=tensors["wte"].dtype)
    model.load_state_dict(tensors)
    return model
