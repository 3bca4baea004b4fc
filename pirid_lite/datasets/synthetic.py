"""The embedded synthetic multi-camera pedestrian benchmark (docs/DESIGN.md §4), in the Market-1501 layout.

An identity is a combination of attributes drawn from shared palettes (body shape, skin, hair, upper
garment colour + pattern + sleeves, lower garment colour + type, shoes, bag), so any single attribute is
shared by many people. A camera is a fixed appearance transform (white balance / colour cast, exposure,
contrast, saturation, its own textured background, its own mix of viewpoints, scale and box misalignment,
blur, noise, JPEG quality); ``camera_shift`` scales how far cameras are from each other and is the main
difficulty knob. Per image: pose phase, viewpoint, box jitter, lighting, occasional occluders.

Files are 128×64 (Market-1501's own file size) for `tiny` and `small`, 256×128 (the paper's input size,
docs/DESIGN.md §4) for `market`; the drawing is the same, resampled from a 256×128 canvas.

Every image is drawn from a NumPy generator seeded by (seed, split, pid, camera, index), so the same preset
and seed give the same bytes whatever the order or parallelism of generation.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

GENERATOR_VERSION = 1
HEIGHT, WIDTH = 128, 64           # Market-1501 file size: every preset's drawing geometry
SCALE = 2                         # draw at 2x, then resample to the preset's image_size (anti-aliasing)
VIEWS = ("front", "back", "side")
SPLITS = {"bounding_box_train": 0, "query": 1, "bounding_box_test": 2}

# Shared palettes (RGB). Many identities share each entry.
SKIN = [(241, 194, 160), (224, 172, 130), (198, 134, 96), (141, 85, 54), (95, 60, 40)]
HAIR = [(20, 18, 16), (70, 45, 25), (130, 90, 50), (200, 170, 110), (150, 150, 150)]
GARMENT = [(200, 30, 35), (30, 60, 170), (235, 235, 230), (25, 25, 28), (40, 130, 60), (240, 200, 40),
           (120, 120, 125), (130, 60, 140), (240, 130, 40), (110, 170, 220), (150, 100, 60), (230, 140, 170)]
SHOES = [(20, 20, 20), (240, 240, 240), (120, 80, 40), (60, 60, 140)]
PATTERNS = ("plain", "stripes", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "handbag")


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and difficulty knobs of one preset (defaults = the calibrated values, see results/FINDINGS.md)."""

    num_train_ids: int
    num_test_ids: int
    num_cameras: int = 6
    cameras_per_id: tuple[int, int] = (2, 6)          # inclusive range; each ID is seen by 2..C cameras
    images_per_camera: tuple[int, int] = (2, 5)       # inclusive range per (ID, camera)
    num_distractors: int = 50
    num_junk: int = 30
    train_images: int | None = None                   # exact totals (market preset), else random
    query_images: int | None = None
    gallery_files: int | None = None
    # difficulty knobs
    camera_shift: float = 1.0        # strength of each camera's colour / exposure / contrast transform
    garment_palette: int = 12        # colours available for garments (fewer = more look-alikes)
    occlusion: float = 0.15          # probability of an occluder per image
    viewpoint_concentration: float = 1.0  # Dirichlet α of each camera's view mix (small = one dominant view)
    lighting: float = 0.12           # per-image exposure jitter (log-scale std)
    blur: tuple[float, float] = (0.0, 1.2)
    noise: tuple[float, float] = (2.0, 8.0)
    jpeg_quality: tuple[int, int] = (60, 95)
    image_size: tuple[int, int] = (HEIGHT, WIDTH)     # (height, width) of the written files


PRESETS: dict[str, SyntheticSpec] = {
    "tiny": SyntheticSpec(num_train_ids=12, num_test_ids=12, num_cameras=3, cameras_per_id=(2, 3),
                          images_per_camera=(2, 3), num_distractors=6, num_junk=4),
    # calibrated on the validation instance (generator seed 1) with the baselines only: results/calibration/
    "small": SyntheticSpec(num_train_ids=150, num_test_ids=150, num_cameras=6, cameras_per_id=(2, 4),
                           images_per_camera=(2, 3), num_distractors=60, num_junk=30, camera_shift=0.25),
    "market": SyntheticSpec(num_train_ids=751, num_test_ids=750, num_cameras=6, cameras_per_id=(2, 6),
                            images_per_camera=(2, 6), num_distractors=2793, num_junk=3819,
                            train_images=12936, query_images=3368, gallery_files=19732,
                            image_size=(256, 128)),  # docs/DESIGN.md §4: the paper's input size
}


