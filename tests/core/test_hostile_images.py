"""A hostile file costs exactly its own part: an ERROR verdict whose reason names the file, with
bounded memory; every entry of a folder gets a verdict or a recorded skip; the station goes on.

The files are made here: real encoded images, corrupted or cut in known ways, header-only
decoding bombs and sparse files (a few KB on disk each), FIFOs, device symlinks, a folder
named like an image, names that are not valid UTF-8.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from inspector_sources import ImageLimits, read_image
from PIL import Image
from sqlalchemy import select

from inspector_core.store import schema
from inspector_core.testing import StationResult, run_station

# ---------------------------------------------------------------------------- image makers


def part_image(defect: bool, color: bool = True, size: tuple[int, int] = (96, 64)) -> np.ndarray:
    """A flat grey part; a defective one has a saturated spot ``bright_spot`` fails."""
    w, h = size
    img = np.full((h, w), 120, np.uint8)
    img[::7, :] = 110  # some texture, so a JPEG has real scan data
    if defect:
        img[20:32, 30:42] = 255
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if color else img


def encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, format=fmt, **kw)
    return b.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` RGB pixels, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def png_zlib_bomb(width: int, height: int) -> bytes:
    """A real, complete gray PNG of zeros: about 1 KB per MP on disk, ``width x height`` bytes decoded."""
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is patched to declare another size."""
    data = bytearray(encode(".jpg", part_image(False)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_header_bomb(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return header + info + b"\0" * 16


def truncated_jpeg_with_eoi(img: np.ndarray, keep: float = 0.6) -> bytes:
    data = encode(".jpg", img)
    return data[: int(len(data) * keep)] + b"\xff\xd9"


# ---------------------------------------------------------------------------- read_image


def test_jpeg_with_trailing_bytes_after_its_end_marker_is_a_good_image(tmp_path):
    img = part_image(True)
    good = encode(".jpg", img)
    path = tmp_path / "trailing.jpg"
    path.write_bytes(good + b"camera firmware appends this" * 20)
    image, error = read_image(path)
    assert error is None
    assert np.array_equal(image, cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR))


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.98])
def test_jpeg_cut_short_but_ending_in_an_end_marker_is_refused(tmp_path, keep):
    # OpenCV and Pillow both decode such a file "successfully" (the rest filled with grey),
    # so an end marker at the end proves nothing: the decoder must run out of scan data.
    data = truncated_jpeg_with_eoi(part_image(False, size=(320, 240)), keep)
    assert data.endswith(b"\xff\xd9")
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    path = tmp_path / "cut.jpg"
    path.write_bytes(data)
    image, error = read_image(path)
    assert image is None
    assert error.startswith(str(path)) and "truncated or corrupt JPEG" in error and "premature end" in error


def test_jpeg_cut_short_without_an_end_marker_is_refused(tmp_path):
    data = encode(".jpg", part_image(False))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    image, error = read_image(path)
    assert image is None and "truncated" in error


def test_files_are_read_by_their_content_not_their_name(tmp_path):
    img = part_image(True)
    (tmp_path / "png.jpg").write_bytes(encode(".png", img))
    (tmp_path / "jpeg.png").write_bytes(encode(".jpg", img))
    image, error = read_image(tmp_path / "png.jpg")
    assert error is None and np.array_equal(image, img)
    image, error = read_image(tmp_path / "jpeg.png")
    assert error is None and image.shape == img.shape


def test_gray_and_sixteen_bit_and_alpha_images_become_uint8(tmp_path):
    gray = part_image(False, color=False)
    (tmp_path / "g.png").write_bytes(encode(".png", gray))
    (tmp_path / "g16.png").write_bytes(encode(".png", gray.astype(np.uint16) * 257))
    bgra = cv2.cvtColor(part_image(True), cv2.COLOR_BGR2BGRA)
    (tmp_path / "a.png").write_bytes(encode(".png", bgra))
    for name, want in (("g.png", gray), ("g16.png", gray), ("a.png", part_image(True))):
        image, error = read_image(tmp_path / name)
        assert error is None, error
        assert image.dtype == np.uint8 and np.array_equal(image, want), name


