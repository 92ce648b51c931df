"""Self-attention pooling with ONE learnable query (SAMU-XLS-R's utterance embedding).

Safari et al. (2020), as used by SAMU-XLS-R: each frame's score is its dot product with a
learned query, scaled by ``1/sqrt(D)``; padded frames get ``-inf`` before the softmax, and the
embedding is the attention-weighted sum of the frames. Padding never enters the result.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AttentionPooling(nn.Module):
    """``(hidden (B, T, D), mask (B, T) bool) -> (B, D)`` with one learnable query of size D.

    Args:
        dim: D, the size of the frames.
        init_std: standard deviation of the query's initial values (near 0: the pooling starts
            close to a masked mean).
    """

    def __init__(self, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.dim = dim
        self.query = nn.Parameter(torch.empty(dim))
        nn.init.normal_(self.query, std=init_std)

    def weights(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, T): softmax over the valid frames, exactly 0 on padding."""
        if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
            raise ValueError(
                f"expected hidden (B, T, D) and mask (B, T), got {tuple(hidden.shape)} "
                f"and {tuple(mask.shape)}"
            )
        if not bool(mask.any(dim=1).all()):
            raise ValueError("an utterance has no valid frame to pool")
        valid = mask.to(torch.bool)
        # Padded values are replaced before the dot product, so inf/nan there cannot leak.
        frames = hidden.masked_fill(~valid[:, :, None], 0.0)
        scores = frames @ self.query.to(frames.dtype) / math.sqrt(self.dim)
        scores = scores.float().masked_fill(~valid, float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool (B, T, D) frames with their (B, T) validity mask into (B, D) embeddings."""
        weights = self.weights(hidden, mask)
        frames = hidden.masked_fill(~mask.to(torch.bool)[:, :, None], 0.0)
        return torch.einsum("bt,btd->bd", weights.to(frames.dtype), frames)
