"""Fast DiT inference: the speed-ups that ``SigmanPipeline.optimize()`` (and the app) opt into.

:class:`FastDiT` wraps a :class:`~sigman.models.dit.SigmanDiT`, shares its parameters (state-dict
names and checkpoint files are untouched) and computes the same function with less work:

* **bf16 weights** on CUDA (and on CPUs that multiply bf16 natively), no autocast: nothing is
  re-cast on every call;
* **one token sequence** ``[condition; latent]`` through all blocks, instead of two tensors that
  every block concatenates and splits again;
* **fused q/k/v projection**: one ``[3·inner, D]`` matrix whose row blocks *are* the ``to_q`` /
  ``to_k`` / ``to_v`` weights (those parameters become views of it: no extra memory, and in-place
  weight loads such as ``load_state_dict`` reach both);
* **fused q/k RMS-norm + RoPE** in one float32 expression, rounded to bf16 once (the condition
  tokens get the identity rotation from the tables, so there is no slicing or concatenation);
* **flash attention** through ``scaled_dot_product_attention`` on bf16 ``[B, heads, L, 64]``;
* **torch.compile** (optional, default on CUDA only) of the block function. All blocks share one
  compiled graph (weights are graph inputs), so the warm-up compiles one block, not 30; inductor
  fuses the LayerNorm, expert modulation, gating and residual work around the matmuls;
* **FP8** (``FastOptions(fp8=True)``, opt-in; Hopper/Ada): the q/k/v, attention-output and MLP
  matrices in e4m3 with per-row scales, activations quantized per token (:mod:`sigman.fast_fp8`);
* **CUDA graphs** (CUDA only): the whole forward is captured once per input shape and replayed,
  which removes the launch overhead of ~2000 kernels per sampling step.

:func:`fast_repose` is the reposing counterpart: body kinematics and per-joint tables on the CPU
(about 100 joints), then two matrix products per pose on the Gaussians' device.

Classifier-free guidance is batched as ``[uncond; cond]`` by :func:`sigman.sampling.sample`.

    fast = FastDiT(dit)                       # CUDA: bf16 + compile + graphs; CPU: eager
    v = fast(latents, timesteps, features)    # same contract as SigmanDiT.forward
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigman.fast_fp8 import fp8_linear, fp8_matmul_supported, quantize_weight
from sigman.gaussians import Gaussians
from sigman.models.attention import attention, rotary_2d_frequencies
from sigman.models.dit import DiTBlock, SigmanDiT, timestep_sinusoids

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_GRAPHING_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that capture CUDA graphs themselves


@dataclass(frozen=True)
class FastOptions:
    """How :class:`FastDiT` runs. ``None`` fields are chosen per device by :meth:`resolve`."""

    dtype: Optional[torch.dtype] = None  # None: bfloat16 on CUDA and on CPUs with native bf16, else unchanged
    fuse_qkv: bool = True
    compile: Optional[bool] = None  # None: on for CUDA models of at least compile_min_params, off elsewhere
    compile_min_params: int = 100_000_000  # smaller DiTs (the demo's 9 M) gain ~nothing from compiling: CUDA graphs suffice
    compile_mode: str = "max-autotune-no-cudagraphs"  # torch.compile mode (inductor only): COMPILE_MODES
    compile_backend: Union[str, Callable] = "inductor"  # "aot_eager" traces without code generation (tests)
    cuda_graphs: Optional[bool] = None  # None: on for CUDA unless the compile mode captures graphs itself
    fp8: bool = False  # e4m3 weights and activations for the blocks' q/k/v, output and MLP layers (sigman.fast_fp8)

    def resolve(self, device: torch.device, model_dtype: torch.dtype, num_params: Optional[int] = None) -> "FastOptions":
        """Concrete options for a model of ``num_params`` parameters (``None``: a large one) on ``device``."""
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {self.compile_mode!r}; choose one of {COMPILE_MODES}")
        cuda = device.type == "cuda"
        native_bf16 = cuda or (device.type == "cpu" and cpu_has_native_bf16())
        dtype = self.dtype or (torch.bfloat16 if native_bf16 else model_dtype)
        big = num_params is None or num_params >= self.compile_min_params
        compile_ = (cuda and big) if self.compile is None else self.compile
        graphs = cuda if self.cuda_graphs is None else (self.cuda_graphs and cuda)
        if compile_ and self.compile_backend == "inductor" and self.compile_mode in _GRAPHING_MODES:
            graphs = False  # the compiled regions already replay graphs
        return replace(self, dtype=dtype, compile=compile_, cuda_graphs=graphs)


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 matmuls run about
    twice as fast as fp32; elsewhere they are emulated and slower, so the CPU keeps float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


# ----------------------------------------------------------------------------------------------------
# The block on one token sequence (a pure function of tensors: one compiled graph serves every layer)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockStatics:
    """The Python numbers a block needs (identical for every layer, so one compiled graph fits all)."""

    num_condition: int  # M: the first M tokens are condition tokens
    num_heads: int
    head_dim: int
    norm_eps: float
    qk_norm_eps: float
    attention_backend: str
    fp8_matmul: bool = False  # FP8 matrices go through torch._scaled_mm (else the emulated product)


BlockWeights = Tuple[Optional[Tensor], ...]  # see block_weights() for the order


def block_weights(block: DiTBlock, qkv: Optional[Tuple[Tensor, Optional[Tensor]]]) -> BlockWeights:
    """A block's tensors in the order :func:`fast_block` takes them (``qkv``: fused weight, bias)."""
    n1, attn, n2, ff = block.norm1, block.attn1, block.norm2, block.ff
    if qkv is None:
        proj = (attn.to_q.weight, attn.to_q.bias, attn.to_k.weight, attn.to_k.bias, attn.to_v.weight, attn.to_v.bias)
        fused: Tuple[Optional[Tensor], Optional[Tensor]] = (None, None)
    else:
        proj, fused = (None,) * 6, qkv
    return (
        n1.linear.weight, n1.linear.bias, n1.norm.weight, n1.norm.bias,
        *fused, *proj, attn.norm_q.weight, attn.norm_k.weight, attn.to_out[0].weight, attn.to_out[0].bias,
        n2.linear.weight, n2.linear.bias, n2.norm.weight, n2.norm.bias,
        ff.net[0].proj.weight, ff.net[0].proj.bias, ff.net[2].weight, ff.net[2].bias,
    )