TIFF_CASES = {
    # name: (bytes, expected image or None, reason when refused)
    "float01.tif": (
        lambda: pil_bytes(Image.fromarray(np.full((40, 50), 0.5, np.float32)), "TIFF"),
        np.full((40, 50), 128, np.uint8),
        None,
    ),
    "float_nan.tif": (
        lambda: pil_bytes(Image.fromarray(np.where(np.eye(40, 50) > 0, np.nan, 0.5).astype(np.float32)), "TIFF"),
        None,
        "NaN",
    ),
    "float_range.tif": (
        lambda: pil_bytes(Image.fromarray(np.full((40, 50), 700.0, np.float32)), "TIFF"),
        None,
        "values in [700, 700]",
    ),
    "int32.tif": (lambda: pil_bytes(Image.fromarray(np.full((40, 50), 7, np.int32)), "TIFF"), None, "int32 samples"),
    "u16.tif": (
        lambda: pil_bytes(Image.fromarray(np.full((40, 50), 0x8040, np.uint16)), "TIFF"),
        np.full((40, 50), 0x80, np.uint8),
        None,
    ),
    "cmyk.tif": (
        lambda: pil_bytes(Image.new("CMYK", (50, 40), (0, 255, 255, 0)), "TIFF"),
        np.dstack([np.zeros((40, 50), np.uint8)] * 2 + [np.full((40, 50), 255, np.uint8)]),
        None,
    ),
    "multipage.tif": (
        lambda: pil_bytes(
            Image.new("L", (50, 40), 10), "TIFF", save_all=True, append_images=[Image.new("L", (50, 40), 200)]
        ),
        None,
        "multi-page",
    ),
    "cmyk.jpg": (lambda: pil_bytes(Image.new("CMYK", (50, 40), (0, 255, 255, 0)), "JPEG"), "red", None),
}


@pytest.mark.parametrize("name", sorted(TIFF_CASES))
def test_tiff_and_colour_variants_are_converted_or_refused_with_the_reason(tmp_path, name):
    make, want, reason = TIFF_CASES[name]
    path = tmp_path / name
    path.write_bytes(make())
    image, error = read_image(path)
    if reason is not None:
        assert image is None and error.startswith(str(path)) and reason in error, error
        return
    assert error is None, error
    assert image.dtype == np.uint8
    if isinstance(want, str):  # a lossy CMYK JPEG of pure red: near (0, 0, 255) in BGR
        assert image.shape == (40, 50, 3) and (np.abs(image.astype(int) - [0, 0, 255]) < 8).all()
    else:
        assert np.array_equal(image, want)


@pytest.mark.parametrize(
    "name, data",
    [
        ("png_header.png", lambda: png_header_bomb(60_000, 60_000)),  # 3.6 GP: above OpenCV's own limit too
        ("png_zlib.png", lambda: png_zlib_bomb(12_000, 12_000)),  # a real 144 MP image in 150 KB
        ("jpeg_sof.jpg", lambda: jpeg_with_declared_size(65_000, 65_000)),
        ("bmp_header.bmp", lambda: bmp_header_bomb(30_000, 30_000)),
    ],
)
def test_decoding_bombs_are_refused_from_their_header_before_decoding(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data())
    image, error = read_image(path)
    assert image is None
    assert error.startswith(str(path)) and "refused before decoding" in error, error


def test_a_smaller_max_pixels_refuses_an_ordinary_image(tmp_path):
    (tmp_path / "p.png").write_bytes(encode(".png", part_image(False)))  # 96 x 64 = 6144 px
    assert read_image(tmp_path / "p.png", ImageLimits(max_pixels=6144))[1] is None
    _, error = read_image(tmp_path / "p.png", ImageLimits(max_pixels=6143))
    assert "declares 96x64" in error and "max_pixels" in error


def test_special_files_are_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would block until a writer came
    os.symlink("/dev/zero", tmp_path / "zero.jpg")  # reading it would never end
    (tmp_path / "dir.png").mkdir()
    os.symlink(tmp_path / "missing.png", tmp_path / "dangling.png")
    with open(tmp_path / "sparse.png", "wb") as f:
        f.truncate(20 * 2**30)  # 20 GB that take no space
    expected = {
        "pipe.png": "is a FIFO",
        "zero.jpg": "is a character device",
        "dir.png": "is a folder",
        "dangling.png": "broken symlink",
        "sparse.png": "above the source's max_file_mb",
    }
    for name, why in expected.items():
        image, error = read_image(tmp_path / name)
        assert image is None and error.startswith(str(tmp_path / name)) and why in error, error


