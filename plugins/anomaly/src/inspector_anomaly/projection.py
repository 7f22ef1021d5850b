"""PatchCore with fewer feature dimensions in the nearest-neighbour search (training side; torch).

The search of the exported graph is one matrix product of the part's 1024 patch features (152
of them for Lite0 blocks 2 + 4, plus one) with the memory bank: its cost grows with the bank's
rows times the feature dimension. Projecting both sides onto ``d`` dimensions before the search
cuts that product to about ``(d + 1) / 153`` of it. The projection is linear, so it needs no mean
(a shift cancels in every distance) and it goes into the graph as one more MatMul of the
``1024 x 152`` patch features with a ``152 x d`` constant, in front of the search:

- ``pca``: the leading principal axes of the training features (the patches drawn for the
  coreset), which keep the most of their squared distances for a given ``d``;
- ``random``: a seeded Gaussian matrix scaled by ``1 / sqrt(d)`` (Johnson-Lindenstrauss),
  nothing fitted.

The memory bank is chosen on the full features (the coreset) and then projected.
"""

from __future__ import annotations

import types
from typing import Any


def principal_axes(features: Any) -> Any:
    """``[D, D]`` float32: the principal axes of ``features`` ``[N, D]`` as columns, by variance, largest first."""
    import torch

    x = features.double()
    x = x - x.mean(dim=0, keepdim=True)
    cov = (x.T @ x) / max(1, x.shape[0] - 1)
    values, vectors = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(values, descending=True)
    return vectors[:, order].float().contiguous()


def projection_matrix(basis: Any, dim: int, kind: str, seed: int = 0) -> Any:
    """``[D, dim]`` float32 projection: the first ``dim`` principal axes of ``basis``
    (:func:`principal_axes`) or a seeded Gaussian matrix."""
    import torch

    full = basis.shape[0]
    if not 0 < dim <= full:
        raise ValueError(f"feature_dim must be between 1 and {full} (the backbone's features), got {dim}")
    if kind == "pca":
        return basis[:, :dim].contiguous()
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(full, dim, generator=g) / dim**0.5).contiguous()
    raise ValueError(f"unknown projection {kind!r}: use pca or random")


def _projected_reshape(self: Any, embedding: Any) -> Any:
    flat = type(self).reshape_embedding(embedding)  # anomalib's static [B*H*W, D] reshape
    return flat @ self.feature_projection


def install_projection(model: Any, projection: Any) -> None:
    """Make anomalib's ``PatchcoreModel`` project every patch feature by ``projection`` ``[D, d]``
    before the search (and in everything downstream of it). The memory bank must be projected by
    the caller. Call after the features are collected: the training pass stores what it returns."""
    if "feature_projection" in model._buffers:
        model.feature_projection = projection
    else:
        model.register_buffer("feature_projection", projection)
    model.reshape_embedding = types.MethodType(_projected_reshape, model)


def remove_projection(model: Any) -> None:
    """Undo :func:`install_projection` (the memory bank is the caller's)."""
    model.__dict__.pop("reshape_embedding", None)
    model._buffers.pop("feature_projection", None)
