"""A second dent renderer, written apart from ``inspector_sources.synthetic`` and randomised in
every physical parameter, to measure the dent detector on renders it was not tuned on (issue 11).

Nothing is shared with the first renderer but numpy and OpenCV: other profiles, another
reflectance model, an extended light, a tilted camera, real textures, another noise model.

Per panel (480x640 grey, one dent or none), drawn at random:

- **Surface texture (albedo)**: a crop of a real good surface, read at run time from
  ``$INSPECTOR_DATA`` (never copied into the project): magnetic tile (``MT_Free``, inside the
  tile's borders) and the glass scenes of AGDD under each of its two lightings (crops clear of
  every labelled defect box), each of the three as often. (The transistor's moulded case was
  tried and dropped: its crop is too small for a panel, and mirrored copies of it made a
  periodic pattern of its embossed logo that no real part shows.) The crop is rescaled 0.8-1.6x (mirrored copies fill a
  panel larger than it), its own slow lighting
  divided out (a 24 px blur), and its contrast scaled 0.3-1.2x. ``split`` picks the files: the
  even-numbered ones for ``"tune"``, the odd-numbered ones for ``"report"``.
- **Dent profile** (depth d, size D = the disturbed area's extent):
  ``cap`` a spherical cap (parabolic bowl) with a rounded rim (the height blurred by 4-15 % of
  D), optionally a raised rim of up to 15 % of d; ``gauss`` a Gaussian bowl (D = 4 sigma);
  ``crease`` a curved line-shaped valley of length D and width 8-25 % of D, tapered at the
  ends; ``elongated`` a Gaussian ellipse of aspect 0.3-0.6 at any angle. Depth 0.5-10 % of D (log-uniform).
- **Light**: a distant extended source (azimuth 0-360 deg, elevation 8-70 deg, a disc of
  angular radius 0-25 deg sampled at 7 directions), plus a drift of the direction across the
  panel of up to 12 deg (a lamp at a finite distance), which is also the panel's uneven lighting.
- **Reflectance**: ambient 0.03-0.3, Lambert, and a GGX (Trowbridge-Reitz) specular lobe of
  roughness 0.15-0.6 with a Schlick Fresnel term; the specular share 0-0.8 of the direct light.
- **Camera**: orthographic, its axis tilted 0-20 deg from the panel's normal (this moves the
  specular lobe); optics blur sigma 0.3-1.8 px.
- **Exposure and sensor**: a gain giving a mean level of 50-190 grey (highlights may clip at
  255), shot noise (full well 500-8000 e- at 255) plus read noise 0.5-3 grey; a third of the
  panels JPEG-compressed at quality 75-95.

**Visibility** (the same definition as the first renderer's, so the two are comparable): the
peak shading contrast, max |panel with the dent - the same panel without it| in grey levels
after optics, exposure and clipping but before noise, over the surface's noise: the standard
deviation of the dent-free panel with its noise (texture + sensor noise, after JPEG) minus its
own 8 px Gaussian blur. V = 3 is a light-dark pair three times the pixel noise of the surface.

    python bench/dent_renders.py [OUT.png]    # a contact sheet of 12 panels with their V
"""

from __future__ import annotations

import dataclasses
import math
import sys
from functools import cache
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import DATA

SHAPE = (480, 640)
PROFILES = ("cap", "gauss", "crease", "elongated")
SPLITS = ("tune", "report")
DEPTH_RANGE = (0.005, 0.10)  # depth over size, log-uniform
# Seeds of the two halves never overlap (each panel's generator is seeded [base, index]).
_SEED_BASE = {"tune": 71_000, "report": 93_000}


@dataclasses.dataclass(frozen=True)
class Render:
    """One rendered panel and what the renderer knows about it."""

    image: np.ndarray
    """uint8 grey panel."""
    profile: str | None
    """cap, gauss, crease, elongated; None on a dent-free panel."""
    center: tuple[float, float] | None
    size_px: float
    depth_px: float
    footprint: np.ndarray | None
    """bool mask of the dent (|height| >= 5 % of its depth), None without a dent."""
    peak_contrast: float
    noise_sigma: float
    params: dict

    @property
    def visibility(self) -> float:
        """Peak shading contrast over the surface's pixel noise sigma."""
        return self.peak_contrast / self.noise_sigma if self.noise_sigma > 0 else float("inf")


