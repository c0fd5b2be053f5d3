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

Kinds of people (``people=``): ``"basic"`` (the original look, kept bit for bit), ``"rich"`` (below),
and ``"mixed"`` (each item basic or rich with even odds, decided by its seed). Rich people have
layered garments (open jackets, cardigans, long coats, vests over the top), skirts and dresses of any
length, colour blocks, side panels, scattered prints, logos and short text on the chest / back (glyphs
of PIL's built-in font stamped into a canonical-position chart), fronts and backs that differ, hair
styles (short, long, bun, ponytail, bald; fringes) and more hair colours, several kinds of shoes, a wider
range of skin tones, and a baked light (:func:`shade`: a Lambert term from a random direction, an
ambient level and a colour temperature) applied to the posed normals.

:func:`region_labels` gives every texel's garment region (:data:`REGION_NAMES`), from the same
parameters and the same masks as :func:`paint`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Optional, Sequence

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
PEOPLE = ("basic", "rich", "mixed")


def is_rich(seed: int, people: str) -> bool:
    """Whether the item of ``seed`` gets a rich appearance under ``people`` ("mixed": even odds, by seed)."""
    if people == "mixed":
        return bool(np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED]).random() < 0.5)
    return people == "rich"

# rich people only
RICH_PATTERNS = PATTERNS + ("block", "panels", "scatter")  # indices >= len(PATTERNS) appear only in "rich"
RICH_PATTERN_PROBS = np.array([0.34, 0.12, 0.1, 0.04, 0.07, 0.05, 0.06, 0.08, 0.06, 0.08])
OUTER_KINDS = ("none", "jacket", "cardigan", "coat", "vest")
OUTER_PROBS = np.array([0.45, 0.18, 0.14, 0.11, 0.12])
HAIR_STYLES = ("short", "long", "bun", "ponytail", "bald")
SHOE_KINDS = ("plain", "sneaker", "boot", "sandal")
BACK_MODES = ("same", "plain", "colour")  # the top's back: as the front, without the pattern, another colour
MARK_SHAPE = (16, 48)  # rows, columns of the chest / back mark's bitmap
RICH_SKIN_TONES = np.array([  # light to deep, with pink, neutral and olive / golden undertones
    [0.98, 0.87, 0.80], [0.96, 0.80, 0.72], [0.93, 0.79, 0.66], [0.89, 0.72, 0.60], [0.85, 0.70, 0.52],
    [0.80, 0.62, 0.50], [0.76, 0.60, 0.42], [0.70, 0.52, 0.40], [0.62, 0.45, 0.31], [0.55, 0.38, 0.27],
    [0.47, 0.32, 0.23], [0.40, 0.27, 0.19], [0.33, 0.22, 0.16], [0.25, 0.17, 0.12],
])
RICH_HAIR_COLOURS = np.concatenate([HAIR_COLOURS, np.array([
    [0.70, 0.35, 0.15], [0.92, 0.85, 0.62], [0.38, 0.12, 0.08], [0.20, 0.30, 0.70], [0.85, 0.35, 0.60],
    [0.30, 0.62, 0.45], [0.55, 0.30, 0.70],
])])
RICH_HAIR_PROBS = np.concatenate([HAIR_PROBS * 0.86, [0.04, 0.03, 0.03, 0.01, 0.01, 0.01, 0.01]])

