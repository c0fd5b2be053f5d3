"""The 33 BlazePose landmarks as points on a body model ("markers").

Each landmark is a canonical point carried by the body's skinning, so its posed position is one
small linear-blend-skinning product (``lbs_points`` of 33 points) and follows the body's shape:

- joints (shoulders, elbows, wrists, knees, ankles, finger knuckles) sit on a joint, optionally
  offset in the joint's rest frame, and move rigidly with it;
- BlazePose's hips, shoulders, knees and ankles do not sit exactly on the model's joints; a fixed
  offset in the joint's rest frame, per body model, moves them where BlazePose puts them
  (:data:`JOINT_OFFSETS`; for SMPL-X the hips sit outside and below its hip joints);
- the ears ride on the head joint, a little inside the head's widest points (:data:`EAR_INSET`);
- the face (nose, mouth), heels and toe tips are surface points: canonical mesh
  vertices picked by geometry (the most forward head vertex is the nose tip, the most lateral ones
  at eye height are the ears, the lowest-backmost foot vertex is the heel, ...), skinned with the
  vertex's own weights. When a body has no vertex dominated by its head (or foot), the point falls
  back to an offset from the head (or ankle) joint.

Left and right are the person's own: the body's +X side is its left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from sigman.body.base import BodyModel
from sigman.lbs import lbs_points
from sigman.observation import BLAZEPOSE_LANDMARKS, NUM_LANDMARKS

# Joint names per body model (left side; the right side swaps ".L"/"left" for ".R"/"right").
BODY_JOINTS: dict[str, dict[str, str]] = {
    "anny": dict(head="head", eye="eye.L", shoulder="upperarm01.L", elbow="lowerarm01.L",
                 wrist="wrist.L", pinky="finger5-1.L", index="finger2-1.L", thumb="finger1-2.L",
                 hip="upperleg01.L", knee="lowerleg01.L", ankle="foot.L", toe="toe2-1.L", pelvis="root"),
    "smplx": dict(head="head", eye="left_eye_smplhf", shoulder="left_shoulder", elbow="left_elbow",
                  wrist="left_wrist", pinky="left_pinky1", index="left_index1", thumb="left_thumb2",
                  hip="left_hip", knee="left_knee", ankle="left_ankle", toe="left_foot", pelvis="pelvis"),
}
# Where BlazePose's landmarks sit relative to the model's (left) joints, metres in the rest frame
# (x outward, y up, z forward). anny: measured with MediaPipe (pose_landmarker_full) on the
# project's own renders (4 poses x front and side views, scripts/eval_pose.py's bodies): its hips
# lie about 1 cm inside and below anny's hip joints, its shoulders 1.7 cm above, its knees 2 cm
# below and its ankles 2 cm above the joints. SMPL-X: a guess (not measured: no licensed files).
JOINT_OFFSETS: dict[str, dict[str, tuple[float, float, float]]] = {
    "anny": {"hip": (-0.012, -0.008, 0.0), "shoulder": (0.0, 0.017, 0.0), "knee": (0.0, -0.02, 0.0),
             "ankle": (0.0, 0.02, 0.0)},
    "smplx": {"hip": (0.04, -0.03, 0.0)},
}
# BlazePose's ear landmarks sit this far (metres) inside the head's widest points at eye height:
# measured against MediaPipe on frontal renders (seed 7 of scripts/dev/pose_cases.py: 4.0 cm over 16
# bodies and poses; seed 0: 3.8 cm).
EAR_INSET = 0.04
# Joints whose skinned vertices form the head / the left foot (regular expressions).
HEAD_PATTERN = r"^(head|jaw|eye\.[LR]|left_eye_smplhf|right_eye_smplhf)$"
NECK_PATTERN = r"^neck"  # anny: neck01-03; SMPL-X: neck
FOOT_PATTERN = {"anny": r"^(foot|toe\d-\d)\.L$", "smplx": r"^left_(ankle|foot)$"}


def _right(name: str) -> str:
    if name.endswith(".L"):
        return name[:-2] + ".R"
    return name.replace("left_", "right_", 1)


@dataclass
class BodyMarkers:
    """33 BlazePose markers on one body model.

    Attributes:
        vertex: ``[33]`` long, the canonical vertex a surface marker sits on, ``-1`` for joint markers.
        joint: ``[33]`` long, the joint a joint marker rides on (unused for surface markers).
        offset: ``[33, 3]`` offset from the joint in its rest frame (metres).
        weights: ``[33, J]`` skinning weights (one-hot for joint markers).
    """

    vertex: Tensor
    joint: Tensor
    offset: Tensor
    weights: Tensor

    def to(self, *args, **kwargs) -> "BodyMarkers":
        return BodyMarkers(self.vertex.to(kwargs.get("device", args[0] if args else None)),
                           self.joint.to(kwargs.get("device", args[0] if args else None)),
                           self.offset.to(*args, **kwargs), self.weights.to(*args, **kwargs))

    def canonical(self, rest_vertices: Tensor, rest_joints: Tensor) -> Tensor:
        """Canonical marker positions ``[B, 33, 3]`` for a shaped body (``[B, V, 3]``, ``[B, J, 3]``)."""
        on_joint = rest_joints[:, self.joint] + self.offset.to(rest_joints)
        on_vertex = rest_vertices[:, self.vertex.clamp_min(0)]
        return torch.where((self.vertex >= 0)[None, :, None], on_vertex, on_joint)

    def posed(self, canonical: Tensor, transforms: Tensor) -> Tensor:
        """Posed marker positions ``[T, 33, 3]`` from canonical ones ``[T or 1, 33, 3]`` and the
        body's skinning transforms ``[T, J, 4, 4]``."""
        if canonical.shape[0] == 1 and transforms.shape[0] > 1:
            canonical = canonical.expand(transforms.shape[0], -1, -1)
        return lbs_points(canonical, self.weights, transforms)


