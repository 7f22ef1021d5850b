"""Train the optional dent patch classifier on rendered panels only, and export it to ONNX.

Not used by the detector at run time unless its file is shipped (see docs/detectors/dent.md for
why it is not). Two steps, two venvs: the renderer needs the runtime venv, training needs torch.

    .venv/bin/python plugins/dent/train_patch_model.py render OUT.npz [N]
    .venv-train/bin/python plugins/dent/train_patch_model.py train OUT.npz MODEL.onnx

Patches are 96x96 grey, rendered with inspector_sources.synthetic's dent model (Lambert + Blinn-
Phong shading of one or several depressions and creases) on panels that also carry what a car
panel shows without a dent: a slow colour field, reflected horizon bands (whose reflection a
dent's normals displace), panel gaps, lines, holes, highlights, texture and noise.
"""

from __future__ import annotations

import math
import sys

import numpy as np

P = 96


def _panel(rng):
    import cv2

    yy, xx = np.mgrid[0:P, 0:P].astype(np.float32)
    base = rng.uniform(40, 220)
    field = cv2.resize(rng.normal(0, 1, (4, 4)).astype(np.float32), (P, P), interpolation=cv2.INTER_CUBIC)
    img = base * (1 + rng.uniform(0.0, 0.25) * field)
    return img, xx, yy


def render_patch(rng, dent: bool):
    import cv2
    from inspector_sources.synthetic import (
        METAL,
        PAINT,
        dent_height,
        render_dent_shading,
    )

    img, xx, yy = _panel(rng)
    height = np.zeros((P, P), np.float32)
    if dent:
        for _ in range(int(rng.integers(1, 4))):
            d = rng.uniform(18, 90)
            aspect = rng.uniform(0.15, 0.35) if rng.random() < 0.25 else rng.uniform(0.6, 1.0)
            height += dent_height(
                (P, P),
                (rng.uniform(20, 76), rng.uniform(20, 76)),
                d,
                d * rng.uniform(0.01, 0.06),
                aspect,
                rng.uniform(0, 180),
            )
    az, el = rng.uniform(0, 360), rng.uniform(15, 70)
    img = img * render_dent_shading(height, az, el, PAINT if rng.random() < 0.5 else METAL)
    if rng.random() < 0.6:  # a reflected horizon band, displaced by the surface's slope
        gy, gx = np.gradient(height)
        k = rng.uniform(20, 60)
        ang = rng.uniform(0, math.pi)
        pos = (xx - 48 + k * gx) * math.cos(ang) + (yy - 48 + k * gy) * math.sin(ang) - rng.uniform(-40, 40)
        img += rng.uniform(-80, 80) / (1 + np.exp(-pos / rng.uniform(1.5, 6)))
    for _ in range(int(rng.poisson(1.0))):  # distractors that are not dents
        kind = rng.integers(0, 4)
        layer = np.zeros((P, P), np.float32)
        p0 = tuple(int(v) for v in rng.integers(0, P, 2))
        p1 = tuple(int(v) for v in rng.integers(0, P, 2))
        if kind == 0:
            cv2.line(layer, p0, p1, 1.0, int(rng.integers(1, 4)))
        elif kind == 1:
            cv2.circle(layer, p0, int(rng.integers(3, 12)), 1.0, -1)
        elif kind == 2:  # a panel gap or a part's edge
            m = np.zeros((P, P), np.float32)
            cv2.fillPoly(m, [np.array([p0, p1, (P, P), (0, P)], np.int32)], 1.0)
            layer = m
        else:
            cv2.ellipse(
                layer,
                p0,
                (int(rng.integers(3, 20)), int(rng.integers(2, 8))),
                float(rng.uniform(0, 180)),
                0,
                360,
                1.0,
                -1,
            )
        layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(0.7, 3))
        img += rng.uniform(-90, 90) * layer
    if rng.random() < 0.5:
        img += cv2.GaussianBlur(
            rng.normal(0, rng.uniform(1, 8), (P, P)).astype(np.float32), (0, 0), rng.uniform(0.6, 2)
        )
    img += rng.normal(0, rng.uniform(1, 5), (P, P))
    return np.clip(img, 0, 255).astype(np.uint8)


def render(out: str, n: int) -> None:
    rng = np.random.default_rng(2024)
    x = np.empty((n, P, P), np.uint8)
    y = np.zeros(n, np.float32)
    for i in range(n):
        y[i] = float(i % 2)
        x[i] = render_patch(rng, bool(y[i]))
    np.savez_compressed(out, x=x, y=y)


def train(data: str, out: str) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(1)
    d = np.load(data)
    x = torch.from_numpy(d["x"]).float().unsqueeze(1)
    y = torch.from_numpy(d["y"])
    n_val = len(x) // 10
    net = nn.Sequential(
        nn.Conv2d(1, 16, 5, 2, 2),
        nn.ReLU(),
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 32, 3, 2, 1),
        nn.ReLU(),
        nn.BatchNorm2d(32),
        nn.Conv2d(32, 48, 3, 2, 1),
        nn.ReLU(),
        nn.BatchNorm2d(48),
        nn.Conv2d(48, 64, 3, 2, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )

    def norm(b):  # per-patch standardisation: brightness and contrast carry no label
        m = b.mean(dim=(2, 3), keepdim=True)
        s = b.std(dim=(2, 3), keepdim=True) + 4.0
        return (b - m) / s

    opt = torch.optim.Adam(net.parameters(), 2e-3)
    lossf = nn.BCEWithLogitsLoss()
    for epoch in range(6):
        net.train()
        perm = torch.randperm(len(x) - n_val) + n_val
        for k in range(0, len(perm), 128):
            idx = perm[k : k + 128]
            b = x[idx]
            if torch.rand(1) < 0.5:
                b = b.flip(3)
            loss = lossf(net(norm(b)).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pv = net(norm(x[:n_val])).squeeze(1)
        acc = float(((pv > 0).float() == y[:n_val]).float().mean())
        print(f"epoch {epoch} loss {float(loss):.3f} val acc {acc:.3f}", flush=True)

    class WithNorm(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, b):
            return torch.sigmoid(self.net(norm(b)))

    model = WithNorm(net).eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, P, P),),
        out,
        input_names=["patch"],
        output_names=["p_dent"],
        dynamic_axes={"patch": {0: "n"}, "p_dent": {0: "n"}},
        opset_version=18,
        dynamo=False,
    )


if __name__ == "__main__":
    if sys.argv[1] == "render":
        render(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 20000)
    else:
        train(sys.argv[2], sys.argv[3])