# Garment regions (:func:`region_labels`).
SKIN, FACE, HAIR, TOP, OUTER, BOTTOMS_REGION, DRESS, BELT, SOCKS, SHOES = range(10)
REGION_NAMES = ("skin", "face", "hair", "top", "outer", "bottoms", "dress", "belt", "socks", "shoes")


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
    head: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the head joint

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
            head=tuple(float(v) for v in head),
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
    # rich people (all "off" for basic ones)
    rich: Tensor  # [B] 0 / 1
    dress: Tensor  # [B] 0 / 1: the top and a skirt are one dress
    top_back: Tensor  # [B, 3] colour of the top's back when top_back_mode is "colour"
    top_back_mode: Tensor  # [B] long index into BACK_MODES
    mark: Tensor  # [B, 16, 48] 0 / 1 bitmap of a logo or short text (MARK_SHAPE)
    mark_colour: Tensor  # [B, 3]
    mark_front: Tensor  # [B] 0 / 1: the mark is on the chest
    mark_back: Tensor  # [B] 0 / 1: the mark is on the back
    mark_height: Tensor  # [B] metres, height of the mark's box (its width: height * mark_aspect)
    mark_aspect: Tensor  # [B]
    mark_y: Tensor  # [B] torso height (0 hips .. 1 neck) of the mark's centre
    outer_kind: Tensor  # [B] long index into OUTER_KINDS
    outer: Tensor  # [B, 3]
    outer_secondary: Tensor  # [B, 3]
    outer_pattern: Tensor  # [B] long index into RICH_PATTERNS
    outer_pattern_freq: Tensor  # [B]
    outer_pattern_phase: Tensor  # [B]
    outer_open: Tensor  # [B] metres, half-width of the front opening at the hem (0: closed)
    outer_sleeve: Tensor  # [B] limb_t the outer sleeves reach
    outer_hem: Tensor  # [B] torso height where the outer layer ends (< 0 for a coat)
    outer_length: Tensor  # [B] limb_t a coat reaches down the legs (0: not below the hips)
    hair_style: Tensor  # [B] long index into HAIR_STYLES
    bun: Tensor  # [B] metres, radius of a bun at the back of the head (0: none)
    ponytail: Tensor  # [B] metres, half-width of a ponytail down the back (0: none)
    shoe_kind: Tensor  # [B] long index into SHOE_KINDS
    sole: Tensor  # [B, 3]
    light_on: Tensor  # [B] 0 / 1: :func:`shade` applies a baked light
    light_dir: Tensor  # [B, 3] unit vector towards the light (world frame)
    ambient: Tensor  # [B] share of the light that does not depend on the normal
    light_tint: Tensor  # [B, 3] colour temperature multipliers (about 1)

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
    basic = dict(
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
    basic.update(_RICH_OFF, dress=float(dress), mark=np.zeros(MARK_SHAPE))
    return basic


_RICH_OFF = dict(
    rich=0.0, top_back=np.zeros(3), top_back_mode=0, mark_colour=np.zeros(3), mark_front=0.0, mark_back=0.0,
    mark_height=0.0, mark_aspect=1.0, mark_y=0.0, outer_kind=0, outer=np.zeros(3), outer_secondary=np.zeros(3),
    outer_pattern=0, outer_pattern_freq=0.0, outer_pattern_phase=0.0, outer_open=0.0, outer_sleeve=0.0,
    outer_hem=2.0, outer_length=0.0, hair_style=0, bun=0.0, ponytail=0.0, shoe_kind=0, sole=np.zeros(3),
    light_on=0.0, light_dir=np.array([0.0, 1.0, 0.0]), ambient=1.0, light_tint=np.ones(3),
)
_LONG_FIELDS = ("top_pattern", "bottom_pattern", "bottom_kind", "seed", "top_back_mode", "outer_kind",
                "outer_pattern", "hair_style", "shoe_kind")
_MARK_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def _mark_bitmap(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A logo (a simple shape) or 1-5 characters of PIL's built-in font, cropped to its ink and
    resized to :data:`MARK_SHAPE`: a 0 / 1 bitmap and the ink's width / height."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (96, 32))
    draw = ImageDraw.Draw(canvas)
    if rng.random() < 0.6:
        text = "".join(_MARK_CHARS[rng.integers(len(_MARK_CHARS))] for _ in range(rng.integers(1, 6)))
        draw.text((2, 2), text, fill=255, font=ImageFont.load_default())
    else:
        shape = rng.integers(4)
        if shape == 0:
            draw.ellipse((2, 2, 29, 29), fill=255)
        elif shape == 1:
            draw.ellipse((2, 2, 29, 29), outline=255, width=5)
        elif shape == 2:
            draw.polygon([(16, 2), (30, 29), (2, 29)], fill=255)
        else:
            a = np.arange(10) * np.pi / 5 - np.pi / 2
            r = np.where(np.arange(10) % 2 == 0, 14.0, 6.0)
            draw.polygon([(16 + float(x), 16 + float(y)) for x, y in zip(r * np.cos(a), r * np.sin(a))], fill=255)
    ink = np.asarray(canvas) > 80
    rows, cols = np.nonzero(ink.any(1))[0], np.nonzero(ink.any(0))[0]
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = MARK_SHAPE
    r = (np.arange(h) * ink.shape[0] / h).astype(int)
    c = (np.arange(w) * ink.shape[1] / w).astype(int)
    return ink[r][:, c].astype(np.float64), ink.shape[1] / ink.shape[0]


def _rich_one(seed: int, phenotype: Sequence[float], d: dict[str, object]) -> dict[str, object]:
    """A rich person: the basic numbers ``d`` of the item, redrawn and extended from a second stream of
    its seed (the basic stream is left as it is)."""
    rng = np.random.default_rng([seed, 1])
    gender, age = float(phenotype[0]), float(phenotype[1])
    d = dict(d, rich=1.0)
    t = rng.random() * (len(RICH_SKIN_TONES) - 1)
    i = int(t)
    skin = RICH_SKIN_TONES[i] + (RICH_SKIN_TONES[min(i + 1, len(RICH_SKIN_TONES) - 1)] - RICH_SKIN_TONES[i]) * (t - i)
    d["skin"] = skin = np.clip(skin * rng.uniform(0.95, 1.05) + rng.normal(0, 0.012, 3), 0, 1)
    d["lips"] = np.clip(skin * np.array([0.9, 0.68, 0.68]), 0, 1)
    hair = RICH_HAIR_COLOURS[rng.choice(len(RICH_HAIR_COLOURS), p=RICH_HAIR_PROBS)]
    if age > 0.85 and rng.random() < 0.6:
        hair = HAIR_COLOURS[6 + rng.integers(2)]
    d["hair"] = np.clip(hair * rng.uniform(0.85, 1.15), 0, 1)
    p_style = np.array([0.55 - 0.35 * gender, 0.15 + 0.35 * gender, 0.05 + 0.15 * gender, 0.03 + 0.12 * gender,
                        0.12 * (1 - gender) * (0.5 + age)])
    style = int(rng.choice(len(HAIR_STYLES), p=p_style / p_style.sum()))
    d["hair_style"], d["hair_amount"] = style, 0.0 if HAIR_STYLES[style] == "bald" else 1.0
    fringe = rng.random() < 0.35
    d["hairline"] = rng.uniform(0.085, 0.115) - (rng.uniform(0.02, 0.05) if fringe else 0.0)
    d["hair_back"] = {"long": rng.uniform(-0.4, -0.12), "ponytail": rng.uniform(-0.06, -0.02)}.get(
        HAIR_STYLES[style], rng.uniform(-0.1, -0.02))
    d["hair_width"] = rng.uniform(0.07, 0.13)
    d["bun"] = rng.uniform(0.035, 0.055) if HAIR_STYLES[style] == "bun" else 0.0
    d["ponytail"] = rng.uniform(0.015, 0.03) if HAIR_STYLES[style] == "ponytail" else 0.0

    top_pattern = int(rng.choice(len(RICH_PATTERNS), p=RICH_PATTERN_PROBS))
    d["top"], d["top_secondary"] = _garment_colour(rng), _garment_colour(rng)
    d["top_pattern"], d["top_pattern_freq"], d["top_pattern_phase"] = top_pattern, rng.uniform(6, 30), rng.random()
    d["top_back_mode"] = int(rng.choice(len(BACK_MODES), p=[0.7, 0.2, 0.1]))
    d["top_back"] = _garment_colour(rng)
    kind = int(rng.choice(len(BOTTOMS), p=[0.45, 0.2, 0.35] if gender > 0.5 else [0.68, 0.27, 0.05]))
    d["bottom_kind"] = kind
    d["bottom_length"] = {"trousers": rng.uniform(0.8, 1.02), "shorts": rng.uniform(0.15, 0.5)}.get(
        BOTTOMS[kind], rng.uniform(0.1, 1.02))
    dress = BOTTOMS[kind] == "skirt" and rng.random() < 0.45
    d["dress"] = float(dress)
    d["bottom"] = d["top"] if dress else _garment_colour(rng)
    d["bottom_secondary"] = d["top_secondary"] if dress else _garment_colour(rng)
    d["bottom_pattern"] = top_pattern if dress else int(rng.choice(len(PATTERNS), p=_bottom_pattern_probs()))
    if dress:
        d["bottom_pattern_freq"], d["bottom_pattern_phase"] = d["top_pattern_freq"], d["top_pattern_phase"]
    d["top_hem"] = -0.1 if dress else rng.uniform(-0.05, 0.3)
    d["has_belt"] = float(rng.random() < (0.15 if dress else 0.25))

    if rng.random() < 0.4:
        mark, aspect = _mark_bitmap(rng)
        where = rng.choice(3, p=[0.6, 0.15, 0.25])  # front only, back only, both
        d.update(mark=mark, mark_aspect=aspect, mark_front=float(where != 1), mark_back=float(where != 0),
                 mark_colour=_garment_colour(rng),
                 mark_height=rng.uniform(0.04, 0.09) if aspect > 2 else rng.uniform(0.06, 0.13),
                 mark_y=rng.uniform(0.55, 0.78))
        d["mark_height"] = min(d["mark_height"], 0.3 / aspect)  # at most 30 cm wide

    outer = int(rng.choice(len(OUTER_KINDS), p=OUTER_PROBS))
    d["outer_kind"] = outer
    if OUTER_KINDS[outer] != "none":
        name = OUTER_KINDS[outer]
        d["outer"], d["outer_secondary"] = _garment_colour(rng), _garment_colour(rng)
        d["outer_pattern"] = int(rng.choice([0, 1, 4, 8], p=[0.75, 0.1, 0.1, 0.05]))
        d["outer_pattern_freq"], d["outer_pattern_phase"] = rng.uniform(6, 20), rng.random()
        d["outer_open"] = rng.uniform(0.04, 0.1) if rng.random() < 0.8 else 0.0
        d["outer_sleeve"] = 0.0 if name == "vest" else rng.uniform(0.85, 1.0)
        d["outer_hem"] = {"jacket": rng.uniform(-0.1, 0.1), "cardigan": rng.uniform(-0.05, 0.2),
                          "coat": -0.5, "vest": rng.uniform(0.05, 0.25)}[name]
        d["outer_length"] = rng.uniform(0.3, 0.85) if name == "coat" else 0.0
        d["sleeve"] = max(float(d["sleeve"]), 0.12) if name != "vest" else float(d["sleeve"])

    shoe = int(rng.choice(len(SHOE_KINDS), p=[0.3, 0.4, 0.18, 0.12]))
    d["shoe_kind"] = shoe
    classic = [(0.06, 0.05, 0.05), (0.35, 0.2, 0.1), (0.92, 0.92, 0.9), (0.55, 0.4, 0.28)]
    d["shoes"] = np.asarray(classic[rng.integers(len(classic))]) if rng.random() < 0.5 else _garment_colour(rng)
    d["sole"] = np.asarray([(0.95, 0.95, 0.93), (0.1, 0.1, 0.1), (0.6, 0.45, 0.3)][rng.integers(3)])
    d["shoe_height"] = {"boot": rng.uniform(0.08, 0.25), "sneaker": rng.uniform(0.0, 0.06)}.get(
        SHOE_KINDS[shoe], rng.uniform(-0.02, 0.02))
    if SHOE_KINDS[shoe] in ("boot", "sandal"):
        d["sock_height"] = 0.0

    elevation, azimuth = rng.uniform(0.15, 1.2), rng.uniform(0, 2 * np.pi)
    d["light_on"] = 1.0
    d["light_dir"] = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])
    d["ambient"] = rng.uniform(0.55, 0.85)
    warmth = rng.uniform(-1, 1)  # cool (about 8000 K) .. warm (about 4000 K)
    tint = np.array([1 + 0.06 * warmth, 1.0, 1 - 0.08 * warmth])
    d["light_tint"] = tint / (tint @ np.array([0.2126, 0.7152, 0.0722])) * rng.uniform(0.95, 1.08)
    return d