# --- textures -------------------------------------------------------------------------------


def _agdd_boxes(img_path: Path) -> list[tuple[float, float, float, float]]:
    lab = img_path.parents[2] / "labels_rect" / "train" / (img_path.stem + ".txt")
    if not lab.exists():
        return []
    out = []
    for line in lab.read_text().split("\n"):
        p = line.split()
        if len(p) == 5:
            cx, cy, w, h = map(float, p[1:])
            out.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return out


@cache
def texture_files(split: str) -> tuple[tuple[str, Path], ...]:
    """(kind, path) of the good surfaces this split crops its textures from."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (got {split!r})")
    k = SPLITS.index(split)
    sets = {
        "tile": sorted((DATA / "magnetic_tile" / "MT_Free" / "Imgs").glob("*.jpg")),
        # AGDD's two lightings of the same scenes: two surfaces as a camera sees them.
        "glass-a": sorted((DATA / "agdd" / "data" / "image" / "train").glob("*.png")),
        "glass-b": sorted((DATA / "agdd" / "data" / "images" / "train").glob("*.png")),
    }
    out = tuple((kind, p) for kind, files in sets.items() for p in files[k::2])
    if not out:
        raise FileNotFoundError(
            f"no texture images under {DATA}: set INSPECTOR_DATA to the shared data folder (its README lists them)"
        )
    return out


@cache
def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"cannot read texture {path}: check INSPECTOR_DATA and the data folder's README")
    return img


def _crop(rng: np.random.Generator, kind: str, path: Path) -> np.ndarray:
    """A float crop of a good region of one image (before rescaling)."""
    img = _read(path)
    h, w = img.shape
    if kind == "tile":  # inside the tile's borders
        my, mx = max(4, int(0.06 * h)), max(4, int(0.06 * w))
        return img[my : h - my, mx : w - mx].astype(np.float32)
    # glass: a 200-320 px window that holds no labelled defect
    boxes = _agdd_boxes(path)
    for _ in range(60):
        s = int(rng.integers(200, 321))
        x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        fx0, fy0, fx1, fy1 = x0 / w, y0 / h, (x0 + s) / w, (y0 + s) / h
        if not any(bx0 < fx1 and fx0 < bx1 and by0 < fy1 and fy0 < by1 for bx0, by0, bx1, by1 in boxes):
            return img[y0 : y0 + s, x0 : x0 + s].astype(np.float32)
    return img[:200, :200].astype(np.float32)


def texture(rng: np.random.Generator, split: str, shape: tuple[int, int] = SHAPE) -> tuple[np.ndarray, str]:
    """A relative albedo map (mean about 1) of ``shape`` from a real good surface of ``split``."""
    files = texture_files(split)
    kinds = sorted({k for k, _ in files})
    kind = kinds[int(rng.integers(len(kinds)))]  # each surface as often, whatever its file count
    paths = [p for k, p in files if k == kind]
    path = paths[int(rng.integers(len(paths)))]
    crop = _crop(rng, kind, path)
    h, w = shape
    scale = float(rng.uniform(0.8, 1.6))
    big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    if big.shape[0] < h or big.shape[1] < w:  # mirrored copies, not a magnified one
        py, px = max(h - big.shape[0], 0), max(w - big.shape[1], 0)
        big = cv2.copyMakeBorder(big, py // 2, py - py // 2, px // 2, px - px // 2, cv2.BORDER_REFLECT)
        while big.shape[0] < h or big.shape[1] < w:
            big = cv2.copyMakeBorder(big, 0, max(h - big.shape[0], 0), 0, max(w - big.shape[1], 0), cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        big = big.T.copy() if big.shape[1] >= h and big.shape[0] >= w else big
    bh, bw = big.shape
    y0, x0 = int(rng.integers(0, bh - h + 1)), int(rng.integers(0, bw - w + 1))
    t = np.maximum(big[y0 : y0 + h, x0 : x0 + w], 1.0)
    rel = t / np.maximum(cv2.GaussianBlur(t, (0, 0), 24), 1.0)
    k = float(rng.uniform(0.3, 1.2))
    return np.clip(1.0 + k * (rel - 1.0), 0.2, 3.0).astype(np.float32), f"{kind}:{path.name}"


# --- geometry -------------------------------------------------------------------------------


def height_map(
    rng: np.random.Generator, shape: tuple[int, int], profile: str, size: float, depth: float, center
) -> tuple[np.ndarray, dict]:
    """Height (px, <= 0 in the dent) of one dent of ``profile``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = center
    ang = float(rng.uniform(0, math.pi))
    u = (xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)
    v = -(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)
    info: dict = {"angle_deg": round(math.degrees(ang), 1)}
    if profile == "cap":
        r = size / 2
        rho2 = (u * u + v * v) / (r * r)
        z = -depth * np.clip(1.0 - rho2, 0.0, None)
        rim = float(rng.uniform(0, 0.15)) if rng.random() < 0.5 else 0.0
        if rim > 0:
            rr = np.sqrt(rho2)
            z = z + depth * rim * np.exp(-(((rr - 1.1) / 0.12) ** 2))
        soft = float(rng.uniform(0.04, 0.15)) * size
        z = cv2.GaussianBlur(z, (0, 0), soft)
        info.update(rim=round(rim, 3), rim_soft_px=round(soft, 1))
    elif profile == "gauss":
        s = size / 4
        z = -depth * np.exp(-(u * u + v * v) / (2 * s * s))
    elif profile == "elongated":
        aspect = float(rng.uniform(0.3, 0.6))
        s = size / 4
        z = -depth * np.exp(-(u * u / (2 * s * s) + v * v / (2 * (s * aspect) ** 2)))
        info["aspect"] = round(aspect, 2)
    elif profile == "crease":
        width = float(rng.uniform(0.08, 0.25)) * size
        bend = float(rng.uniform(-0.3, 0.3)) / size  # curvature of the crease's line
        half = size / 2
        vc = v - bend * u * u  # distance from a parabola through the centre
        taper = np.clip(1.0 - (u / half) ** 2, 0.0, None) ** 1.5
        s = width / 4
        z = -depth * taper * np.exp(-(vc * vc) / (2 * s * s))
        info.update(width_px=round(width, 1), bend=round(bend * size, 2))
    else:
        raise ValueError(f"profile must be one of {PROFILES} (got {profile!r})")
    return z.astype(np.float32), info