# ----------------------------------------------------------------------------------------- layout plan
def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _fit_total(counts: np.ndarray, total: int, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """Nudge integer ``counts`` (each within [lo, hi]) by ±1 steps until they sum to ``total``."""
    counts = counts.copy()
    if not lo * len(counts) <= total <= hi * len(counts):
        raise ValueError(f"cannot reach {total} with {len(counts)} groups of {lo}..{hi}")
    while (diff := total - counts.sum()) != 0:
        movable = np.flatnonzero(counts < hi) if diff > 0 else np.flatnonzero(counts > lo)
        pick = rng.choice(movable, size=min(abs(diff), len(movable)), replace=False)
        counts[pick] += np.sign(diff)
    return counts


def plan(spec: SyntheticSpec, seed: int) -> dict[str, list[tuple[int, int, int]]]:
    """Every file to write as ``(pid, camera, index)`` per split (pid 0 = distractor, -1 = junk)."""
    rng = _rng(seed, 999)
    c_lo, c_hi = spec.cameras_per_id[0], min(spec.cameras_per_id[1], spec.num_cameras)
    i_lo, i_hi = spec.images_per_camera

    def cameras_of(n_ids: int, total: int | None) -> list[np.ndarray]:
        counts = rng.integers(c_lo, c_hi + 1, size=n_ids)
        if total is not None:
            counts = _fit_total(counts, total, c_lo, c_hi, rng)
        return [np.sort(rng.choice(spec.num_cameras, size=k, replace=False)) for k in counts]

    train_pids = np.arange(1, spec.num_train_ids + 1) * 2          # disjoint even/odd id ranges
    test_pids = np.arange(1, spec.num_test_ids + 1) * 2 + 1
    train_cams = cameras_of(len(train_pids), None)
    test_cams = cameras_of(len(test_pids), spec.query_images)
    train_n = rng.integers(i_lo, i_hi + 1, size=sum(map(len, train_cams)))
    if spec.train_images is not None:
        train_n = _fit_total(train_n, spec.train_images, i_lo, i_hi + 6, rng)
    test_n = rng.integers(i_lo, i_hi + 1, size=sum(map(len, test_cams)))  # images per (id, cam) besides the query
    if spec.gallery_files is not None:
        rest = spec.gallery_files - spec.num_distractors - spec.num_junk
        test_n = _fit_total(test_n, rest, 1, i_hi + 6, rng)
    files: dict[str, list[tuple[int, int, int]]] = {"bounding_box_train": [], "query": [], "bounding_box_test": []}
    pairs = [(p, c) for p, cams in zip(train_pids, train_cams) for c in cams]
    for (pid, cam), n in zip(pairs, train_n):
        files["bounding_box_train"] += [(int(pid), int(cam), k) for k in range(n)]
    pairs = [(p, c) for p, cams in zip(test_pids, test_cams) for c in cams]
    for (pid, cam), n in zip(pairs, test_n):
        files["query"].append((int(pid), int(cam), 0))
        files["bounding_box_test"] += [(int(pid), int(cam), k) for k in range(1, n + 1)]
    extra_cams = rng.integers(0, spec.num_cameras, size=spec.num_distractors + spec.num_junk)
    files["bounding_box_test"] += [(0, int(c), k) for k, c in enumerate(extra_cams[:spec.num_distractors])]
    files["bounding_box_test"] += [(-1, int(c), k) for k, c in enumerate(extra_cams[spec.num_distractors:])]
    return files


def expected_counts(preset: str) -> dict[str, int]:
    """Files per split that ``generate`` writes for a preset (seed 0; the exact presets for any seed)."""
    files = plan(_spec(preset), 0)
    return {"train": len(files["bounding_box_train"]), "query": len(files["query"]),
            "gallery": len(files["bounding_box_test"])}


# ----------------------------------------------------------------------------------------- identities / cameras
def identity(pid: int, seed: int, spec: SyntheticSpec) -> dict:
    r = _rng(seed, 1, pid)
    palette = spec.garment_palette
    upper = int(r.integers(palette))
    return {
        "width": r.uniform(0.85, 1.2), "height": r.uniform(0.88, 1.05),
        "skin": SKIN[r.integers(len(SKIN))], "hair": HAIR[r.integers(len(HAIR))], "long_hair": r.random() < 0.35,
        "upper": GARMENT[upper], "pattern": PATTERNS[r.choice(3, p=[0.5, 0.3, 0.2])],
        "upper2": GARMENT[(upper + 1 + r.integers(palette - 1)) % palette], "long_sleeves": r.random() < 0.6,
        "lower": GARMENT[r.integers(palette)], "lower_type": LOWER_TYPES[r.choice(3, p=[0.65, 0.2, 0.15])],
        "shoes": SHOES[r.integers(len(SHOES))], "bag": BAGS[r.choice(3, p=[0.45, 0.35, 0.2])],
        "bag_colour": GARMENT[r.integers(palette)],
    }


def camera(cam: int, seed: int, spec: SyntheticSpec) -> dict:
    r = _rng(seed, 2, cam)
    s = spec.camera_shift
    return {
        "gains": np.exp(r.normal(0, 0.22 * s, 3)), "cast": r.normal(0, 18 * s, 3), "gamma": float(np.exp(r.normal(0, 0.25 * s))),
        "contrast": float(np.clip(1 + r.normal(0, 0.25 * s), 0.5, 1.6)),
        "saturation": float(np.clip(1 + r.normal(0, 0.35 * s), 0.2, 1.8)),
        "views": r.dirichlet([spec.viewpoint_concentration] * 3), "scale": r.uniform(0.72, 0.95),
        "misalign": r.uniform(0.0, 0.12), "blur": r.uniform(*spec.blur), "noise": r.uniform(*spec.noise),
        "jpeg": int(r.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1)),
        "background": _background_texture(r), "ground": r.uniform(0.55, 0.8),
    }