def _bottom_pattern_probs() -> np.ndarray:
    p = PATTERN_PROBS * np.array([2.5, 1.0, 0.6, 0.3, 1.0, 0.5, 0.0])
    return p / p.sum()


def sample_appearance(seeds: Sequence[int], phenotypes: Tensor, people: str = "basic") -> AppearanceParams:
    """Appearance parameters of ``B`` items from their seeds and phenotypes ``[B, 6]`` (CPU tensors);
    ``people`` is one of :data:`PEOPLE` (see the module's docstring)."""
    if people not in PEOPLE:
        raise ValueError(f"people must be one of {PEOPLE}, got {people!r}")
    rows = [_sample_one(int(s), p.tolist()) for s, p in zip(seeds, phenotypes)]
    rows = [_rich_one(int(s), p.tolist(), r) if is_rich(int(s), people) else r
            for s, p, r in zip(seeds, phenotypes, rows)]
    out = {}
    for f in fields(AppearanceParams):
        values = np.asarray([np.asarray(r[f.name], dtype=np.float64) for r in rows])
        dtype = torch.long if f.name in _LONG_FIELDS else torch.float32
        out[f.name] = torch.as_tensor(values).to(dtype)
    return AppearanceParams(**out)


# --- painting ---------------------------------------------------------------------------------

