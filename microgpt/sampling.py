"""Sampling, as the reference does it: from BOS, each next token drawn from the
softmax of the logits divided by the temperature, until BOS or the end of the
block. The probabilities come from the engine's Sampler (replay records one),
else from the model code (model.ModelSampler).
"""
import math
import random
import statistics

from .errors import DataError, SettingError
from .model import ModelSampler


def check_prompt(prompt, tokenizer, block_size):
    """Refuse a prefix the model cannot read (a SettingError naming {prompt}): characters
    outside the vocabulary, or too long to leave a position of the block to sample."""
    unknown = list(dict.fromkeys(ch for ch in prompt if ch not in tokenizer.stoi))
    if unknown:
        raise SettingError(f"{{prompt}} has characters outside the model's vocabulary: "
                           f"{', '.join(repr(ch) for ch in unknown)} (vocabulary: {''.join(tokenizer.chars)!r})")
    if len(prompt) > block_size - 1:
        raise SettingError(f"{{prompt}} is {len(prompt)} characters; the model's block of {block_size} "
                           f"tokens holds at most {block_size - 1} after the start token")


def top_k_weights(weights, k):
    """Keep the k largest weights (ties: the lower token id first), zero the rest."""
    if k >= len(weights):
        return weights
    kept = set(sorted(range(len(weights)), key=lambda i: -weights[i])[:k])
    return [w if i in kept else 0.0 for i, w in enumerate(weights)]


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
            try:
                weights = step(token_id, pos_id, want=pos_id >= len(forced))
            except ArithmeticError as e:  # a weight so large that the forward overflows
                raise DataError(f"cannot sample: the model's weights are too large to compute with "
                                f"(at position {pos_id}: {e})") from None
            if weights is not None and not all(map(math.isfinite, weights)):
                raise DataError(f"cannot sample: the model's weights are too large to compute with "
                                f"(at position {pos_id} the next token's probabilities are not finite)")
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


def make_sampler(engine, sd, config, documents=None, positions=None, trained=None):
    """The engine's sampler (replay records one), else the model code's.
    documents: how many documents will be drawn from it, when known; positions:
    a guess of how many positions each takes (replay then records as soon as
    they would cost the model code more; a wrong guess costs time, never a
    different document). trained: the trainer's document loss that trained sd
    (Trainer.document_loss): replay samples on its recording where it can,
    and records none of its own."""
    sampler = getattr(engine, "Sampler", ModelSampler)(sd, config)
    if documents is not None and hasattr(sampler, "expect"):
        sampler.expect(documents, positions)
    if trained is not None and hasattr(sampler, "reuse"):
        sampler.reuse(trained)
    return sampler


def typical_positions(docs, block_size):
    """The median document's positions (its characters and the end token, at
    most the block): what a model trained on docs is likely to sample."""
    return statistics.median_low(min(len(doc) + 1, block_size) for doc in docs) if docs else None
