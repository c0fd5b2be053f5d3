"""Procedural clothed-human appearance, painted per texel of a UV template.

Two steps:

1. :func:`sample_appearance` draws, for each item, a small set of numbers (skin tone; hair colour,
   length and fringe; top and sleeve length; bottoms kind and length; shoes; colours; patterns)
   from its own seeded ``numpy`` generator, and stacks them into :class:`AppearanceParams` tensors
   ``[B, ...]``: one item's look never depends on which batch it is in.
2. :func:`paint` evaluates every region for the whole batch at once as ``[B, N]`` tensor masks over
   the template's texels and returns colours ``[B, N, 3]`` on the template's device.

Regions come from :class:`TexelFeatures`, computed once per template: the body part of each texel
(its dominant skinning joint), its canonical position, its position along the arm and leg
(0 at the shoulder / hip, 0.5 at the elbow / knee, 1 at the wrist / ankle) and its angle around the
head (0 at the face, 1 at the back), all on the default body shape so a garment covers the same
texels on every body. Stripes, checks, dots and chest prints are functions of the canonical 3D
position.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from sigman.uv import UVTemplate

# Body parts (from the dominant skinning joint).
TORSO, HEAD, NECK, EYE, ARM, HAND, LEG, FOOT = range(8)
PART_NAMES = ("torso", "head", "neck", "eye", "arm", "hand", "leg", "foot")
_PART_RULES: tuple[tuple[int, str], ...] = (
    (EYE, r"eye"),
    (HEAD, r"^(head|jaw)$"),
    (NECK, r"^neck"),
    (HAND, r"wrist|finger|metacarpal|index|middle|ring|pinky|thumb"),
    (TORSO, r"^(root|pelvis|spine|clavicle|shoulder01|breast)|collar"),
    (ARM, r"upperarm|lowerarm|shoulder|elbow"),
    (FOOT, r"^(foot|toe)|ankle|_foot$"),
    (LEG, r"upperleg|lowerleg|hip|knee"),
)

# Landmark joints of each body model (left side; the right one mirrors it).
LANDMARKS: dict[str, dict[str, str]] = {
    "anny": dict(root="root", neck="neck01", head="head", eye="eye.L", shoulder="upperarm01.L",
                 elbow="lowerarm01.L", wrist="wrist.L", hip="upperleg01.L", knee="lowerleg01.L", ankle="foot.L"),
    "smplx": dict(root="pelvis", neck="neck", head="head", eye="left_eye_smplhf", shoulder="left_shoulder",
                  elbow="left_elbow", wrist="left_wrist", hip="left_hip", knee="left_knee", ankle="left_ankle"),
}

SKIN_TONES = np.array([  # light to deep, sRGB in [0, 1]
    [0.96, 0.84, 0.76], [0.92, 0.76, 0.65], [0.87, 0.68, 0.55], [0.78, 0.58, 0.44],
    [0.66, 0.46, 0.33], [0.53, 0.36, 0.25], [0.42, 0.28, 0.19], [0.30, 0.20, 0.14],
])
HAIR_COLOURS = np.array([
    [0.05, 0.04, 0.04], [0.16, 0.10, 0.07], [0.30, 0.19, 0.11], [0.48, 0.33, 0.19],
    [0.80, 0.66, 0.42], [0.55, 0.22, 0.10], [0.62, 0.61, 0.60], [0.88, 0.87, 0.84],
])
HAIR_PROBS = np.array([0.28, 0.24, 0.16, 0.1, 0.09, 0.05, 0.05, 0.03])
PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "checker", "dots", "print")
PATTERN_PROBS = np.array([0.45, 0.15, 0.08, 0.06, 0.09, 0.07, 0.10])
BOTTOMS = ("trousers", "shorts", "skirt")


@dataclass
class TexelFeatures:
    """Per-texel quantities the painter needs (``N`` texels, on the template's device)."""

    position: Tensor  # [N, 3] canonical position (default shape)
    part: Tensor  # [N] long, one of TORSO ... FOOT
    limb_t: Tensor  # [N] along the arm (ARM, HAND) or leg (LEG, FOOT): 0 shoulder/hip, .5 elbow/knee, 1 wrist/ankle
    head_back: Tensor  # [N] around the head's vertical axis: 0 facing forward, 1 facing back
    head_dy: Tensor  # [N] height above the head joint (metres)
    y_root: float
    y_neck: float
    y_ankle: float
    y_eye: float
    x_eye: float
    z_face: float  # depth of the eyes: the face's front

    @staticmethod
    def build(template: UVTemplate, joint_names: Sequence[str], rest_joints: Tensor, body_name: str = "anny") -> "TexelFeatures":
        """From a template and its body's joint names, canonical joints ``[J, 3]`` and model name."""
        if body_name not in LANDMARKS:
            raise ValueError(f"no landmark joints for body '{body_name}'; known: {sorted(LANDMARKS)}")
        index = {n: i for i, n in enumerate(joint_names)}
        marks = LANDMARKS[body_name]
        missing = [n for n in marks.values() if n not in index]
        if missing:
            raise ValueError(f"body '{body_name}' lacks landmark joints {missing}")
        joint = lambda key: rest_joints[index[marks[key]]].float()
        part_of_joint = torch.tensor([_part_of(n) for n in joint_names], device=template.positions.device)
        pos = template.positions.float()
        part = part_of_joint[template.skin_weights.argmax(dim=1)]

        def mirrored(p: Tensor) -> Tensor:  # the chain on the texel's side of the body
            return torch.where(pos[:, :1] >= 0, p, p * torch.tensor([-1.0, 1.0, 1.0], device=p.device))

        arm = _polyline_t(pos, *(mirrored(joint(k)) for k in ("shoulder", "elbow", "wrist")))
        leg = _polyline_t(pos, *(mirrored(joint(k)) for k in ("hip", "knee", "ankle")))
        is_arm = (part == ARM) | (part == HAND)
        is_leg = (part == LEG) | (part == FOOT)
        limb_t = torch.where(is_arm, arm, torch.where(is_leg, leg, torch.zeros_like(arm)))
        head = joint("head")
        d = pos - head
        head_back = (1.0 - torch.cos(torch.atan2(d[:, 0], d[:, 2]))) / 2
        eye = joint("eye")
        return TexelFeatures(
            position=pos, part=part, limb_t=limb_t, head_back=head_back, head_dy=d[:, 1],
            y_root=float(joint("root")[1]), y_neck=float(joint("neck")[1]), y_ankle=float(joint("ankle")[1]),
            y_eye=float(eye[1]), x_eye=float(eye[0].abs()), z_face=float(eye[2]),
        )


def _part_of(joint_name: str) -> int:
    for part, pattern in _PART_RULES:
        if re.search(pattern, joint_name):
            return part
    return TORSO


def _polyline_t(points: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Parameter of the closest point on the polyline ``a -> b -> c``: 0 at a, .5 at b, 1 at c.
    ``points [N, 3]``; ``a, b, c`` are ``[N, 3]`` or ``[3]``."""
    def segment(p0, p1):
        d = p1 - p0
        s = (((points - p0) * d).sum(-1) / (d * d).sum(-1).clamp_min(1e-12)).clamp(0, 1)
        return s, (points - (p0 + s[:, None] * d)).norm(dim=-1)

    s1, d1 = segment(a, b)
    s2, d2 = segment(b, c)
    return torch.where(d1 <= d2, 0.5 * s1, 0.5 + 0.5 * s2)


# --- sampling ----------------------------------------------------------------------------------

@dataclass
class AppearanceParams:
    """One row per item (``B`` rows). Colours are sRGB in [0, 1]; lengths are fractions of a limb
    (``limb_t`` units) or metres where noted."""

    skin: Tensor  # [B, 3]
    lips: Tensor  # [B, 3]
    eyes: Tensor  # [B, 3] iris colour
    hair: Tensor  # [B, 3]
    hair_amount: Tensor  # [B] 0 bald .. 1 full
    hairline: Tensor  # [B] metres above the head joint at the forehead
    hair_back: Tensor  # [B] metres (negative: below the head joint) the hair reaches at the back
    hair_width: Tensor  # [B] metres, half-width of long hair on the back
    beard: Tensor  # [B] 0 / 1
    top: Tensor  # [B, 3]
    top_secondary: Tensor  # [B, 3]
    top_pattern: Tensor  # [B] long index into PATTERNS
    top_pattern_freq: Tensor  # [B] cycles per metre
    top_pattern_phase: Tensor  # [B]
    top_hem: Tensor  # [B] torso height (0 hips .. 1 neck) where the top ends
    sleeve: Tensor  # [B] limb_t the sleeves reach (0: sleeveless)
    neckline: Tensor  # [B] metres the neckline dips below the neck joint (< 0: high collar)
    bottom: Tensor  # [B, 3]
    bottom_secondary: Tensor  # [B, 3]
    bottom_pattern: Tensor  # [B] long
    bottom_pattern_freq: Tensor  # [B]
    bottom_pattern_phase: Tensor  # [B]
    bottom_kind: Tensor  # [B] long index into BOTTOMS
    bottom_length: Tensor  # [B] limb_t the bottoms reach
    waist: Tensor  # [B] torso height of the waistband
    belt: Tensor  # [B, 3] belt colour
    has_belt: Tensor  # [B] 0 / 1
    shoes: Tensor  # [B, 3]
    shoe_height: Tensor  # [B] metres above the ankle joint
    socks: Tensor  # [B, 3]
    sock_height: Tensor  # [B] metres above the ankle joint (0: none)
    shading: Tensor  # [B, 4, 4] per item: 3 random directions + phases for low-frequency shading
    seed: Tensor  # [B] long, the per-item seed (drives the fine per-texel noise)

    @property
    def batch_size(self) -> int:
        return self.skin.shape[0]

    def to(self, device) -> "AppearanceParams":
        return AppearanceParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _hsv_to_rgb(h: float, s: float, v: float) -> list[float]:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _garment_colour(rng: np.random.Generator) -> list[float]:
    kind = rng.random()
    if kind < 0.35:  # neutrals: black, white, greys, beige, navy, denim
        neutrals = [(0.06, 0.06, 0.07), (0.93, 0.93, 0.92), (0.45, 0.45, 0.46), (0.72, 0.72, 0.7),
                    (0.78, 0.7, 0.56), (0.1, 0.13, 0.3), (0.22, 0.32, 0.5), (0.35, 0.28, 0.2)]
        base = np.asarray(neutrals[rng.integers(len(neutrals))])
        return np.clip(base + rng.normal(0, 0.03, 3), 0, 1).tolist()
    return list(_hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.95), rng.uniform(0.25, 0.95)))


def _sample_one(seed: int, phenotype: Sequence[float]) -> dict[str, object]:
    """All appearance numbers of one item (``phenotype``: gender, age, ... in [0, 1]; it biases
    hair length and beards)."""
    rng = np.random.default_rng(seed)
    gender, age = float(phenotype[0]), float(phenotype[1])  # anny: gender 0 male .. 1 female
    t = rng.random() * (len(SKIN_TONES) - 1)
    i = int(t)
    skin = SKIN_TONES[i] + (SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] - SKIN_TONES[i]) * (t - i)
    skin = np.clip(skin * rng.uniform(0.95, 1.05) + rng.normal(0, 0.01, 3), 0, 1)
    hair = HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_PROBS)]
    if age > 0.85 and rng.random() < 0.6:
        hair = HAIR_COLOURS[6 + rng.integers(2)]
    if rng.random() < 0.04:  # dyed
        hair = np.asarray(_hsv_to_rgb(rng.random(), 0.7, 0.6))
    hair = np.clip(hair * rng.uniform(0.85, 1.15), 0, 1)
    long_hair = rng.random() < (0.2 + 0.6 * gender)
    hair_back = rng.uniform(-0.38, -0.12) if long_hair else rng.uniform(-0.1, -0.02)
    bald = rng.random() < 0.08 * (1 - gender) * (0.5 + age)
    top_pattern = rng.choice(len(PATTERNS), p=PATTERN_PROBS)
    bottom_pattern = rng.choice(len(PATTERNS), p=_bottom_pattern_probs())  # no chest prints on bottoms
    bottom_kind = rng.choice(len(BOTTOMS), p=[0.6, 0.2, 0.2] if gender > 0.5 else [0.72, 0.25, 0.03])
    if BOTTOMS[bottom_kind] == "trousers":
        bottom_length = rng.uniform(0.8, 1.02)
    elif BOTTOMS[bottom_kind] == "shorts":
        bottom_length = rng.uniform(0.18, 0.48)
    else:
        bottom_length = rng.uniform(0.2, 0.9)
    dress = BOTTOMS[bottom_kind] == "skirt" and rng.random() < 0.4
    top = _garment_colour(rng)
    bottom = top if dress else _garment_colour(rng)
    sleeve = float(rng.choice([0.0, rng.uniform(0.12, 0.3), rng.uniform(0.4, 0.75), rng.uniform(0.9, 1.0)],
                               p=[0.12, 0.4, 0.13, 0.35]))
    shoe_boot = rng.random() < 0.15
    return dict(
        skin=skin, lips=np.clip(skin * np.array([0.9, 0.68, 0.68]), 0, 1),
        eyes=np.asarray([(0.2, 0.12, 0.06), (0.1, 0.07, 0.05), (0.25, 0.4, 0.55), (0.3, 0.4, 0.25)][rng.integers(4)]),
        hair=hair, hair_amount=0.0 if bald else 1.0,
        hairline=rng.uniform(0.085, 0.115) - (0.03 if rng.random() < 0.3 else 0.0),  # some have a fringe
        hair_back=hair_back, hair_width=rng.uniform(0.07, 0.12),
        beard=float(gender < 0.35 and age > 0.45 and rng.random() < 0.25),
        top=top, top_secondary=_garment_colour(rng), top_pattern=top_pattern,
        top_pattern_freq=rng.uniform(8, 30), top_pattern_phase=rng.random(),
        top_hem=rng.uniform(-0.05, 0.3) if not dress else -0.1, sleeve=sleeve,
        neckline=float(rng.choice([rng.uniform(0.02, 0.06), rng.uniform(0.08, 0.16), -0.05], p=[0.55, 0.35, 0.1])),
        bottom=bottom, bottom_secondary=_garment_colour(rng), bottom_pattern=top_pattern if dress else bottom_pattern,
        bottom_pattern_freq=rng.uniform(8, 30), bottom_pattern_phase=rng.random(),
        bottom_kind=bottom_kind, bottom_length=bottom_length, waist=rng.uniform(0.12, 0.3),
        belt=_garment_colour(rng), has_belt=float(rng.random() < 0.25 and not dress),
        shoes=_garment_colour(rng) if rng.random() < 0.6 else np.asarray([0.06, 0.05, 0.05]) * rng.uniform(1, 4),
        shoe_height=rng.uniform(0.08, 0.2) if shoe_boot else rng.uniform(-0.01, 0.03),
        socks=_garment_colour(rng), sock_height=rng.uniform(0.03, 0.2) if rng.random() < 0.5 else 0.0,
        shading=np.concatenate([rng.normal(0, 1, (4, 3)) * rng.uniform(2, 6), rng.uniform(0, 2 * np.pi, (4, 1))], 1),
        seed=seed,
    )


def _bottom_pattern_probs() -> np.ndarray:
    p = PATTERN_PROBS * np.array([2.5, 1.0, 0.6, 0.3, 1.0, 0.5, 0.0])
    return p / p.sum()


def sample_appearance(seeds: Sequence[int], phenotypes: Tensor) -> AppearanceParams:
    """Appearance parameters of ``B`` items from their seeds and phenotypes ``[B, 6]`` (CPU tensors)."""
    rows = [_sample_one(int(s), p.tolist()) for s, p in zip(seeds, phenotypes)]
    out = {}
    for f in fields(AppearanceParams):
        values = np.asarray([np.asarray(r[f.name], dtype=np.float64) for r in rows])
        dtype = torch.long if f.name in ("top_pattern", "bottom_pattern", "bottom_kind", "seed") else torch.float32
        out[f.name] = torch.as_tensor(values).to(dtype)
    return AppearanceParams(**out)


# --- painting ---------------------------------------------------------------------------------

def _hash_noise(position: Tensor, seed: Tensor) -> Tensor:
    """Deterministic per-texel noise in [0, 1): ``position [N, 3]``, ``seed [B]`` -> ``[B, N]``."""
    s = (seed.to(position.dtype) % 9973)[:, None]
    x = position[None, :, 0] * 127.1 + position[None, :, 1] * 311.7 + position[None, :, 2] * 74.7 + s * 0.618
    return torch.frac(torch.sin(x * 43.758) * 43758.5453).abs()


def _pattern(kind: Tensor, freq: Tensor, phase: Tensor, pos: Tensor) -> Tensor:
    """Secondary-colour mask ``[B, N]`` of each item's pattern on canonical positions ``[N, 3]``."""
    x, y, z = (pos[None, :, k] for k in range(3))
    f, ph = freq[:, None], phase[:, None]
    stripes = lambda coord: torch.frac(coord * f + ph) < 0.5
    checker = ((torch.floor(x * f * 0.5 + ph) + torch.floor(y * f * 0.5) + torch.floor(z * f * 0.5)) % 2) == 1
    cell = torch.frac(pos[None] * f[..., None] * 0.5 + ph[..., None]) - 0.5
    dots = cell.norm(dim=-1) < 0.22
    chest = ((x ** 2 + (y - 0.33) ** 2) < (0.03 + 0.05 * ph) ** 2) & (z > 0.05)
    options = torch.stack([torch.zeros_like(chest), stripes(y), stripes(x), stripes((x + y) * 0.7), checker, dots, chest])
    return options.gather(0, kind[None, :, None].expand(1, -1, pos.shape[0]))[0]


@torch.no_grad()
def paint(features: TexelFeatures, params: AppearanceParams) -> Tensor:
    """Colours ``[B, N, 3]`` (sRGB in [0, 1]) of every texel for every item."""
    p = params.to(features.position.device)
    pos, part, t = features.position, features.part, features.limb_t
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    b = p.batch_size
    col = lambda c: c[:, None, :]  # [B, 3] -> [B, 1, 3]
    per = lambda v: v[:, None]  # [B] -> [B, 1]
    is_ = lambda *parts: torch.isin(part, torch.tensor(parts, device=part.device))[None]  # [1, N]
    torso_h = ((y - features.y_root) / (features.y_neck - features.y_root))[None]  # [1, N]

    colors = col(p.skin).expand(b, pos.shape[0], 3).clone()
    face = is_(HEAD) & (z[None] > features.z_face - 0.03) & (features.head_back[None] < 0.2)
    lips = face & ((y - (features.y_eye - 0.072)).abs() < 0.007)[None] & (x.abs() < 0.022)[None]
    colors = torch.where(lips[..., None], col(p.lips), colors)
    brows = face & ((y - (features.y_eye + 0.025)).abs() < 0.0035)[None] & \
        ((x.abs() - features.x_eye).abs() < 0.02)[None]
    colors = torch.where(brows[..., None], col(p.hair * 0.8), colors)
    beard = face & (y < features.y_eye - 0.05)[None] & (per(p.beard) > 0.5)
    colors = torch.where(beard[..., None], col(p.hair * 0.9), colors)

    bottom_pattern = _pattern(p.bottom_pattern, p.bottom_pattern_freq, p.bottom_pattern_phase, pos)
    bottom_col = torch.where(bottom_pattern[..., None], col(p.bottom_secondary), col(p.bottom))
    bottoms = (is_(TORSO) & (torso_h < per(p.waist))) | (is_(LEG) & (t[None] < per(p.bottom_length)))
    colors = torch.where(bottoms[..., None], bottom_col, colors)
    belt = is_(TORSO) & ((torso_h - per(p.waist)).abs() < 0.025) & (per(p.has_belt) > 0.5)
    colors = torch.where(belt[..., None], col(p.belt), colors)

    socks = is_(LEG, FOOT) & (y[None] < features.y_ankle + per(p.sock_height))
    colors = torch.where(socks[..., None], col(p.socks), colors)

    top_pattern = _pattern(p.top_pattern, p.top_pattern_freq, p.top_pattern_phase, pos)
    top_col = torch.where(top_pattern[..., None], col(p.top_secondary), col(p.top))
    neck_dip = (features.y_neck - y)[None] < per(p.neckline) - 0.04 * (x ** 2 / 0.01).clamp(max=1)[None]
    front = (z[None] > 0.0)
    open_neck = neck_dip & front & (per(p.neckline) > 0)
    torso_top = is_(TORSO) & (torso_h > per(p.top_hem)) & ~open_neck
    collar = is_(NECK) & (per(p.neckline) < 0) & (y[None] < features.y_neck + 0.06)
    sleeves = is_(ARM) & (t[None] < per(p.sleeve))
    top = torso_top | collar | sleeves
    colors = torch.where(top[..., None], top_col, colors)

    shoes = is_(FOOT) | (is_(LEG) & (y[None] < features.y_ankle + per(p.shoe_height)))
    colors = torch.where(shoes[..., None], col(p.shoes), colors)

    # hair: above a line that runs from the forehead down to the nape (or the back for long hair)
    back = features.head_back[None]
    ramp = ((back - 0.2) / 0.8).clamp(0, 1) ** 1.5
    line = per(p.hairline) + (per(p.hair_back) - per(p.hairline)) * ramp
    on_back = is_(TORSO, NECK) & (z[None] < 0.0) & (x.abs()[None] < per(p.hair_width))
    hair = (is_(HEAD) | on_back) & (features.head_dy[None] > line) & (per(p.hair_amount) > 0.5)
    strands = 0.85 + 0.3 * _hash_noise(pos * torch.tensor([8.0, 0.3, 8.0], device=pos.device), p.seed)[..., None]
    colors = torch.where(hair[..., None], col(p.hair) * strands, colors)

    # eyes: a dark iris in front of each eye joint
    eye_region = is_(HEAD, EYE) & (z[None] > features.z_face - 0.01)
    dx, dy = x.abs() - features.x_eye, y - features.y_eye
    iris = eye_region & ((dx / 0.007) ** 2 + (dy / 0.0045) ** 2 < 1)[None]
    colors = torch.where(iris[..., None], col(p.eyes), colors)

    # low-frequency shading (folds, lighting) and fine fabric noise
    dirs, phases = p.shading[:, :, :3], p.shading[:, :, 3]  # [B, 4, 3], [B, 4]
    waves = torch.sin(torch.einsum("bkd,nd->bkn", dirs, pos) + phases[..., None]).mean(1)  # [B, N]
    fine = _hash_noise(pos, p.seed) - 0.5
    colors = colors * (1.0 + 0.06 * waves + 0.04 * fine)[..., None]
    return colors.clamp(0, 1)