def _hash_noise(position: Tensor, seed: Tensor) -> Tensor:
    """Deterministic per-texel noise in [0, 1): ``position [N, 3]``, ``seed [B]`` -> ``[B, N]``."""
    s = (seed.to(position.dtype) % 9973)[:, None]
    x = position[None, :, 0] * 127.1 + position[None, :, 1] * 311.7 + position[None, :, 2] * 74.7 + s * 0.618
    return torch.frac(torch.sin(x * 43.758) * 43758.5453).abs()


def _cell_hash(cell: Tensor, salt: Tensor) -> Tensor:
    """Deterministic noise in [0, 1) per integer cell: ``cell [B, N, 3]``, ``salt [B, 1]`` -> ``[B, N]``."""
    x = cell[..., 0] * 12.9898 + cell[..., 1] * 78.233 + cell[..., 2] * 37.719 + salt * 101.3
    return torch.frac(torch.sin(x) * 43758.5453).abs()


def _pattern(kind: Tensor, freq: Tensor, phase: Tensor, pos: Tensor, height: Optional[Tensor] = None) -> Tensor:
    """Secondary-colour mask ``[B, N]`` of each item's pattern on canonical positions ``[N, 3]``
    (``height [N]``: torso height, needed by the rich patterns only)."""
    x, y, z = (pos[None, :, k] for k in range(3))
    f, ph = freq[:, None], phase[:, None]
    stripes = lambda coord: torch.frac(coord * f + ph) < 0.5
    checker = ((torch.floor(x * f * 0.5 + ph) + torch.floor(y * f * 0.5) + torch.floor(z * f * 0.5)) % 2) == 1
    cell = torch.frac(pos[None] * f[..., None] * 0.5 + ph[..., None]) - 0.5
    dots = cell.norm(dim=-1) < 0.22
    chest = ((x ** 2 + (y - 0.33) ** 2) < (0.03 + 0.05 * ph) ** 2) & (z > 0.05)
    options = [torch.zeros_like(chest), stripes(y), stripes(x), stripes((x + y) * 0.7), checker, dots, chest]
    if bool((kind >= len(PATTERNS)).any()):  # the rich ones
        h = height[None] if height is not None else y
        block = h > 0.45 + 0.3 * ph
        panels = x.abs() > 0.06 + 0.06 * ph
        scaled = pos[None] * f[..., None] * 0.35
        motif = (_cell_hash(torch.floor(scaled), ph) > 0.55) & ((torch.frac(scaled) - 0.5).norm(dim=-1) < 0.3)
        options += [block, panels, motif]
    stacked = torch.stack(options)
    return stacked.gather(0, kind[None, :, None].expand(1, -1, pos.shape[0]))[0]