# --- light and reflectance -------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _dir(az_deg: float, el_deg: float) -> np.ndarray:
    az, el = math.radians(az_deg), math.radians(el_deg)
    return np.array([math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el)], np.float32)


def radiance(
    nx, ny, nz, light: np.ndarray, view: np.ndarray, kd: float, ks: float, rough: float, ambient: float
) -> np.ndarray:
    """Ambient + Lambert + GGX specular (Schlick Fresnel, F0 0.04, no shadowing term) of unit
    normals (nx, ny, nz) lit from ``light`` (..., 3) seen from ``view`` (3,)."""
    lx, ly, lz = light[..., 0], light[..., 1], light[..., 2]
    ndl = np.maximum(nx * lx + ny * ly + nz * lz, 0.0)
    hx, hy, hz = lx + view[0], ly + view[1], lz + view[2]
    hn = np.sqrt(hx * hx + hy * hy + hz * hz)
    hx, hy, hz = hx / hn, hy / hn, hz / hn
    ndh = np.maximum(nx * hx + ny * hy + nz * hz, 0.0)
    ndv = np.maximum(nx * view[0] + ny * view[1] + nz * view[2], 1e-3)
    a2 = rough**4
    dd = a2 / (math.pi * (ndh * ndh * (a2 - 1.0) + 1.0) ** 2)
    vdh = np.maximum(view[0] * hx + view[1] * hy + view[2] * hz, 0.0)
    fres = 0.04 + 0.96 * (1.0 - vdh) ** 5
    spec = dd * fres / (4.0 * ndv)
    return ambient + kd * ndl + ks * spec * ndl


