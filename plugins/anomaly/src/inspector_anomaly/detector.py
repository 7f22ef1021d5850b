"""The ``anomaly`` detector: a trained anomaly model (ONNX + card) run by onnxruntime.

Runtime only: numpy, OpenCV, onnxruntime. Never imports torch (a test checks it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from inspector_anomaly.card import ModelCard, load_card, sha256_file
from inspector_anomaly.preprocess import prepare, prepare_tiles
from inspector_anomaly.reference import PARITY_TOLERANCE, part_score, reference_inputs
from inspector_core import Detector, Finding, PluginConfig, View

if TYPE_CHECKING:
    from onnxruntime import InferenceSession


class TilingConfig(PluginConfig):
    """Cut a large view into overlapping tiles, each run through the model at the model's size."""

    tile_px: int = Field(gt=16, description="side of a square tile in view pixels")
    overlap_px: int = Field(0, ge=0, description="overlap between neighbouring tiles, view pixels")

    @model_validator(mode="after")
    def _overlap_fits(self) -> TilingConfig:
        if self.overlap_px >= self.tile_px:
            raise ValueError(f"overlap_px must be smaller than tile_px (got {self.overlap_px} >= {self.tile_px})")
        return self


class AnomalyConfig(PluginConfig):
    model: str = Field(
        description="path of the model's .onnx file (its card NAME.json lies beside it); relative to the station file"
    )
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="expected SHA-256 of the ONNX file; refused if it differs"
    )
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads")
    spin: bool = Field(
        False,
        description="let onnxruntime's threads spin between runs (faster alone, "
        "slower when the station's other threads share the cores)",
    )
    runtime: Literal["onnxruntime", "openvino"] = Field(
        "onnxruntime",
        description="onnxruntime (CPU provider, the default) or openvino (the `inspector-anomaly[openvino]` "
        "extra); any runtime but onnxruntime's CPU provider is accepted only after the parity check",
    )
    lean_memory: bool = Field(
        True,
        description="onnxruntime without its memory-pattern planning: 20-25 MB less resident memory "
        "(memory bank 8192), no CPU difference measured (45.5 vs 46.8 ms per run, interleaved, n = 25)",
    )
    image_threshold: float | None = Field(None, description="override the card's raw image threshold")
    pixel_threshold: float | None = Field(None, description="override the card's raw pixel threshold")
    ignore_mask: str | None = Field(
        None,
        description="PNG of the view's size (resized if not): non-zero "
        "pixels are ignored (a label, a serial-number plate); relative to the station file",
    )
    min_region_px: int = Field(9, ge=1, description="smallest anomalous region reported, view pixels")
    max_regions: int = Field(20, ge=1, description="at most this many regions per part, largest peaks first")
    tiling: TilingConfig | None = Field(None, description="tile large views instead of shrinking them")


class OpenVinoSession:
    """An OpenVINO compiled model behind the one call the detector makes of a session
    (``run(output_names, feeds)``). Needs the ``openvino`` extra; float32 inference."""

    def __init__(self, path: Path, threads: int) -> None:
        try:
            import openvino as ov  # type: ignore[import-untyped]  # no stubs shipped
        except ImportError:
            raise ValueError(
                "anomaly: runtime 'openvino' needs the openvino package: pip install 'inspector-anomaly[openvino]' "
                "(or remove `runtime:` from the step to use onnxruntime)"
            ) from None
        core = ov.Core()
        self._compiled = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
        )
        self._request = self._compiled.create_infer_request()
        self._ports = {name: out for out in self._compiled.outputs for name in out.get_names()}

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer(feeds)
        return [np.asarray(result[self._ports[n]]) for n in names]


@dataclasses.dataclass
class AnomalyMap:
    """The anomaly map of one view, in view pixels (NaN where ignored / outside)."""

    raw: np.ndarray
    score_raw: float