def _mark_mask(p: "AppearanceParams", x: Tensor, y: Tensor, torso_h: Tensor, features: "TexelFeatures") -> Tensor:
    """Texels ``[B, N]`` inside each item's chest / back mark (its bitmap stamped on the canonical x-y
    plane; mirrored on the back so that it reads from behind)."""
    h, w = MARK_SHAPE
    height = p.mark_height[:, None]
    width = height * p.mark_aspect[:, None]
    centre = features.y_root + p.mark_y[:, None] * (features.y_neck - features.y_root)
    front = (features.position[None, :, 2] > 0)
    u = (torch.where(front, x[None], -x[None]) / width.clamp_min(1e-6) + 0.5)  # 0 .. 1 across the box
    v = ((centre - y[None]) / height.clamp_min(1e-6) + 0.5)  # 0 top .. 1 bottom
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    col = (u.clamp(0, 1 - 1e-6) * w).long()
    row = (v.clamp(0, 1 - 1e-6) * h).long()
    ink = p.mark.reshape(p.batch_size, -1).gather(1, row * w + col) > 0.5
    wanted = torch.where(front, p.mark_front[:, None] > 0.5, p.mark_back[:, None] > 0.5)
    return inside & ink & wanted


@torch.no_grad()
def paint(features: TexelFeatures, params: AppearanceParams) -> Tensor:
    """Colours ``[B, N, 3]`` (sRGB in [0, 1]) of every texel for every item."""
    return paint_with_regions(features, params)[0]