def shade(
    z: np.ndarray, rng: np.random.Generator, box: tuple[int, int, int, int] | None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(image with the dent, the same without it) as radiance, and the light's parameters.
    ``box`` (x0, y0, x1, y1) bounds where ``z`` is not zero (elsewhere both are the same)."""
    h, w = z.shape
    az = float(rng.uniform(0, 360))
    el = float(rng.uniform(8, 70))
    spread = float(rng.uniform(0, 25))
    drift = float(rng.uniform(0, 12))
    tilt, tilt_az = float(rng.uniform(0, 20)), float(rng.uniform(0, 360))
    view = _dir(tilt_az, 90 - tilt)
    ks_share = float(rng.uniform(0, 0.8))
    rough = float(rng.uniform(0.15, 0.6))
    ambient = float(rng.uniform(0.03, 0.3))
    kd, ks = 1.0 - ks_share, ks_share
    # An extended source: its centre and six points on a ring of angular radius ``spread``.
    samples = [(0.0, 0.0)] + [
        (spread * math.cos(k * math.pi / 3), spread * math.sin(k * math.pi / 3)) for k in range(6)
    ]
    ca, sa = math.cos(math.radians(az)), math.sin(math.radians(az))

    def lights(xx: np.ndarray, yy: np.ndarray):
        # The light's direction drifts across the panel (a lamp at a finite distance).
        d_az = drift * ((xx / w - 0.5) * ca - (yy / h - 0.5) * sa)
        d_el = drift * 0.5 * ((yy / h - 0.5) * ca + (xx / w - 0.5) * sa)
        for da, de in samples:
            a = np.radians(az + d_az + da / max(math.cos(math.radians(el)), 0.2))
            e = np.radians(np.clip(el + d_el + de, 2.0, 88.0))
            yield np.stack([np.cos(e) * np.cos(a), -np.cos(e) * np.sin(a), np.sin(e)], axis=-1).astype(np.float32)

    # The flat panel's radiance varies slowly: computed on a coarse grid and interpolated.
    gyy, gxx = np.mgrid[0 : h + 8 : 8, 0 : w + 8 : 8].astype(np.float32)
    zero, one = np.zeros_like(gxx), np.ones_like(gxx)
    coarse = sum(radiance(zero, zero, one, lt, view, kd, ks, rough, ambient) for lt in lights(gxx, gyy))
    coarse = np.asarray(coarse, np.float32) / len(samples)
    flat = cv2.resize(coarse, (gxx.shape[1] * 8, gxx.shape[0] * 8), interpolation=cv2.INTER_LINEAR)
    flat = np.ascontiguousarray(flat[4 : h + 4, 4 : w + 4])
    lit = flat.copy()
    if box is not None:
        x0, y0, x1, y1 = box
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        gy, gx = np.gradient(z[y0:y1, x0:x1])
        nn = np.sqrt(1.0 + gx * gx + gy * gy)
        nx, ny, nz = -gx / nn, -gy / nn, 1.0 / nn
        zb, ob = np.zeros_like(nx), np.ones_like(nx)
        on, off = np.zeros_like(nx), np.zeros_like(nx)
        for lt in lights(xx, yy):
            on += radiance(nx, ny, nz, lt, view, kd, ks, rough, ambient)
            off += radiance(zb, zb, ob, lt, view, kd, ks, rough, ambient)
        # The dent's relative radiance on the interpolated flat panel (exactly 1 outside it).
        lit[y0:y1, x0:x1] *= on / off
    params = {
        "light_azimuth_deg": round(az, 1),
        "light_elevation_deg": round(el, 1),
        "light_spread_deg": round(spread, 1),
        "light_drift_deg": round(drift, 1),
        "camera_tilt_deg": round(tilt, 1),
        "specular_share": round(ks_share, 2),
        "roughness": round(rough, 2),
        "ambient": round(ambient, 2),
    }
    return lit, flat, params


# --- the panel --------------------------------------------------------------------------------


def render(
    rng: np.random.Generator,
    split: str,
    *,
    dent: bool = True,
    shape: tuple[int, int] = SHAPE,
    profile: str | None = None,
) -> Render:
    """One panel of ``split`` (its textures), with one dent of a random profile or none."""
    h, w = shape
    albedo, tex = texture(rng, split, shape)
    prof = profile or PROFILES[int(rng.integers(len(PROFILES)))]
    size = float(np.exp(rng.uniform(math.log(30), math.log(160))))
    depth = size * float(np.exp(rng.uniform(math.log(DEPTH_RANGE[0]), math.log(DEPTH_RANGE[1]))))
    m = size / 2 + 10
    center = (float(rng.uniform(m, w - m)), float(rng.uniform(m, h - m)))
    if dent:
        z, info = height_map(rng, shape, prof, size, depth, center)
    else:
        z, info = np.zeros(shape, np.float32), {}
    box = None
    if dent:
        nzr = np.nonzero(np.abs(z).max(axis=1) > 1e-4 * depth)[0]
        nzc = np.nonzero(np.abs(z).max(axis=0) > 1e-4 * depth)[0]
        box = (max(int(nzc[0]) - 2, 0), max(int(nzr[0]) - 2, 0), min(int(nzc[-1]) + 3, w), min(int(nzr[-1]) + 3, h))
    lit, flat, lparams = shade(z, rng, box)
    blur = float(rng.uniform(0.3, 1.8))
    level = float(rng.uniform(50, 190))
    raw_with, raw_without = albedo * lit, albedo * flat
    gain = level / float(raw_without.mean())
    clean_with = np.clip(cv2.GaussianBlur(raw_with * gain, (0, 0), blur), 0, 255)
    clean_without = np.clip(cv2.GaussianBlur(raw_without * gain, (0, 0), blur), 0, 255)
    full_well = float(np.exp(rng.uniform(math.log(500), math.log(8000))))
    read = float(rng.uniform(0.5, 3.0))
    e_per_grey = full_well / 255.0
    jpeg = int(rng.integers(75, 96)) if rng.random() < 1 / 3 else None
    noise_seed = int(rng.integers(2**31))

    def expose(clean: np.ndarray) -> np.ndarray:
        nrng = np.random.default_rng(noise_seed)  # the same noise with and without the dent
        shot = nrng.poisson(np.maximum(clean, 0) * e_per_grey) / e_per_grey
        img = np.clip(np.round(shot + nrng.normal(0, read, clean.shape)), 0, 255).astype(np.uint8)
        if jpeg is not None:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        return img

    image = expose(clean_with) if dent else expose(clean_without)
    noisy_flat = image if not dent else expose(clean_without)
    nf = noisy_flat.astype(np.float32)
    sigma = float(np.std(nf - cv2.GaussianBlur(nf, (0, 0), 8)))
    peak = float(np.abs(clean_with - clean_without).max()) if dent else 0.0
    foot = None
    if dent:
        foot = np.abs(z) >= 0.05 * depth
    params = {
        "texture": tex,
        **info,
        **lparams,
        "blur_px": round(blur, 2),
        "level": round(level, 1),
        "full_well_e": round(full_well),
        "read_noise": round(read, 2),
        "jpeg_quality": jpeg,
    }
    return Render(
        image=image,
        profile=prof if dent else None,
        center=center if dent else None,
        size_px=size if dent else 0.0,
        depth_px=depth if dent else 0.0,
        footprint=foot,
        peak_contrast=peak,
        noise_sigma=sigma,
        params=params,
    )


def renders(n: int, split: str, *, dent: bool = True, start: int = 0):
    """Panels ``start`` .. ``start + n - 1`` of ``split`` (each its own seeded generator)."""
    base = _SEED_BASE[split] + (0 if dent else 500_000)
    for k in range(start, start + n):
        yield render(np.random.default_rng([base, k]), split, dent=dent)


def contact_sheet(path: Path, split: str = "tune", n: int = 12) -> None:
    tiles = []
    for r in renders(n, split):
        t = cv2.cvtColor(r.image, cv2.COLOR_GRAY2BGR)
        if r.footprint is not None:
            cnt, _ = cv2.findContours(r.footprint.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(t, cnt, -1, (0, 200, 255), 1)
        cv2.putText(t, f"{r.profile} V={r.visibility:.1f} D={r.size_px:.0f}", (8, 24), 0, 0.7, (0, 255, 0), 2)
        tiles.append(cv2.resize(t, (320, 240), interpolation=cv2.INTER_AREA))
    rows = [np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(path), np.vstack(rows))


if __name__ == "__main__":
    contact_sheet(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dent_renders.png"))