def test_bombs_and_huge_files_cost_bounded_memory(tmp_path):
    # In a fresh process, so that its peak RSS is its own: every bomb refused, RSS stays low.
    bombs = tmp_path / "bombs"
    bombs.mkdir()
    (bombs / "zlib.png").write_bytes(png_zlib_bomb(20_000, 20_000))  # 400 MB when decoded
    (bombs / "header.png").write_bytes(png_header_bomb(30_000, 30_000))
    (bombs / "sof.jpg").write_bytes(jpeg_with_declared_size(30_000, 30_000))
    with open(bombs / "sparse.tif", "wb") as f:
        f.write(pil_bytes(Image.new("L", (8, 8)), "TIFF"))
        f.truncate(8 * 2**30)
    script = textwrap.dedent("""
        import json, resource, sys
        from pathlib import Path
        from inspector_sources import read_image
        def hwm_kb():
            # VmHWM is this process's own peak; ru_maxrss would carry the parent's peak over exec (Linux).
            return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1])
        before = hwm_kb()
        errors = {p.name: read_image(p)[1] for p in sorted(Path(sys.argv[1]).iterdir())}
        after = hwm_kb()
        print(json.dumps({"errors": errors, "before_kb": before, "after_kb": after}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(bombs)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert all(result["errors"].values()), result["errors"]
    grown_mb = (result["after_kb"] - result["before_kb"]) / 1024
    assert grown_mb < 50, f"reading the bombs grew the peak RSS by {grown_mb:.0f} MB"


# ---------------------------------------------------------------------------- a hostile folder

GOOD = "PASS"
BAD = "FAIL"


def make_hostile_folder(folder: Path) -> dict[str, tuple[str, str | None]]:
    """Tens of entries over every hostile mode, and good parts between them.

    Returns ``{part id: (verdict, reason substring or None)}`` for every entry that must become
    a part; ``notes.txt`` and ``README`` must be a recorded skip instead."""
    folder.mkdir()
    expect: dict[str, tuple[str, str | None]] = {}

    def put(name: str | bytes, data: bytes, verdict: str, reason: str | None = None) -> None:
        raw = os.fsencode(folder) + b"/" + (name if isinstance(name, bytes) else name.encode())
        with open(raw, "wb") as f:
            f.write(data)
        stem = os.fsdecode(raw).rsplit("/", 1)[1].rsplit(".", 1)[0]
        expect[os.fsencode(stem).decode("utf-8", "backslashreplace")] = (verdict, reason)

    for i in range(4):
        put(f"good-{i:02d}.png", encode(".png", part_image(False)), GOOD)
        put(f"defect-{i:02d}.png", encode(".png", part_image(True)), BAD)
        put(f"good-jpeg-{i:02d}.jpg", encode(".jpg", part_image(False)), GOOD)
        put(f"corrupt-{i:02d}.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200 + i), "ERROR", "not a decodable image")
        put(
            f"cut-eoi-{i:02d}.jpg",
            truncated_jpeg_with_eoi(part_image(True, size=(320, 240)), 0.3 + 0.2 * i),
            "ERROR",
            "truncated or corrupt JPEG",
        )
        put(f"png-bomb-{i:02d}.png", png_header_bomb(40_000 + i, 40_000), "ERROR", "refused before decoding")
        put(f"jpeg-bomb-{i:02d}.jpg", jpeg_with_declared_size(60_000, 50_000 + i), "ERROR", "refused before decoding")
    put("trailing.jpg", encode(".jpg", part_image(True)) + b"\0" * 500, BAD)
    put("png-named.jpg", encode(".png", part_image(True)), BAD)
    put("gray16.png", encode(".png", part_image(False, color=False).astype(np.uint16) * 257), GOOD)
    put("cmyk.tif", pil_bytes(Image.new("CMYK", (96, 64), (0, 0, 0, 135)), "TIFF"), GOOD)
    put("float.tif", pil_bytes(Image.fromarray(np.full((64, 96), 0.5, np.float32)), "TIFF"), GOOD)
    put("float-nan.tif", pil_bytes(Image.fromarray(np.full((64, 96), np.nan, np.float32)), "TIFF"), "ERROR", "NaN")
    put(
        "multipage.tiff",
        pil_bytes(Image.new("L", (96, 64), 120), "TIFF", save_all=True, append_images=[Image.new("L", (96, 64), 255)]),
        "ERROR",
        "multi-page",
    )
    put("empty.png", b"", "ERROR", "is empty")
    # 169 MP of zeros in 170 KB (under Pillow's own limit, above max_pixels): decoded, it alone
    # would lift the peak RSS above the bound asserted below.
    put("zlib-bomb.png", png_zlib_bomb(13_000, 13_000), "ERROR", "refused before decoding")
    put("bmp-bomb.bmp", bmp_header_bomb(30_000, 30_000), "ERROR", "refused before decoding")
    put(b"caf\xe9-good.png", encode(".png", part_image(False)), GOOD)  # Latin-1: not valid UTF-8
    put(b"broken-\xff\xfe.jpg", b"\xff\xd8 not really a jpeg", "ERROR", "not a decodable image")
    with open(folder / "sparse.png", "wb") as f:
        f.truncate(50 * 2**30)
    expect["sparse"] = ("ERROR", "max_file_mb")
    with open(folder / "sparse-small.tif", "wb") as f:
        f.truncate(100 * 2**20)  # under the size limit: all zeros, no header
    expect["sparse-small"] = ("ERROR", "not a decodable image")
    os.mkfifo(folder / "fifo.png")
    expect["fifo"] = ("ERROR", "is a FIFO")
    os.symlink("/dev/zero", folder / "dev-zero.jpg")
    expect["dev-zero"] = ("ERROR", "is a character device")
    os.symlink("/dev/null", folder / "dev-null.png")
    expect["dev-null"] = ("ERROR", "is a character device")
    (folder / "folder.png").mkdir()
    expect["folder"] = ("ERROR", "is a folder")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    expect["dangling"] = ("ERROR", "broken symlink")
    os.symlink("self-loop.png", folder / "self-loop.png")
    expect["self-loop"] = ("ERROR", "cannot stat: Too many levels of symbolic links")
    os.symlink(folder / "good-00.png", folder / "link-to-good.png")
    expect["link-to-good"] = (GOOD, None)
    (folder / "notes.txt").write_text("not a part")
    (folder / "README").write_text("not a part either")
    return expect


STATION_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    # Fail inside this process, not the machine's, if memory were unbounded.
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
    from pathlib import Path
    from inspector_core.testing import run_station
    result = run_station(Path(sys.argv[1]), Path(sys.argv[2]))
    def hwm_kb():
        # VmHWM is this process's own peak; ru_maxrss would carry the parent's peak over exec (Linux).
        return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM")).split()[1])
    print(json.dumps({"run_id": result.run_id, "maxrss_kb": hwm_kb()}))
""")