NUM_BLOCK_WEIGHTS = 24  # entries of block_weights(); fp8_block_weights() appends 4 scales
_FP8_SLOTS = (4, 14, 20, 22)  # fused q/k/v, attention output, MLP in, MLP out


def fp8_block_weights(weights: BlockWeights) -> BlockWeights:
    """:func:`block_weights` with the four large matrices in e4m3 and their row scales appended
    (:func:`sigman.fast_fp8.quantize_weight`; needs the fused q/k/v weight)."""
    if weights[4] is None:
        raise ValueError("FP8 needs the fused q/k/v weight (FastOptions(fuse_qkv=True))")
    out, scales = list(weights), []
    for slot in _FP8_SLOTS:
        out[slot], scale = quantize_weight(weights[slot])
        scales.append(scale)
    return tuple(out) + tuple(scales)


def _linear(x: Tensor, w: Tensor, b: Optional[Tensor], fp8_scale: Optional[Tensor], fp8_matmul: bool) -> Tensor:
    if fp8_scale is None:
        return F.linear(x, w, b)
    return fp8_linear(x, w, fp8_scale, b, fp8_matmul)


def _expert_modulate(x: Tensor, temb_silu: Tensor, lin_w: Tensor, lin_b: Optional[Tensor], ln_w: Optional[Tensor],
                     ln_b: Optional[Tensor], eps: float, m: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Expert adaptive LayerNorm on ``x [B, M+N, D]``: one LayerNorm, condition tokens modulated by
    their own shift/scale. Returns the modulated tokens, the condition gate and the latent gate
    (each ``[B, 1, D]``)."""
    shift, scale, gate, c_shift, c_scale, c_gate = F.linear(temb_silu, lin_w, lin_b)[:, None].chunk(6, dim=-1)
    h = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, eps)
    h = torch.cat([h[:, :m] * (1 + c_scale) + c_shift, h[:, m:] * (1 + scale) + shift], dim=1)
    return h, c_gate, gate


def _gated_residual(x: Tensor, out: Tensor, c_gate: Tensor, gate: Tensor, m: int) -> Tensor:
    """``x + gate ⊙ out`` with the condition gate on the first ``m`` tokens."""
    return x + torch.cat([c_gate * out[:, :m], gate * out[:, m:]], dim=1)


def _rms_rope(x: Tensor, weight: Tensor, eps: float, cos: Tensor, sin: Tensor) -> Tensor:
    """Per-head RMS-norm then rotary embedding, in float32, rounded once.

    ``x [B, L, heads, hd]``; ``cos``/``sin`` ``[L, 1, hd]`` from :func:`joint_rope_tables` (``sin``
    carries the sign of the interleaved rotation, identity rows for condition tokens).
    """
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x1, x0, x3, x2, ...)
    return (xf * cos + swapped * sin).to(x.dtype)


def fast_block(x: Tensor, temb_silu: Tensor, cos: Tensor, sin: Tensor, s: BlockStatics, *w: Optional[Tensor]) -> Tensor:
    """One DiT block on the joint sequence ``x [B, M+N, D]`` (condition tokens first) — the same
    function as :meth:`sigman.models.dit.DiTBlock.forward`.

    Args:
        x: ``[B, M+N, D]`` tokens. temb_silu: ``SiLU(temb) [B, T]``. cos, sin: ``[M+N, 1, head_dim]``.
        s: the block's static numbers. w: :func:`block_weights`.
    Returns:
        ``[B, M+N, D]``.
    """
    (n1_w, n1_b, ln1_w, ln1_b, qkv_w, qkv_b, q_w, q_b, k_w, k_b, v_w, v_b, nq_w, nk_w, o_w, o_b,
     n2_w, n2_b, ln2_w, ln2_b, f1_w, f1_b, f2_w, f2_b) = w[:NUM_BLOCK_WEIGHTS]
    qkv_s, o_s, f1_s, f2_s = w[NUM_BLOCK_WEIGHTS:] or (None,) * 4  # FP8 weight scales (fp8_block_weights)
    b, length, _ = x.shape
    m = s.num_condition
    h, c_gate, gate = _expert_modulate(x, temb_silu, n1_w, n1_b, ln1_w, ln1_b, s.norm_eps, m)
    if qkv_w is not None:
        q, k, v = _linear(h, qkv_w, qkv_b, qkv_s, s.fp8_matmul).view(b, length, 3, s.num_heads, s.head_dim).unbind(2)
    else:
        q, k, v = (F.linear(h, pw, pb).view(b, length, s.num_heads, s.head_dim)
                   for pw, pb in ((q_w, q_b), (k_w, k_b), (v_w, v_b)))
    q = _rms_rope(q, nq_w, s.qk_norm_eps, cos, sin)
    k = _rms_rope(k, nk_w, s.qk_norm_eps, cos, sin)
    out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), s.attention_backend)  # [B, H, L, hd]
    out = _linear(out.transpose(1, 2).reshape(b, length, s.num_heads * s.head_dim), o_w, o_b, o_s, s.fp8_matmul)
    x = _gated_residual(x, out, c_gate, gate, m)

    h, c_gate, gate = _expert_modulate(x, temb_silu, n2_w, n2_b, ln2_w, ln2_b, s.norm_eps, m)
    ff = _linear(F.gelu(_linear(h, f1_w, f1_b, f1_s, s.fp8_matmul), approximate="tanh"), f2_w, f2_b, f2_s,
               s.fp8_matmul)
    return _gated_residual(x, ff, c_gate, gate, m)


def joint_rope_tables(head_dim: int, grid_h: int, grid_w: int, num_condition: int, theta: float,
                      device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
    """RoPE tables for the joint sequence: identity for the ``M`` condition tokens, the 2-D rotation
    of :func:`~sigman.models.attention.rotary_2d_frequencies` for the latent tokens, with the sign of
    the interleaved rotation folded into ``sin``. Returns ``(cos, sin)``, each ``[M+N, 1, head_dim]``
    float32."""
    cos, sin = rotary_2d_frequencies(head_dim, grid_h, grid_w, theta, device=device)  # [N, hd]
    sign = torch.tensor([-1.0, 1.0], device=device).repeat(head_dim // 2)  # pair (2i, 2i+1): (-sin, +sin)
    ones = torch.ones(num_condition, head_dim, device=device)
    cos = torch.cat([ones, cos])
    sin = torch.cat([torch.zeros_like(ones), sin * sign])
    return cos[:, None], sin[:, None]


# ----------------------------------------------------------------------------------------------------
# Fused q/k/v storage
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def fuse_qkv_(block: DiTBlock) -> Tuple[Tensor, Optional[Tensor]]:
    """Store the block's q/k/v projections in one ``[3·inner, D]`` matrix (and bias) and make
    ``to_q``/``to_k``/``to_v`` parameters views of it. Returns ``(weight, bias)``."""
    attn = block.attn1
    layers = (attn.to_q, attn.to_k, attn.to_v)
    weight = torch.cat([layer.weight for layer in layers])
    has_bias = all(layer.bias is not None for layer in layers)
    bias = torch.cat([layer.bias for layer in layers]) if has_bias else None
    rows = attn.to_q.weight.shape[0]
    for i, layer in enumerate(layers):
        grad = layer.weight.requires_grad
        layer.weight = nn.Parameter(weight[i * rows:(i + 1) * rows], requires_grad=grad)
        if has_bias:
            layer.bias = nn.Parameter(bias[i * rows:(i + 1) * rows], requires_grad=grad)
    return weight, bias


# ----------------------------------------------------------------------------------------------------
# CUDA graphs
# ----------------------------------------------------------------------------------------------------


class CudaGraphRunner:
    """One captured call of ``fn`` on static copies of its tensor arguments; each call copies the
    new arguments in, replays the graph and returns a copy of the output."""

    def __init__(self, fn: Callable[..., Tensor], args: Tuple[Tensor, ...], warmup: int = 2) -> None:
        device = args[0].device
        self.inputs = tuple(a.clone() for a in args)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warmup):  # compiles, autotunes and allocates outside the capture
                fn(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.output = fn(*self.inputs)

    def __call__(self, *args: Tensor) -> Tensor:
        for static, new in zip(self.inputs, args):
            if static.data_ptr() != new.data_ptr():
                static.copy_(new)
        self.graph.replay()
        return self.output.clone()


# ----------------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------------


class FastDiT(nn.Module):
    """A faster forward of ``dit`` (same contract as :meth:`SigmanDiT.forward`, same parameters).

    ``dit`` is cast in place to ``options.dtype`` and its q/k/v weights are regrouped (see
    :func:`fuse_qkv_`); build the wrapper after moving the model to its device. Weights changed in
    place later (``load_state_dict``) are seen by the wrapper and its CUDA graphs; moving or
    replacing parameters afterwards is detected and raises: build a new wrapper then.
    """

    def __init__(self, dit: SigmanDiT, options: Optional[FastOptions] = None) -> None:
        super().__init__()
        first = next(dit.parameters())
        num_params = sum(p.numel() for p in dit.parameters())
        self.options = (options or FastOptions()).resolve(first.device, first.dtype, num_params)
        self.dit = dit.to(self.options.dtype).eval()
        self.dtype: torch.dtype = self.options.dtype
        self._qkv = [fuse_qkv_(block) if self.options.fuse_qkv else None for block in dit.transformer_blocks]
        self._weights = [block_weights(block, qkv) for block, qkv in zip(dit.transformer_blocks, self._qkv)]
        if self.options.fp8:  # quantized copies: weights loaded in place later are not seen (build a new FastDiT)
            self._weights = [fp8_block_weights(w) for w in self._weights]
        self._statics: Dict[int, BlockStatics] = {}  # one object per M, so compiled guards stay stable
        self._pointers = self._weight_pointers()
        self._rope: Dict[tuple, Tuple[Tensor, Tensor]] = {}
        self._graphs: Dict[tuple, CudaGraphRunner] = {}
        self._block_fn: Callable[..., Tensor] = self._compiled_block() if self.options.compile else fast_block
        self._verified: set = set()  # input signatures that ran compiled / graphed without error
        self.fallback: Optional[str] = None  # why compile / CUDA graphs were switched off, if they were

    # --- construction helpers ---------------------------------------------------------------

    def _compiled_block(self) -> Callable[..., Tensor]:
        o = self.options
        kwargs = dict(fullgraph=True, dynamic=False, backend=o.compile_backend)
        if o.compile_backend == "inductor":
            kwargs["mode"] = o.compile_mode
        return torch.compile(fast_block, **kwargs)

    def _weight_pointers(self) -> tuple:
        ptrs = [p.data_ptr() for p in (self.dit.patch_embed.proj.weight, self.dit.proj_out.weight)]
        for block, qkv in zip(self.dit.transformer_blocks, self._qkv):
            ptrs.append(block.attn1.to_q.weight.data_ptr())
            if qkv is not None:
                ptrs.append(qkv[0].data_ptr())
        return tuple(ptrs)

    def _check_weights(self) -> None:
        if self._weight_pointers() != self._pointers:
            raise RuntimeError("the DiT's parameters were moved or replaced after FastDiT was built "
                               "(e.g. .to(device) or load_state_dict(assign=True)); build a new FastDiT "
                               "(pipe.optimize()) after such changes")

    def _rope_tables(self, grid_h: int, grid_w: int, m: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        key = (grid_h, grid_w, m, str(device))
        if key not in self._rope:
            c = self.dit.config
            self._rope[key] = joint_rope_tables(c.head_dim, grid_h, grid_w, m, c.rope_theta, device)
        return self._rope[key]

    def _block_statics(self, m: int) -> BlockStatics:
        if m not in self._statics:
            c = self.dit.config
            fp8_matmul = self.options.fp8 and fp8_matmul_supported(next(self.dit.parameters()).device)
            self._statics[m] = BlockStatics(m, c.num_heads, c.head_dim, c.norm_eps, c.qk_norm_eps, c.attention_backend,
                                            fp8_matmul)
        return self._statics[m]

    # --- forward ---------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, latents: Tensor, timesteps: Union[Tensor, int, float], image_features: Tensor) -> Tensor:
        """``latents [B, C, H, W]``, ``timesteps [B]`` or scalar, ``image_features [B, C_cond, h, w]``
        -> ``v [B, C_out, H, W]`` in ``self.dtype``."""
        self._check_weights()
        self.dit._check_inputs(latents, image_features)
        t = torch.as_tensor(timesteps, device=latents.device)
        t = t.expand(latents.shape[0]) if t.ndim == 0 else t
        args = (latents.to(self.dtype), t, image_features.to(self.dtype))
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        if key in self._verified or not (self.options.compile or self.options.cuda_graphs):
            return self._run(*args)
        try:  # the first call per input signature compiles / captures
            out = self._run(*args)
        except Exception as err:  # a compiler or capture failure must not stop generation: run eagerly
            self.fallback = f"{type(err).__name__}: {err}"
            warnings.warn(f"FastDiT: torch.compile / CUDA graph capture failed ({self.fallback}); "
                          "running the fused blocks eagerly", RuntimeWarning)
            self._block_fn, self._graphs = fast_block, {}
            self.options = replace(self.options, compile=False, cuda_graphs=False)
            out = self._run(*args)
        self._verified.add(key)
        return out

    def _run(self, latents: Tensor, t: Tensor, features: Tensor) -> Tensor:
        if not (self.options.cuda_graphs and latents.is_cuda):
            return self._forward(latents, t, features)
        key = tuple((tuple(a.shape), a.dtype) for a in (latents, t, features))
        if key not in self._graphs:
            self._rope_tables(*self._grid(latents), self._num_condition(features), latents.device)  # outside capture
            self._graphs[key] = CudaGraphRunner(self._forward, (latents, t, features))
        return self._graphs[key](latents, t, features)

    def _grid(self, latents: Tensor) -> Tuple[int, int]:
        p = self.dit.config.patch_size
        return latents.shape[2] // p, latents.shape[3] // p

    def _num_condition(self, features: Tensor) -> int:
        q = self.dit.config.condition_patch_size
        return (features.shape[2] // q) * (features.shape[3] // q)

    def _forward(self, latents: Tensor, t: Tensor, features: Tensor) -> Tensor:
        """The forward on already-cast inputs (what the CUDA graph captures)."""
        dit, c = self.dit, self.dit.config
        b, _, h, w = latents.shape
        p = c.patch_size
        temb = dit.time_embedding(timestep_sinusoids(t, c.hidden_size).to(self.dtype))  # [B, T]
        latent, cond = dit.patch_embed(latents, features)  # [B, N, D], [B, M, D]
        m = cond.shape[1]
        x = torch.cat([cond, latent], dim=1)  # [B, M+N, D]
        cos, sin = self._rope_tables(h // p, w // p, m, latents.device)
        statics = self._block_statics(m)
        temb_silu = F.silu(temb)
        for weights in self._weights:
            x = self._block_fn(x, temb_silu, cos, sin, statics, *weights)
        out = dit.proj_out(dit.norm_out(dit.norm_final(x[:, m:]), temb))  # [B, N, C_out·p·p]
        out = out.reshape(b, h // p, w // p, c.out_channels, p, p)
        return out.permute(0, 3, 1, 4, 2, 5).reshape(b, c.out_channels, h, w)


# ----------------------------------------------------------------------------------------------------
# Reposing in a few large kernels
# ----------------------------------------------------------------------------------------------------


def quat_left_matrices(q: Tensor) -> Tensor:
    """``[..., 4] (w, x, y, z) -> [..., 4, 4]``: ``L(a) @ b`` is the Hamilton product ``a ⊗ b``."""
    w, x, y, z = q.unbind(-1)
    return torch.stack([w, -x, -y, -z,
                        x, w, -z, y,
                        y, z, w, -x,
                        z, -y, x, w], dim=-1).unflatten(-1, (4, 4))


def joint_blend_tables(transforms: Tensor) -> Tensor:
    """Per-joint tables that :func:`fast_repose` blends, packed in one tensor so they travel to the
    Gaussians' device in one copy: ``transforms [B, J, 4, 4] -> [B, J, 12 + 16 + J]`` holding the
    affine rows ``[3, 4]``, the left-multiplication matrix of the joint's quaternion ``[4, 4]``, and
    the sign (±1) of its dot product with every other joint's quaternion (for the hemisphere flip
    of :func:`sigman.lbs.blend_rotations`). Cheap for J ≈ 100: compute it on the CPU."""
    import roma

    from sigman.lbs import xyzw_to_wxyz

    b, j = transforms.shape[:2]
    q = xyzw_to_wxyz(roma.rotmat_to_unitquat(transforms[..., :3, :3]))  # [B, J, 4]
    signs = torch.where(q @ q.transpose(-1, -2) < 0, -1.0, 1.0).to(q.dtype)  # [B, J, J]
    return torch.cat([transforms[..., :3, :].reshape(b, j, 12), quat_left_matrices(q).reshape(b, j, 16), signs], -1)


def fast_repose(gaussians: Gaussians, transforms: Tensor) -> Gaussians:
    """:func:`sigman.gaussians.repose` (same result up to float rounding) as a handful of large
    kernels: the per-joint tables come from :func:`joint_blend_tables` (computed where
    ``transforms`` lives — pass CPU transforms), then per Gaussian one matrix product blends the affine
    maps and one blends the quaternion-product matrices ``Σ_j w_j s_j L(q_j)``, applied to the
    canonical rotation (``L(Σ w s q) c`` equals the reference's ``normalize(Σ w s q) ⊗ c`` after
    normalising, since quaternion norms multiply).

    Args:
        gaussians: canonical ``[N, ...]`` with ``skin_weights [N, J]``.
        transforms: ``[B, J, 4, 4]`` skinning transforms (any device).
    Returns:
        posed Gaussians ``[B, N, ...]`` on the Gaussians' device.
    """
    if gaussians.skin_weights is None:
        raise ValueError("these Gaussians have no skin_weights: build them from a UV template to repose them")
    if gaussians.means.dim() != 2:
        raise ValueError(f"fast_repose takes canonical Gaussians [N, ...], got means {tuple(gaussians.means.shape)}")
    device = gaussians.means.device
    b, j = transforms.shape[:2]
    tables = joint_blend_tables(transforms.float()).to(device, non_blocking=True)  # [B, J, 28 + J]
    weights = gaussians.skin_weights.to(device, torch.float32)  # [N, J]
    dominant = weights.argmax(dim=-1)  # [N]
    affine = (weights @ tables[..., :12]).unflatten(-1, (3, 4))  # [B, N, 3, 4]
    means = (affine[..., :3] * gaussians.means.float()[:, None, :]).sum(-1) + affine[..., 3]
    signed = weights * tables[:, :, 28:][:, dominant]  # [B, N, J]: w_j · sign(q_dominant · q_j)
    rotation = (signed @ tables[..., 12:28]).unflatten(-1, (4, 4))  # [B, N, 4, 4]
    canonical = gaussians.quats.float()
    quats = (rotation * canonical[:, None, :]).sum(-1)
    quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12) * canonical.norm(dim=-1, keepdim=True)

    def expand(t: Tensor) -> Tensor:
        return t.expand(b, *t.shape)

    return Gaussians(means=means.to(gaussians.means.dtype), quats=quats.to(gaussians.quats.dtype),
                     scales=expand(gaussians.scales), opacities=expand(gaussians.opacities),
                     colors=expand(gaussians.colors), skin_weights=gaussians.skin_weights)


def optimize_dit(dit: SigmanDiT, options: Optional[FastOptions] = None, **overrides) -> FastDiT:
    """``FastDiT(dit, options with overrides)``, e.g. ``optimize_dit(dit, compile=False)``."""
    return FastDiT(dit, replace(options or FastOptions(), **overrides))


def dit_forward_flops(config, batch: int, latent_hw: Optional[Tuple[int, int]] = None,
                      feature_hw: Optional[Tuple[int, int]] = None) -> int:
    """Matmul-class floating-point operations (2 per multiply-add) of one DiT forward, counted from
    the config: patch/condition convs, timestep MLP, per block the adaLN linears, q/k/v, QKᵀ and PV,
    the output projection and the MLP, then the final modulation and projection. Elementwise work
    (norms, RoPE, softmax, gating) is left out, as is usual for FLOP counts.

    ``latent_hw`` / ``feature_hw`` default to the config's ``sample_size`` / ``condition_size``.
    """
    c = config
    lh, lw = latent_hw or (c.sample_size, c.sample_size)
    fh, fw = feature_hw or (c.condition_size, c.condition_size)
    d, t, hidden = c.hidden_size, c.time_embed_dim, int(c.mlp_ratio * c.hidden_size)
    n = (lh // c.patch_size) * (lw // c.patch_size)
    m = (fh // c.condition_patch_size) * (fw // c.condition_patch_size)
    length = n + m
    per_sample = 2 * n * c.in_channels * c.patch_size ** 2 * d  # latent patch conv
    per_sample += 2 * m * c.condition_channels * c.condition_patch_size ** 2 * d  # condition patch conv
    per_sample += 2 * (d * t + t * t)  # timestep MLP
    per_block = 2 * 2 * t * 6 * d  # two adaLN modulation linears
    per_block += 2 * length * d * 3 * d  # q, k, v
    per_block += 2 * 2 * length * length * d  # QKᵀ and PV over all heads
    per_block += 2 * length * d * d  # output projection
    per_block += 2 * 2 * length * d * hidden  # MLP
    per_sample += c.num_layers * per_block
    per_sample += 2 * t * 2 * d + 2 * n * d * c.patch_size ** 2 * c.out_channels  # final modulation, projection
    return batch * per_sample