@torch.no_grad()
def region_labels(features: TexelFeatures, params: AppearanceParams) -> Tensor:
    """Garment region ``[B, N]`` (long, an index into :data:`REGION_NAMES`) of every texel for every
    item: the region whose colour :func:`paint` gives that texel (lips, brows and irises are ``face``,
    a beard ``hair``, a dress's top and skirt ``dress``, a mark on a top ``top``)."""
    return paint_with_regions(features, params)[1]


@torch.no_grad()
def paint_with_regions(features: TexelFeatures, params: AppearanceParams) -> tuple[Tensor, Tensor]:
    """Colours ``[B, N, 3]`` (sRGB in [0, 1]) and garment regions ``[B, N]`` (long) of every texel."""
    p = params.to(features.position.device)
    pos, part, t = features.position, features.part, features.limb_t
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    b = p.batch_size
    col = lambda c: c[:, None, :]  # [B, 3] -> [B, 1, 3]
    per = lambda v: v[:, None]  # [B] -> [B, 1]
    is_ = lambda *parts: torch.isin(part, torch.tensor(parts, device=part.device))[None]  # [1, N]
    torso_h = ((y - features.y_root) / (features.y_neck - features.y_root))[None]  # [1, N]
    rich = bool((p.rich > 0.5).any())

    colors = col(p.skin).expand(b, pos.shape[0], 3).clone()
    labels = torch.full((b, pos.shape[0]), SKIN, dtype=torch.long, device=pos.device)

    def put(mask: Tensor, colour: Tensor, region) -> None:
        nonlocal colors, labels
        colors = torch.where(mask[..., None], colour, colors)
        labels = torch.where(mask, torch.as_tensor(region, device=pos.device), labels)

    face = is_(HEAD) & (z[None] > features.z_face - 0.03) & (features.head_back[None] < 0.2)
    lips = face & ((y - (features.y_eye - 0.072)).abs() < 0.007)[None] & (x.abs() < 0.022)[None]
    put(lips, col(p.lips), FACE)
    brows = face & ((y - (features.y_eye + 0.025)).abs() < 0.0035)[None] & \
        ((x.abs() - features.x_eye).abs() < 0.02)[None]
    put(brows, col(p.hair * 0.8), FACE)
    beard = face & (y < features.y_eye - 0.05)[None] & (per(p.beard) > 0.5)
    put(beard, col(p.hair * 0.9), HAIR)

    skirt = per(p.bottom_kind) == BOTTOMS.index("skirt")
    dress = per(p.dress) > 0.5
    bottom_pattern = _pattern(p.bottom_pattern, p.bottom_pattern_freq, p.bottom_pattern_phase, pos, torso_h[0])
    bottom_col = torch.where(bottom_pattern[..., None], col(p.bottom_secondary), col(p.bottom))
    bottoms = (is_(TORSO) & (torso_h < per(p.waist))) | (is_(LEG) & (t[None] < per(p.bottom_length)))
    put(bottoms, bottom_col, torch.where(skirt | dress, DRESS, BOTTOMS_REGION))
    belt = is_(TORSO) & ((torso_h - per(p.waist)).abs() < 0.025) & (per(p.has_belt) > 0.5)
    put(belt, col(p.belt), BELT)

    socks = is_(LEG, FOOT) & (y[None] < features.y_ankle + per(p.sock_height))
    put(socks, col(p.socks), SOCKS)

    top_pattern = _pattern(p.top_pattern, p.top_pattern_freq, p.top_pattern_phase, pos, torso_h[0])
    top_col = torch.where(top_pattern[..., None], col(p.top_secondary), col(p.top))
    front = (z[None] > 0.0)
    if rich:  # the back of the top: as the front, without the pattern, or another colour
        mode = per(p.top_back_mode)
        top_col = torch.where((~front & (mode == 1))[..., None], col(p.top), top_col)
        top_col = torch.where((~front & (mode == 2))[..., None], col(p.top_back), top_col)
        top_col = torch.where(_mark_mask(p, x, y, torso_h, features)[..., None], col(p.mark_colour), top_col)
    neck_dip = (features.y_neck - y)[None] < per(p.neckline) - 0.04 * (x ** 2 / 0.01).clamp(max=1)[None]
    open_neck = neck_dip & front & (per(p.neckline) > 0)
    torso_top = is_(TORSO) & (torso_h > per(p.top_hem)) & ~open_neck
    collar = is_(NECK) & (per(p.neckline) < 0) & (y[None] < features.y_neck + 0.06)
    sleeves = is_(ARM) & (t[None] < per(p.sleeve))
    top = torso_top | collar | sleeves
    put(top, top_col, torch.where(dress, DRESS, TOP))

    if rich:  # an outer layer: jacket, cardigan, coat or vest, open at the front
        worn = per(p.outer_kind) > 0
        outer_pattern = _pattern(p.outer_pattern, p.outer_pattern_freq, p.outer_pattern_phase, pos, torso_h[0])
        outer_col = torch.where(outer_pattern[..., None], col(p.outer_secondary), col(p.outer))
        opening = per(p.outer_open) * (0.6 + 0.8 * torso_h.clamp(0, 1))  # lapels widen towards the neck
        gap = front & (x.abs()[None] < opening)
        below_neck = (y[None] < features.y_neck + 0.02)
        body = is_(TORSO) & (torso_h > per(p.outer_hem)) & ~gap & below_neck
        coat_legs = is_(LEG) & (t[None] < per(p.outer_length))
        outer = worn & (body | (is_(ARM) & (t[None] < per(p.outer_sleeve))) | coat_legs)
        put(outer, outer_col, OUTER)

    shoes = is_(FOOT) | (is_(LEG) & (y[None] < features.y_ankle + per(p.shoe_height)))
    put(shoes, col(p.shoes), SHOES)
    if rich:
        kind = per(p.shoe_kind)
        floor = float(pos[part == FOOT, 1].min()) if bool((part == FOOT).any()) else features.y_ankle - 0.08
        sole = shoes & (y[None] < floor + 0.018) & ((kind == 1) | (kind == 2) | (kind == 3))
        put(sole, col(p.sole), SHOES)
        strap = torch.frac(z * 28.0)[None] < 0.35
        bare = shoes & (kind == 3) & ~sole & ~strap
        put(bare, col(p.skin), SKIN)

    # hair: above a line that runs from the forehead down to the nape (or the back for long hair)
    back = features.head_back[None]
    ramp = ((back - 0.2) / 0.8).clamp(0, 1) ** 1.5
    line = per(p.hairline) + (per(p.hair_back) - per(p.hairline)) * ramp
    on_back = is_(TORSO, NECK) & (z[None] < 0.0) & (x.abs()[None] < per(p.hair_width))
    hair = (is_(HEAD) | on_back) & (features.head_dy[None] > line) & (per(p.hair_amount) > 0.5)
    if rich:  # a ponytail down the back; a bun behind the crown
        tail = is_(HEAD, NECK, TORSO) & (z[None] < features.head[2]) & (x.abs()[None] < per(p.ponytail)) & \
            (features.head_dy[None] > -0.3)
        bun_centre = torch.tensor(features.head, device=pos.device) + torch.tensor([0.0, 0.07, -0.085], device=pos.device)
        bun = is_(HEAD) & ((pos - bun_centre).norm(dim=-1)[None] < 1.6 * per(p.bun))
        hair = hair | ((tail | bun) & (per(p.hair_amount) > 0.5))
    strands = 0.85 + 0.3 * _hash_noise(pos * torch.tensor([8.0, 0.3, 8.0], device=pos.device), p.seed)[..., None]
    put(hair, col(p.hair) * strands, HAIR)

    # eyes: a dark iris in front of each eye joint
    eye_region = is_(HEAD, EYE) & (z[None] > features.z_face - 0.01)
    dx, dy = x.abs() - features.x_eye, y - features.y_eye
    iris = eye_region & ((dx / 0.007) ** 2 + (dy / 0.0045) ** 2 < 1)[None]
    put(iris, col(p.eyes), FACE)

    # low-frequency shading (folds, lighting) and fine fabric noise
    dirs, phases = p.shading[:, :, :3], p.shading[:, :, 3]  # [B, 4, 3], [B, 4]
    waves = torch.sin(torch.einsum("bkd,nd->bkn", dirs, pos) + phases[..., None]).mean(1)  # [B, N]
    fine = _hash_noise(pos, p.seed) - 0.5
    colors = colors * (1.0 + 0.06 * waves + 0.04 * fine)[..., None]
    return colors.clamp(0, 1), labels