def test_a_folder_of_hostile_files_gives_every_entry_its_own_verdict(tmp_path):
    folder = tmp_path / "parts"
    expect = make_hostile_folder(folder)
    assert len(expect) >= 40
    station = tmp_path / "station.yaml"
    db = tmp_path / "inspector.db"
    station.write_text(
        f"name: hostile\nsource: {{type: folder, config: {{path: '{folder}'}}}}\n"
        f"steps: [{{detector: bright_spot}}]\nstore: {{url: 'sqlite:///{db}'}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", STATION_SCRIPT, str(station), str(tmp_path)], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])
    result = StationResult(station, f"sqlite:///{db}", None, run["run_id"])  # type: ignore[arg-type]
    rows = result.inspections()
    got = [r.part_id for r in rows]
    assert sorted(got) == sorted(expect), set(got) ^ set(expect)  # one inspection per entry, no more
    by_name = [
        os.fsencode(os.path.splitext(n)[0]).decode("utf-8", "backslashreplace") for n in sorted(os.listdir(folder))
    ]
    assert got == [pid for pid in by_name if pid in expect], "the folder's order must be by file name"
    for r in rows:
        verdict, reason = expect[r.part_id]
        assert r.verdict == verdict, (r.part_id, r.verdict, r.error)
        if verdict == "ERROR":
            assert r.error_step == "source" and reason in r.error, (r.part_id, r.error)
            assert r.error.startswith(str(folder)), r.error  # the reason names the file
    bad_name = {r.part_id: r for r in rows}["broken-\\xff\\xfe"]
    assert "broken-\\xff\\xfe.jpg" in bad_name.error
    assert bytes.fromhex(bad_name.source_meta["path_hex"]).endswith(b"broken-\xff\xfe.jpg")
    with result.session() as s:
        events = s.scalars(select(schema.Event).where(schema.Event.run_id == run["run_id"])).all()
    skipped = [e.message for e in events if e.kind == "source_skipped"]
    assert len(skipped) == 1 and "2 entries" in skipped[0]
    assert "notes.txt: not named like an image" in skipped[0] and "README: not named like an image" in skipped[0]
    assert not [e for e in events if e.kind == "source_failed"]
    assert run["maxrss_kb"] / 1024 < 250, f"peak RSS {run['maxrss_kb'] / 1024:.0f} MB"


# ---------------------------------------------------------------------------- recursion, resume