def _region(body: BodyModel, pattern: str) -> Tensor:
    """Indices of the canonical vertices whose dominant skinning joint matches ``pattern``."""
    joints = [i for i, n in enumerate(body.joint_names) if re.search(pattern, n)]
    if not joints:
        return torch.zeros(0, dtype=torch.long)
    dominant = body.skin_weights.argmax(dim=1).cpu()
    return torch.nonzero(torch.isin(dominant, torch.tensor(joints)))[:, 0]


def body_markers(body: BodyModel, offsets: Optional[dict[str, tuple[float, float, float]]] = None) -> BodyMarkers:
    """The BlazePose markers of ``body`` (``"anny"`` or ``"smplx"``), picked on its canonical mesh.
    ``offsets``: per joint marker (``"hip"``, ``"shoulder"``, ...), default :data:`JOINT_OFFSETS`."""
    if body.name not in BODY_JOINTS:
        raise ValueError(f"no BlazePose markers for body '{body.name}'; known: {sorted(BODY_JOINTS)}")
    names = BODY_JOINTS[body.name]
    index = {n: i for i, n in enumerate(body.joint_names)}
    missing = [n for k in names.values() for n in {k, _right(k)} if n not in index]
    if missing:
        raise ValueError(f"body '{body.name}' lacks the marker joints {missing}")
    verts = body.rest_vertices.detach().cpu().float()
    joints = body.rest_joints.detach().cpu().float()
    jpos = lambda name: joints[index[name]]
    offsets = JOINT_OFFSETS.get(body.name, {}) if offsets is None else offsets

    vertex = torch.full((NUM_LANDMARKS,), -1, dtype=torch.long)
    joint = torch.zeros(NUM_LANDMARKS, dtype=torch.long)
    offset = torch.zeros(NUM_LANDMARKS, 3)
    mark = {name: i for i, name in enumerate(BLAZEPOSE_LANDMARKS)}

    def on_joint(landmark: str, joint_name: str, off=(0.0, 0.0, 0.0)) -> None:
        joint[mark[landmark]] = index[joint_name]
        offset[mark[landmark]] = torch.tensor(off, dtype=torch.float32)

    for side, mirror in (("left", 1.0), ("right", -1.0)):
        pick = (lambda n: n) if side == "left" else _right
        for part in ("shoulder", "elbow", "wrist", "pinky", "index", "thumb", "knee", "ankle", "hip"):
            ox, oy, oz = offsets.get(part, (0.0, 0.0, 0.0))
            on_joint(f"{side}_{part}", pick(names[part]), (mirror * ox, oy, oz))

    # face: surface points of the head, else offsets from the head and eye joints
    head_j, eye_l, eye_r = jpos(names["head"]), jpos(names["eye"]), jpos(_right(names["eye"]))
    eye_y, eye_x = float(0.5 * (eye_l[1] + eye_r[1])), float(0.5 * (eye_l[0] - eye_r[0]).abs())
    head = _region(body, HEAD_PATTERN)
    eye_dx = max(0.4 * eye_x, 0.012)
    for side, mirror, eye_name in (("left", 1.0, names["eye"]), ("right", -1.0, _right(names["eye"]))):
        on_joint(f"{side}_eye", eye_name, (0.0, 0.0, 0.01))
        on_joint(f"{side}_eye_inner", eye_name, (-mirror * eye_dx, 0.0, 0.005))
        on_joint(f"{side}_eye_outer", eye_name, (mirror * eye_dx, 0.0, 0.0))

    def ears_from_the_head_joint() -> None:  # no usable head vertices: ears a head's width from the head joint
        width = max(2.2 * eye_x, 0.06)
        on_joint("left_ear", names["head"], (width, eye_y - float(head_j[1]), 0.0))
        on_joint("right_ear", names["head"], (-width, eye_y - float(head_j[1]), 0.0))

    if len(head) >= 10:
        hv = verts[head]
        nose = head[hv[:, 2].argmax()]
        vertex[mark["nose"]] = nose
        band = head[(hv[:, 1] - eye_y).abs() < 0.03]
        bv = verts[band]
        if band.numel() >= 2:  # BlazePose's ears lie EAR_INSET inside the head's widest points at eye height
            for side, v in (("left", band[bv[:, 0].argmax()]), ("right", band[bv[:, 0].argmin()])):
                off = verts[v] - head_j
                off[0] -= torch.sign(off[0]) * EAR_INSET
                on_joint(f"{side}_ear", names["head"], tuple(float(x) for x in off))
        else:  # a coarse head mesh with no vertex at eye height
            ears_from_the_head_joint()
        nose_p = verts[nose]
        for side, mirror in (("mouth_left", 1.0), ("mouth_right", -1.0)):
            target = torch.tensor([mirror * 0.8 * eye_x, float(nose_p[1]) - 0.045, float(nose_p[2])])
            vertex[mark[side]] = head[(hv - target).norm(dim=1).argmin()]
    else:
        on_joint("nose", names["head"], (0.0, eye_y - float(head_j[1]) - 0.04, float(eye_l[2] - head_j[2]) + 0.03))
        ears_from_the_head_joint()
        on_joint("mouth_left", names["head"], (0.8 * eye_x, eye_y - float(head_j[1]) - 0.08, float(eye_l[2] - head_j[2])))
        on_joint("mouth_right", names["head"], (-0.8 * eye_x, eye_y - float(head_j[1]) - 0.08, float(eye_l[2] - head_j[2])))

    # feet: the heel (lowest, backmost) and the toe tip (most forward) of each foot
    foot = _region(body, FOOT_PATTERN[body.name])
    for side, mirror in (("left", 1.0), ("right", -1.0)):
        ankle_name = names["ankle"] if side == "left" else _right(names["ankle"])
        ankle = jpos(ankle_name)
        region = foot if side == "left" else _region(body, _right_pattern(FOOT_PATTERN[body.name]))
        if len(region) >= 10:
            fv = verts[region]
            low = fv[:, 1] < float(fv[:, 1].min()) + 0.03
            vertex[mark[f"{side}_heel"]] = region[torch.where(low, fv[:, 2], torch.inf).argmin()]
            vertex[mark[f"{side}_foot_index"]] = region[fv[:, 2].argmax()]
        else:
            on_joint(f"{side}_heel", ankle_name, (0.0, -0.06, -0.06))
            on_joint(f"{side}_foot_index", ankle_name, (0.0, -0.07, 0.17))

    weights = torch.zeros(NUM_LANDMARKS, body.num_joints)
    weights[torch.arange(NUM_LANDMARKS), joint] = 1.0
    surface = vertex >= 0
    weights[surface] = body.skin_weights.detach().cpu().float()[vertex[surface]]
    device = body.rest_vertices.device
    return BodyMarkers(vertex.to(device), joint.to(device), offset.to(device), weights.to(device))


def _right_pattern(pattern: str) -> str:
    return pattern.replace(r"\.L", r"\.R").replace("left_", "right_")