# --- baked light --------------------------------------------------------------------------------

def normals_from_quats(quats: Tensor) -> Tensor:
    """The +Z axis (a flat Gaussian's normal) of rotations ``quats [..., 4]`` (w, x, y, z): ``[..., 3]``."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], dim=-1)


@torch.no_grad()
def shade(colors: Tensor, normals: Tensor, params: AppearanceParams) -> Tensor:
    """Bake each item's light into its colours: ``colors [B, N, 3]`` (sRGB in [0, 1]) times a Lambert
    term ``ambient + (1 - ambient) * max(0, n . l)`` (normalised so that a surface at 60 degrees to
    the light keeps its colour) and the light's colour temperature; ``normals [B, N, 3]`` are the posed
    (world-frame) normals, e.g. ``normals_from_quats(posed.quats)``. Items without a light (all basic
    people) come back unchanged, bit for bit."""
    p = params.to(colors.device)
    on = p.light_on > 0.5
    if not bool(on.any()):
        return colors
    n = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    lambert = (n * p.light_dir[:, None, :].to(n.dtype)).sum(-1).clamp_min(0)  # [B, N]
    ambient = p.ambient[:, None].to(n.dtype)
    factor = (ambient + (1 - ambient) * lambert) / (ambient + (1 - ambient) * 0.5)
    lit = (colors * factor[..., None] * p.light_tint[:, None, :].to(colors.dtype)).clamp(0, 1)
    return torch.where(on[:, None, None], lit, colors)
