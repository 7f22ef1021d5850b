"""Export-time rewrites that make the ONNX graph cheaper without changing what it computes.

Profiled with onnxruntime's profiler on the default PatchCore (Lite0, 256 px, memory bank 16384,
2 threads): of about 120 ms per image, the nearest-neighbour search was 38 ms of matrix product
plus about 55 ms of element-wise passes over the 1024 x 16384 distance matrix (``-2xy``, ``+|x|^2``,
``+|y|^2``, clamp, sqrt, then min and argmin), and the 33 x 33 Gaussian blur of the anomaly map
was a dense convolution of 20 ms. Both are rewritten here, for export only (training and
anomalib's own inference are untouched):

- nearest neighbour: ``min_j |x - b_j|^2 = |x|^2 + min_j (|b_j|^2 - 2 x.b_j)``; the bracket is
  one matrix product of ``[x, 1]`` with ``[-2 b, |b|^2]`` (the bank side is a constant, folded
  when the session loads), so the only pass over the big matrix is the argmin; clamp and sqrt
  act on one value per patch.
- Gaussian blur: the 2-D Gaussian kernel is the outer product of two 1-D ones, so two 1-D
  convolutions (33 + 33 taps instead of 1089) give the same result up to rounding.

``tests/anomaly/test_train.py`` checks that onnxruntime on the exported file matches anomalib's
own prediction of the same model.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F

SEARCH_CHUNK = 1024
"""Memory-bank rows per block of the exported nearest-neighbour search: the distance block of
one image is 1024 x 1024 floats (4 MB, inside this machine's 32 MB L3 with room to spare)
instead of 1024 x 8192 (32 MB), reduced by ReduceMin while it is still in cache. Blocks of 1024
rows against 4096 (``bench/anomaly_search_chunks.py``, the same fitted model exported both ways,
interleaved, load 1.4-3.5): the whole run 0.985x the CPU on magnetic tile (38.3 vs 38.9 ms, n = 696)
and 0.963x on transistor (n = 75), peak RSS 5-11 MB lower; anomaly maps of every test image
identical (largest difference 0)."""


def _fast_nearest_neighbors(self, embedding: torch.Tensor, n_neighbors: int):
    if n_neighbors != 1:
        return type(self).nearest_neighbors(self, embedding, n_neighbors)
    bank = self.memory_bank
    bank_aug = torch.cat([-2.0 * bank, bank.pow(2).sum(dim=-1, keepdim=True)], dim=1)  # [M, d + 1]
    ones = torch.ones_like(embedding[:, :1])
    x1 = torch.cat([embedding, ones], dim=1)
    # The runtime reads only the anomaly map, which needs the nearest distance, not its index:
    # blocks of the bank, each reduced by ReduceMin (no ArgMin, no GatherElements), then Min.
    best: torch.Tensor | None = None
    for start in range(0, bank_aug.shape[0], SEARCH_CHUNK):
        part = torch.matmul(x1, bank_aug[start : start + SEARCH_CHUNK].transpose(0, 1)).amin(dim=1)
        best = part if best is None else torch.minimum(best, part)
    assert best is not None
    scores = (best + embedding.pow(2).sum(dim=-1)).clamp_min(0).sqrt()
    # The index feeds only anomalib's pred_score, an output the exported file drops
    # (keep_outputs): this branch is pruned from the graph.
    locations = torch.matmul(x1, bank_aug.transpose(0, 1)).argmin(dim=1)
    return scores, locations


def _separable_blur(self, input_tensor: torch.Tensor) -> torch.Tensor:
    x = input_tensor
    if self.padding == "same":
        x = F.pad(x, self.padding_shape, mode=self.border_type)
    x = F.conv2d(x, self._row, groups=self.channels)
    return F.conv2d(x, self._col, groups=self.channels)


def _separate(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``kernel`` [C, 1, H, W] as a column [C, 1, H, 1] times a row [C, 1, 1, W], if it is one."""
    k = kernel[0, 0].double()
    col = k.sum(dim=1)
    row = k.sum(dim=0) / k.sum()
    if not torch.allclose(torch.outer(col, row), k, rtol=1e-5, atol=1e-9):
        return None
    c = kernel.shape[0]
    return (
        col.float().view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(),
        row.float().view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(),
    )


@contextlib.contextmanager
def fast_export(model: torch.nn.Module) -> Iterator[None]:
    """Patch ``model`` (anomalib's torch model) for the duration of an ONNX export."""
    from anomalib.models.components.filters import GaussianBlur2d

    patched: list[tuple[torch.nn.Module, str]] = []  # instance attributes to delete afterwards
    if hasattr(model, "nearest_neighbors") and hasattr(model, "memory_bank"):
        model.nearest_neighbors = types.MethodType(_fast_nearest_neighbors, model)  # type: ignore[assignment]
        patched.append((model, "nearest_neighbors"))
    for m in model.modules():
        if isinstance(m, GaussianBlur2d) and (parts := _separate(m.kernel)) is not None:
            m._col, m._row = parts
            m.forward = types.MethodType(_separable_blur, m)  # type: ignore[method-assign]
            patched += [(m, "_col"), (m, "_row"), (m, "forward")]
    try:
        yield
    finally:
        for obj, attr in patched:
            del obj.__dict__[attr]
