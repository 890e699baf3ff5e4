"""Text generation: temperature and top-k sampling over a model's next-token logits."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from ..data.tokens import EOT


def generate(
    model,
    tokenizer: Tokenizer,
    prompt: str,
    tokens: int,
    temperature: float = 0.8,
    top_k: int = 40,
    rng: np.random.Generator | None = None,
) -> str:
    """Continue `prompt` by `tokens` tokens (stops early at end-of-text); returns the new text."""
    rng = rng or np.random.default_rng()
    eot = tokenizer.token_to_id(EOT)
    ids = tokenizer.encode(prompt).ids if prompt else [eot]
    vocab = tokenizer.get_vocab_size()
    out: list[int] = []
    for _ in range(tokens):
        context = (ids + out)[-model.T :]
        logits = model.next_token_logits(np.asarray(context, np.int32))[:vocab].astype(np.float64)
        if temperature <= 0:
            nxt = int(np.argmax(logits))
        else:
            logits /= temperature
            if 0 < top_k < len(logits):
                cutoff = np.partition(logits, -top_k)[-top_k]
                logits[logits < cutoff] = -np.inf
            p = np.exp(logits - logits.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
        if nxt == eot:
            break
        out.append(nxt)
    return tokenizer.decode(out)