class Anomaly(Detector):
    name: ClassVar[str] = "anomaly"
    kinds: ClassVar[tuple[str, ...]] = ("anomaly",)
    Config: ClassVar[type[PluginConfig]] = AnomalyConfig

    def __init__(self, config: AnomalyConfig, *, station_dir: Path) -> None:
        super().__init__(config, station_dir=station_dir)
        self.model_path = (Path(station_dir) / config.model).resolve()
        self.card_path = self.model_path.with_suffix(".json")
        self.card: ModelCard | None = None
        self.session: Any = None  # an onnxruntime InferenceSession, or OpenVinoSession
        self.parity: dict[str, Any] | None = None
        self._ignore_src: np.ndarray | None = None
        self._ignore_cache: dict[tuple[int, int], np.ndarray] = {}

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Load and verify the model (idempotent). Raises with the file, the problem, the remedy."""
        if self.session is not None:
            return
        cfg: AnomalyConfig = self.config  # type: ignore[assignment]
        path = self.model_path
        if path.suffix.lower() != ".onnx":
            raise ValueError(
                f"anomaly: model {path}: only ONNX files are accepted (got {path.suffix!r}); "
                "export with `inspector train anomaly`"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"anomaly: model file {path} not found; check steps[].config.model "
                "(relative to the station file) or train one with `inspector train anomaly`"
            )
        with open(path, "rb") as f:
            head = f.read(64)
        if head[:2] == b"\x80\x04" or head[:2] == b"PK" or head[:1] == b"\x80":
            raise ValueError(
                f"anomaly: {path} looks like a pickle / torch checkpoint, not ONNX; "
                "it is never unpickled: export the model to ONNX"
            )
        card = load_card(self.card_path)
        digest = sha256_file(path)
        if digest != card.onnx_sha256:
            raise ValueError(
                f"anomaly: {path}: SHA-256 {digest[:12]}... does not match its card "
                f"{self.card_path.name} ({card.onnx_sha256[:12]}...); the model and card do not "
                "belong together: re-export both"
            )
        if cfg.sha256 is not None and digest != cfg.sha256:
            raise ValueError(
                f"anomaly: {path}: SHA-256 {digest[:12]}... does not match the station's "
                f"steps[].config.sha256 ({cfg.sha256[:12]}...); update the station or the model"
            )
        self.card = card
        self._input = card.input.input_name
        self._map_out = card.outputs["anomaly_map"]
        self.session = self._open(cfg, path, card)
        if cfg.ignore_mask is not None:
            mpath = Path(self.station_dir) / cfg.ignore_mask
            m = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise FileNotFoundError(f"anomaly: ignore_mask {mpath} cannot be read; give a PNG of the ROI's size")
            self._ignore_src = m > 0
        t = card.thresholds
        self.image_threshold = cfg.image_threshold if cfg.image_threshold is not None else t.image
        self.pixel_threshold = cfg.pixel_threshold if cfg.pixel_threshold is not None else t.pixel
        self.spread = t.spread

    def _ort_session(self, cfg: AnomalyConfig, path: Path) -> InferenceSession:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cfg.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if cfg.lean_memory:
            opts.enable_mem_pattern = False
        if not cfg.spin:
            # Spinning worker threads fight the station's capture and store threads for the
            # same few cores; sleeping ones cost little per image.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def _open(self, cfg: AnomalyConfig, path: Path, card: ModelCard) -> Any:
        """The session of the configured runtime, after the parity check when it is not
        onnxruntime's CPU provider."""
        cpu = self._ort_session(cfg, path)
        names = [o.name for o in cpu.get_outputs()]
        if self._map_out not in names:
            raise ValueError(f"anomaly: {path} has no output {self._map_out!r} (has {names}); re-export the model")
        if cfg.runtime == "onnxruntime":
            return cpu
        session = OpenVinoSession(path, cfg.threads)
        inputs = reference_inputs(card.input.height, card.input.width)
        tol = (card.reference.tolerance if card.reference is not None else PARITY_TOLERANCE) * card.thresholds.spread
        want = (
            card.reference.scores
            if card.reference is not None and len(card.reference.scores) == len(inputs)
            else [self._reference_score(cpu, x) for x in inputs]
        )
        got = [self._reference_score(session, x) for x in inputs]
        worst = max(abs(a - b) for a, b in zip(want, got, strict=True))
        if not worst <= tol:  # NaN fails too
            raise ValueError(
                f"anomaly: runtime {cfg.runtime!r} fails the parity check on model {path.name}: its scores of "
                f"the {len(inputs)} reference inputs differ from onnxruntime's CPU provider by up to {worst:.4g} "
                f"(tolerance {tol:.4g} = {tol / card.thresholds.spread:.3f} x the card's spread); refusing it: "
                "remove `runtime:` from the step (onnxruntime is the default) or update openvino"
            )
        self.parity = {"runtime": cfg.runtime, "worst": worst, "tolerance": tol, "n": len(inputs)}
        return session

    def _reference_score(self, session: Any, x: np.ndarray) -> float:
        amap = session.run([self._map_out], {self._input: x})[0]
        t = self.card.thresholds  # type: ignore[union-attr]
        return part_score(amap.reshape(amap.shape[-2:]), t.image_score, t.top_fraction)

    def warm_up(self, example: np.ndarray | None = None) -> None:
        self.load()
        c = self.card.input  # type: ignore[union-attr]
        blank = np.zeros((1, 3, c.height, c.width), dtype=np.float32)
        for _ in range(2):
            self.session.run([self._map_out], {self._input: blank})

    def files(self) -> dict[str, Path]:
        return {"onnx": self.model_path, "card": self.card_path}

    def close(self) -> None:
        self.session = None

    # -- inference -----------------------------------------------------------------------
    def normalise(self, raw: float) -> float:
        """Raw score to [0, 1], 0.5 at the image threshold."""
        return float(np.clip(0.5 + (raw - self.image_threshold) / self.spread, 0.0, 1.0))

    def _ignored(self, shape: tuple[int, int]) -> np.ndarray | None:
        if self._ignore_src is None:
            return None
        if shape not in self._ignore_cache:
            m = self._ignore_src
            if m.shape != shape:
                m = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
            self._ignore_cache[shape] = m
        return self._ignore_cache[shape]

    def _run(self, image: np.ndarray) -> np.ndarray:
        """Anomaly map covering exactly ``image``, at the model's resolution (raw units)."""
        c = self.card.input  # type: ignore[union-attr]
        if c.resize == "tiles":
            return self._run_tiles(image)
        p = prepare(image, (c.height, c.width), c.resize, c.photometric, c.downscale)
        amap = self.session.run([self._map_out], {self._input: p.tensor})[0]
        amap = amap.reshape(amap.shape[-2:])
        x, y, w, h = p.valid
        return amap[y : y + h, x : x + w]

    def _run_tiles(self, image: np.ndarray) -> np.ndarray:
        c = self.card.input  # type: ignore[union-attr]
        tiles, origins, (sh, sw) = prepare_tiles(
            image, (c.height, c.width), c.scale, c.tile_overlap, c.photometric, c.downscale
        )
        amap = np.full((sh, sw), -np.inf, dtype=np.float32)
        for p, (x0, y0) in zip(tiles, origins, strict=True):
            out = self.session.run([self._map_out], {self._input: p.tensor})[0]
            out = out.reshape(out.shape[-2:])
            _, _, w, h = p.valid
            np.maximum(amap[y0 : y0 + h, x0 : x0 + w], out[:h, :w], out=amap[y0 : y0 + h, x0 : x0 + w])
        return amap

    def _coarse(self, image: np.ndarray) -> np.ndarray:
        """The map of a whole view at the model's resolution; NaN where ignored."""
        cfg: AnomalyConfig = self.config  # type: ignore[assignment]
        h, w = image.shape[:2]
        if cfg.tiling is None:
            amap = self._run(image)
        else:
            # Station-side tiling (for letterbox models): tiles in view pixels, stitched at view
            # resolution.
            t, step = cfg.tiling.tile_px, cfg.tiling.tile_px - cfg.tiling.overlap_px
            amap = np.full((h, w), -np.inf, dtype=np.float32)
            ys = list(range(0, max(h - t, 0) + 1, step)) or [0]
            xs = list(range(0, max(w - t, 0) + 1, step)) or [0]
            if ys[-1] + t < h:
                ys.append(h - t)
            if xs[-1] + t < w:
                xs.append(w - t)
            for y0 in ys:
                for x0 in xs:
                    tile = image[y0 : y0 + t, x0 : x0 + t]
                    th, tw = tile.shape[:2]
                    m = cv2.resize(self._run(tile), (tw, th), interpolation=cv2.INTER_LINEAR)
                    np.maximum(amap[y0 : y0 + th, x0 : x0 + tw], m, out=amap[y0 : y0 + th, x0 : x0 + tw])
        ignored = self._ignored(amap.shape)
        if ignored is not None:
            amap = np.where(ignored, np.float32(np.nan), amap)
        return amap

    def _score(self, coarse: np.ndarray) -> float:
        t = self.card.thresholds  # type: ignore[union-attr]
        values = coarse[~np.isnan(coarse)] if self._ignore_src is not None else coarse.ravel()
        if values.size == 0:
            return float("-inf")
        return part_score(values, t.image_score, t.top_fraction)

    def anomaly_map(self, image: np.ndarray) -> AnomalyMap:
        """The raw anomaly map at the view's size (NaN where ignored) and the part's raw score."""
        self.load()
        coarse = self._coarse(image)
        h, w = image.shape[:2]
        full = coarse if coarse.shape == (h, w) else cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        return AnomalyMap(raw=full, score_raw=self._score(coarse))

    def inspect(self, view: View) -> list[Finding]:
        self.load()
        return self._findings(view, self._coarse(view.image))

    def _findings(self, view: View, coarse: np.ndarray) -> list[Finding]:
        """The part's findings from its map at the model's resolution (NaN where ignored)."""
        cfg: AnomalyConfig = self.config  # type: ignore[assignment]
        # The part score (the map's maximum or the mean of its top share) is at most the map's
        # maximum: when even that is below the floor nothing is reported, and the partition of a
        # good part's whole map (0.3-0.4 ms of the step's CPU on 5 MP) is not needed.
        peak_any = float(coarse.max())  # NaN when any pixel is NaN (ignored, or a broken model output)
        if self._ignore_src is None and self.normalise(peak_any) < self.report_floor:
            return []
        score_raw = self._score(coarse)
        if self.normalise(score_raw) < self.report_floor:
            return []
        # NaN pixels never belong to a region; a map without any is used as it is (no copy).
        amap = coarse if not np.isnan(peak_any) else np.nan_to_num(coarse, nan=-np.inf)
        peak_all = float(amap.max())
        if peak_all >= self.pixel_threshold:
            level = self.pixel_threshold
        else:
            # Below threshold: still report the candidate (for `inspector whatif`), as the
            # blob around the peak.
            level = peak_all - 0.25 * abs(peak_all - self.image_threshold) - 1e-6
        binary = amap >= level
        # Label only the bounding box of the pixels over the level (every region lies inside it):
        # on a 256 px map with one small region, a third of the labelling's CPU, and OpenCV's
        # thread pool is woken for less.
        rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
        if rows.size == 0:
            return []
        oy, ox = int(rows[0]), int(cols[0])
        box = binary[oy : int(rows[-1]) + 1, ox : int(cols[-1]) + 1].astype(np.uint8)
        # 16-bit labels where they cannot overflow (at most one component per 2 x 2 pixels): the
        # same labels and stats, OpenCV's statistics pass about half the time of 32-bit ones.
        bh_, bw_ = box.shape
        if box.all():  # the box is one region (a part anomalous all over): nothing to label
            n, labels = 2, None
            stats = np.array([[0, 0, 0, 0, 0], [0, 0, bw_, bh_, bh_ * bw_]])
        else:
            ltype = cv2.CV_16U if ((bh_ + 1) // 2) * ((bw_ + 1) // 2) < 65_535 else cv2.CV_32S
            n, labels, stats, _ = cv2.connectedComponentsWithStats(box, connectivity=8, ltype=ltype)
        vh, vw = view.image.shape[:2]
        mh, mw = amap.shape
        sx, sy = vw / mw, vh / mh
        regions = []
        for i in range(1, n):
            lx, ly, w, h, area = (int(v) for v in stats[i])
            if area * sx * sy < cfg.min_region_px and n > 2:
                continue
            x, y = lx + ox, ly + oy
            if area == w * h:  # the region fills its bounding box
                crop = None
                peak = float(amap[y : y + h, x : x + w].max())
            else:
                assert labels is not None  # only a box that is all one region goes unlabelled
                crop = labels[ly : ly + h, lx : lx + w] == i
                peak = float(amap[y : y + h, x : x + w][crop].max())
            regions.append((peak, x, y, w, h, area, crop))
        regions.sort(key=lambda r: -r[0])
        findings = []
        for peak, x, y, w, h, area, crop in regions[: cfg.max_regions]:
            # The strongest region carries the part's score; weaker ones less, by their peak's deficit.
            s = self.normalise(score_raw - (peak_all - peak))
            if s < self.report_floor:
                continue
            bx, by = int(x * sx), int(y * sy)
            bw = max(1, min(vw, int(np.ceil((x + w) * sx))) - bx)
            bh = max(1, min(vh, int(np.ceil((y + h) * sy))) - by)
            if crop is None:
                mask = np.ones((bh, bw), dtype=np.uint8)
            else:
                mask = crop.astype(np.uint8)
                if mask.shape != (bh, bw):
                    mask = cv2.resize(mask, (bw, bh), interpolation=cv2.INTER_NEAREST)
            area_px = float(area * sx * sy)
            meas = {"area_px": area_px, "peak_raw": peak}
            mm = view.mm(1.0)
            if mm is not None:
                meas["area_mm2"] = area_px * mm * mm
            findings.append(
                Finding(
                    kind="anomaly",
                    score=s,
                    box=(bx, by, bw, bh),
                    mask=mask,
                    size_px=float(max(bw, bh)),
                    measurements=meas,
                    message=f"anomalous region {bw}x{bh} px, score {s:.2f} (0.5 = threshold)",
                )
            )
        return findings