def _background_texture(r: np.random.Generator) -> np.ndarray:
    """A camera's scene: a wall and a pavement with their own colours and a smooth texture."""
    h, w = HEIGHT * SCALE + 64, WIDTH * SCALE + 64
    wall, floor = r.integers(40, 220, 3), r.integers(40, 200, 3)
    coarse = r.normal(0, 1, (h // 16 + 2, w // 16 + 2))
    texture = np.asarray(Image.fromarray(((coarse - coarse.min()) / np.ptp(coarse) * 255).astype(np.uint8))
                         .resize((w, h), Image.BICUBIC), dtype=np.float32) / 255 - 0.5
    rows = np.arange(h)[:, None, None]
    horizon = int(h * r.uniform(0.35, 0.6))
    base = np.where(rows < horizon, wall, floor).astype(np.float32)
    tiles = ((np.arange(w)[None, :] // r.integers(12, 40)) + (np.arange(h)[:, None] // r.integers(12, 40))) % 2
    return np.clip(base + 40 * texture[..., None] + 12 * tiles[..., None], 0, 255)


# ----------------------------------------------------------------------------------------- rendering
def _person(draw: ImageDraw.ImageDraw, who: dict, view: str, phase: float, cx: float, top: float, height: float):
    """Draw one pedestrian (coordinates in the 2x canvas)."""
    u = height / 100.0                                  # body unit
    bw = 11 * u * who["width"] * (0.7 if view == "side" else 1.0)
    head_r = 6.2 * u
    head_cy = top + head_r
    neck = head_cy + head_r
    hip = neck + 33 * u
    foot = top + height
    swing = np.sin(phase) * (7 if view == "side" else 3) * u
    # backpack behind the body (back and side views)
    if who["bag"] == "backpack" and view in ("back", "side"):
        off = -bw * 0.9 if view == "side" else 0
        w = bw * (0.55 if view == "side" else 0.85)
        draw.rounded_rectangle([cx + off - w, neck + 3 * u, cx + off + w, neck + 24 * u], radius=3 * u, fill=who["bag_colour"])
    # legs
    lower, skin = who["lower"], who["skin"]
    for sign in (-1, 1):
        hx = cx + sign * bw * 0.45
        fx = hx + sign * swing
        leg_w = 4.8 * u
        if who["lower_type"] == "trousers":
            draw.line([hx, hip, fx, foot - 3 * u], fill=lower, width=int(leg_w * 2))
        else:
            knee = (hip + foot) / 2
            draw.line([hx, hip, fx, foot - 3 * u], fill=skin, width=int(leg_w * 1.5))
            if who["lower_type"] == "shorts":
                draw.line([hx, hip, (hx + fx) / 2, knee], fill=lower, width=int(leg_w * 2.1))
        draw.ellipse([fx - 4.5 * u, foot - 5 * u, fx + 5 * u + (3 * u if view == "side" else 0), foot], fill=who["shoes"])
    if who["lower_type"] == "skirt":
        draw.polygon([(cx - bw, hip - 2 * u), (cx + bw, hip - 2 * u), (cx + bw * 1.5, hip + 17 * u),
                      (cx - bw * 1.5, hip + 17 * u)], fill=lower)
    else:
        draw.rectangle([cx - bw, hip - 3 * u, cx + bw, hip + 4 * u], fill=lower)
    # torso
    upper = who["upper"]
    draw.rounded_rectangle([cx - bw, neck, cx + bw, hip + 1 * u], radius=4 * u, fill=upper)
    if who["pattern"] == "stripes":
        for y in np.arange(neck + 5 * u, hip, 6 * u):
            draw.rectangle([cx - bw, y, cx + bw, y + 2.4 * u], fill=who["upper2"])
    elif who["pattern"] == "logo" and view == "front":
        draw.ellipse([cx - 4.5 * u, neck + 7 * u, cx + 4.5 * u, neck + 16 * u], fill=who["upper2"])
    # arms
    sleeve = upper if who["long_sleeves"] else skin
    for sign in (-1, 1) if view != "side" else (1,):
        sx = cx + sign * (bw + 1.5 * u) if view != "side" else cx
        hx = sx - sign * swing * 0.8 if view != "side" else cx - swing
        draw.line([sx, neck + 2 * u, hx, hip + 2 * u], fill=sleeve, width=int(4.2 * u))
        draw.line([(sx + hx) / 2, (neck + hip) / 2 + 2 * u, hx, hip + 2 * u], fill=sleeve if who["long_sleeves"] else skin,
                  width=int(3.8 * u))
        draw.ellipse([hx - 2.4 * u, hip, hx + 2.4 * u, hip + 4.6 * u], fill=skin)
        if who["bag"] == "handbag" and sign == 1 and view != "back":
            draw.rectangle([hx - 3 * u, hip + 3 * u, hx + 6 * u, hip + 12 * u], fill=who["bag_colour"])
    # head and hair
    draw.ellipse([cx - head_r, head_cy - head_r, cx + head_r, head_cy + head_r],
                 fill=who["hair"] if view == "back" else skin)
    draw.chord([cx - head_r * 1.05, head_cy - head_r * 1.1, cx + head_r * 1.05, head_cy + head_r * 0.5], 180, 360,
               fill=who["hair"])
    if who["long_hair"] and view != "front":
        draw.rectangle([cx - head_r, head_cy, cx + head_r * (0.3 if view == "side" else 1), neck + 6 * u], fill=who["hair"])


def render(who: dict, cam: dict, spec: SyntheticSpec, r: np.random.Generator, kind: str = "person") -> bytes:
    """One JPEG of ``who`` seen by camera ``cam`` (``kind``: person | junk)."""
    H, W = HEIGHT * SCALE, WIDTH * SCALE
    bg = cam["background"]
    y0, x0 = r.integers(0, bg.shape[0] - H + 1), r.integers(0, bg.shape[1] - W + 1)
    canvas = Image.fromarray(bg[y0:y0 + H, x0:x0 + W].astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    if kind == "person":
        view = VIEWS[r.choice(3, p=cam["views"])]
        height = H * cam["scale"] * who["height"] * r.uniform(0.92, 1.06)
        cx = W / 2 + W * r.normal(0, cam["misalign"])
        top = (H - height) / 2 + H * r.normal(0, cam["misalign"] * 0.5)
        _person(draw, who, view, r.uniform(0, 2 * np.pi), cx, top, height)
        if r.random() < spec.occlusion:
            _occluder(draw, r, W, H)
    else:  # junk: a fragment of a person or mostly background, as Market's junk boxes
        if r.random() < 0.6:
            _person(draw, who, VIEWS[r.integers(3)], r.uniform(0, 6.3), W * r.uniform(-0.2, 1.2),
                    H * r.uniform(-0.6, 0.5), H * r.uniform(0.8, 1.6))
    out_h, out_w = spec.image_size
    img = canvas.resize((out_w, out_h), Image.LANCZOS)
    if cam["blur"] > 0.05:  # blur is set in pixels of a 128x64 file: scale it with the file
        img = img.filter(ImageFilter.GaussianBlur(cam["blur"] * out_h / HEIGHT))
    x = np.asarray(img, dtype=np.float32) / 255
    x = x ** cam["gamma"] * np.exp(r.normal(0, spec.lighting))          # exposure, per-image lighting
    x = x * cam["gains"] + cam["cast"] / 255                             # white balance and colour cast
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * cam["saturation"]
    x = (x - 0.5) * cam["contrast"] + 0.5
    x = x * 255 + r.normal(0, cam["noise"], x.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=cam["jpeg"], subsampling=2)
    return out.getvalue()


def _occluder(draw: ImageDraw.ImageDraw, r: np.random.Generator, W: int, H: int) -> None:
    colour = tuple(int(v) for v in r.integers(0, 255, 3))
    if r.random() < 0.5:  # a pole
        x = r.uniform(0.1, 0.9) * W
        draw.rectangle([x - W * 0.06, 0, x + W * 0.06, H], fill=colour)
    else:                 # a car / bench / another person's part from below or the side
        y = r.uniform(0.55, 0.85) * H
        side = r.random() < 0.5
        draw.rounded_rectangle([-10 if side else W * 0.5, y, W * 0.5 if side else W + 10, H + 10], radius=12, fill=colour)


def _file_name(pid: int, cam: int, index: int) -> str:
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{cam + 1}s1_{index:06d}_01.jpg"


def _render_split(args) -> list[tuple[str, bytes]]:
    split, entries, seed, spec = args
    cams = {c: camera(c, seed, spec) for c in range(spec.num_cameras)}
    out = []
    for pid, cam, k in entries:
        r = _rng(seed, 3, SPLITS[split], pid + 1, cam, k)
        if pid > 0:
            who = identity(pid, seed, spec)
        else:  # distractors: random people never seen elsewhere; junk: fragments
            who = identity(10_000_000 + cam * 100_000 + k + (500_000 if pid < 0 else 0), seed, spec)
        out.append((_file_name(pid, cam, k), render(who, cams[cam], spec, r, "junk" if pid < 0 else "person")))
    return out


# ----------------------------------------------------------------------------------------- writing
def _spec(preset: str | SyntheticSpec) -> SyntheticSpec:
    if isinstance(preset, SyntheticSpec):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; expected one of {tuple(PRESETS)}")
    return PRESETS[preset]


def generate(preset: str | SyntheticSpec, out_dir: str | Path, seed: int = 0, progress: bool = True,
             workers: int | None = None) -> Path:
    """Write the benchmark to ``out_dir`` (Market-1501 layout) atomically: into a temporary sibling folder
    that is renamed into place once complete, with ``manifest.json`` written last."""
    spec = _spec(preset)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        files = plan(spec, seed)
        chunks = [(split, entries[i:i + 256], seed, spec) for split, entries in files.items()
                  for i in range(0, len(entries), 256)]
        for split in files:
            (tmp / split).mkdir()
        workers = workers or (min(2, os.cpu_count() or 1) if sum(map(len, files.values())) > 3000 else 1)
        bar = tqdm(total=sum(map(len, files.values())), desc="synthetic benchmark",
                   unit="img", disable=not progress)
        mapper = ProcessPoolExecutor(workers).map if workers > 1 else map
        for (split, *_), rendered in zip(chunks, mapper(_render_split, chunks)):
            for name, data in rendered:
                (tmp / split / name).write_bytes(data)
            bar.update(len(rendered))
        bar.close()
        (tmp / "manifest.json").write_text(json.dumps(_manifest(spec, seed), indent=2, sort_keys=True))
        if _is_current(out_dir, spec, seed):  # another process generated the same files meanwhile: keep
            shutil.rmtree(tmp)                 # theirs, which it may be reading already
            return out_dir
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _manifest(spec: SyntheticSpec, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "seed": seed, "spec": dataclasses.asdict(spec)}


def default_root(preset: str, seed: int) -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "synthetic" / f"{preset}-seed{seed}"


def ensure_generated(preset: str | SyntheticSpec, seed: int = 0, root: str | Path | None = None,
                     progress: bool = True) -> Path:
    """The folder of a preset, generated on first use (or again if its manifest does not match)."""
    spec = _spec(preset)
    if root is None and isinstance(preset, SyntheticSpec):
        raise ValueError("a custom SyntheticSpec needs an explicit root folder")
    folder = Path(root) if root is not None else default_root(preset, seed)
    if _is_current(folder, spec, seed):
        return folder
    return generate(spec, folder, seed=seed, progress=progress)


def _is_current(folder: Path, spec: SyntheticSpec, seed: int) -> bool:
    """Whether ``folder`` holds a complete generation of this spec and seed (its manifest is written last)."""
    manifest = folder / "manifest.json"
    expected = json.loads(json.dumps(_manifest(spec, seed), sort_keys=True))
    return manifest.exists() and json.loads(manifest.read_text()) == expected