def test_recursive_follows_symlinked_folders_once_and_in_a_deterministic_order(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    folder = tmp_path / "parts"
    (folder / "b").mkdir(parents=True)
    for p in (folder / "b" / "2.png", folder / "a.png", elsewhere / "1.png", elsewhere / "deep" / "0.png"):
        p.write_bytes(encode(".png", part_image(False)))
    os.symlink(elsewhere, folder / "linked")
    os.symlink(folder, folder / "b" / "loop")  # a symlink back up: must not be walked forever
    os.symlink(elsewhere, folder / "again")  # the same real folder a second time: walked once
    cfg = {
        "source": {"type": "folder", "config": {"path": str(folder), "recursive": True}},
        "steps": [{"detector": "bright_spot"}],
    }
    result = run_station(cfg, tmp_path)
    ids = [r.part_id for r in result.inspections()]
    assert ids == ["a", "again/1", "again/deep/0", "b/2"]  # 'again' sorts before 'linked': it is the one walked
    with result.session() as s:
        skipped = [
            e.message
            for e in s.scalars(
                select(schema.Event).where(schema.Event.run_id == result.run_id, schema.Event.kind == "source_skipped")
            )
        ]
    assert len(skipped) == 1
    assert "b/loop: a symlink to a folder already visited (.)" in skipped[0]
    assert "linked: a symlink to a folder already visited (again)" in skipped[0]


def test_a_folder_station_resumes_after_the_parts_it_recorded(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(10):
        (folder / f"p{i:02d}.png").write_bytes(encode(".png", part_image(i % 3 == 0)))
    cfg = {
        "source": {"type": "folder", "config": {"path": str(folder), "resume": True}},
        "steps": [{"detector": "bright_spot"}],
    }
    first = run_station(cfg, tmp_path, limit=4)  # stopped after 4 parts, as `inspector run --limit 4`
    assert [r.part_id for r in first.inspections()] == ["p00", "p01", "p02", "p03"]
    second = run_station(cfg, tmp_path)
    assert [r.part_id for r in second.inspections()] == [f"p{i:02d}" for i in range(4, 10)]
    third = run_station(cfg, tmp_path)
    assert third.inspections() == []
    with first.session() as s:
        ids = s.scalars(select(schema.Inspection.part_id)).all()
        events = {
            e.run_id: e.message for e in s.scalars(select(schema.Event).where(schema.Event.kind == "source_resumed"))
        }
    assert sorted(ids) == [f"p{i:02d}" for i in range(10)]  # every file inspected exactly once
    assert "4 of 10 parts already recorded" in events[second.run_id] and "going on with 'p04'" in events[second.run_id]
    assert "nothing left to inspect" in events[third.run_id]
    # Without resume the same folder is inspected again, whole.
    cfg["source"]["config"]["resume"] = False
    assert len(run_station(cfg, tmp_path).inspections()) == 10


def test_resume_asks_only_about_this_station(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.png").write_bytes(encode(".png", part_image(False)))
    other = {
        "name": "other",
        "source": {"type": "folder", "config": {"path": str(folder)}},
        "steps": [{"detector": "bright_spot"}],
    }
    run_station(other, tmp_path)
    mine = {
        "name": "mine",
        "source": {"type": "folder", "config": {"path": str(folder), "resume": True}},
        "steps": [{"detector": "bright_spot"}],
    }
    assert [r.part_id for r in run_station(mine, tmp_path).inspections()] == ["p0", "p1", "p2"]


def test_resume_when_the_store_cannot_answer_inspects_everything_and_says_so(tmp_path):
    from inspector_sources import FolderConfig, FolderSource

    from inspector_core import SourceContext

    for i in range(3):
        (tmp_path / f"p{i}.png").write_bytes(encode(".png", part_image(False)))

    def store_down(part_ids):
        raise TimeoutError("no answer within 5 s")

    events = []
    context = SourceContext(tmp_path, lambda kind, msg: events.append((kind, msg)), recorded=store_down)
    frames = list(FolderSource(FolderConfig(path=str(tmp_path), resume=True), context).frames())
    assert [f.part_id for f in frames] == ["p0", "p1", "p2"] and all(f.error is None for f in frames)
    assert events == [
        (
            "source_resume_failed",
            f"folder {tmp_path}: resume: cannot tell which parts this station has recorded "
            "(TimeoutError: no answer within 5 s); inspecting all 3 parts, some perhaps again",
        )
    ]
    # A host without a store to ask (the hook left out) is the same case.
    events.clear()
    frames = list(FolderSource(FolderConfig(path=str(tmp_path), resume=True), SourceContext(tmp_path, print)).frames())
    assert len(frames) == 3
