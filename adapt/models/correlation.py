"""The correlation module: self-attention over the network's own class probabilities.

Input p (B, C, h, w): softmax of the segmentation logits at the network's output resolution
(never full image resolution). With q = Wq p and k = Wk p (C -> d), each pixel i attends to
every pixel j with A_ij = softmax_j(q_i . k_j / (sqrt(d) * temperature)).

- value="prediction" (default): out_i = sum_j A_ij p_j, a convex combination of probability
  vectors, hence itself a probability map: the "self-attended prediction".
- value="learned": out = softmax(log p + gamma * sum_j A_ij Wv p_j) with Wv a C -> C 1x1 conv
  and gamma a learnable scalar starting at 0 (DANet-style residual on the logits; log p is the
  network's logits up to a per-pixel constant, which softmax ignores). At init out = p.

spatial: "none" (1x1 q/k convs: affinity depends on class similarity only), "conv3x3" (3x3 q/k
convs see each pixel's neighbourhood), "posenc" (a fixed 2D sinusoidal encoding of dimension d,
times a learnable scale starting at 1, added to q and k).

The module is trained on source only (see `adapt.losses.correlation_fit_loss`) and then used
frozen as a teacher on target (`adapt.losses.correlation_transfer_loss`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from uda_adapt.common.errors import UserError

VALUE_MODES = ("prediction", "learned")
SPATIAL_MODES = ("none", "conv3x3", "posenc")

# Floor for probabilities before a log: the module outputs probabilities that can underflow to 0.
PROB_EPS = 1e-8


class CorrelationModule(nn.Module):
    """Class probabilities (B, C, h, w) -> self-attended class probabilities (B, C, h, w)."""

    def __init__(
        self,
        num_classes: int,
        dim: int = 64,
        value: str = "prediction",
        spatial: str = "none",
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if value not in VALUE_MODES:
            raise UserError(f"unknown correlation value {value!r}; valid values: {', '.join(VALUE_MODES)}")
        if spatial not in SPATIAL_MODES:
            raise UserError(f"unknown correlation spatial {spatial!r}; valid values: {', '.join(SPATIAL_MODES)}")
        if dim < 1:
            raise UserError(f"correlation dim must be a positive integer, got {dim}")
        if spatial == "posenc" and dim % 4:
            raise UserError(f"correlation dim must be a multiple of 4 with spatial='posenc', got {dim}")
        if not temperature > 0:
            raise UserError(f"correlation temperature must be positive, got {temperature}")
        self.num_classes = num_classes
        self.dim = dim
        self.value = value
        self.spatial = spatial
        self.temperature = float(temperature)
        kernel = 3 if spatial == "conv3x3" else 1
        self.query = nn.Conv2d(num_classes, dim, kernel, padding=kernel // 2)
        self.key = nn.Conv2d(num_classes, dim, kernel, padding=kernel // 2)
        self.value_proj = nn.Conv2d(num_classes, num_classes, 1) if value == "learned" else None
        self.gamma = nn.Parameter(torch.zeros(())) if value == "learned" else None
        self.posenc_scale = nn.Parameter(torch.ones(())) if spatial == "posenc" else None

    def attend(self, p: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The raw attention output sum_j A_ij v_j, (B, C, h, w), with v = p or Wv p.

        `valid` (B, h, w) bool: pixels that may be attended to (False on padding, where there is
        no image); None attends everywhere.
        """
        b, c, h, w = p.shape
        q, k = self.query(p), self.key(p)
        if self.posenc_scale is not None:
            encoding = self.posenc_scale * sinusoidal_encoding_2d(self.dim, h, w, p.device, p.dtype)
            q, k = q + encoding, k + encoding
        v = p if self.value_proj is None else self.value_proj(p)
        key_mask = None if valid is None else valid.reshape(b, 1, h * w)
        out = attention(to_tokens(q), to_tokens(k), to_tokens(v), scale=1.0 / (math.sqrt(self.dim) * self.temperature),
                        key_mask=key_mask)
        # contiguous(): this view has channels-last strides, which interpolate keeps and whose
        # gradient NLL's CPU backward rejects ("grad_input must be contiguous").
        return out.transpose(1, 2).reshape(b, c, h, w).contiguous()

    def forward(self, p: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.value_proj is None:
            return self.attend(p, valid)
        return torch.softmax(self._learned_logits(p, valid), dim=1)

    def log_probs(self, p: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """log of `forward(p)`, (B, C, h, w), finite everywhere (probabilities floored at PROB_EPS)."""
        if self.value_proj is None:
            return torch.log(self.attend(p, valid).clamp_min(PROB_EPS))
        return torch.log_softmax(self._learned_logits(p, valid), dim=1)

    def _learned_logits(self, p: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return torch.log(p.clamp_min(PROB_EPS)) + self.gamma * self.attend(p, valid)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) feature map -> (B, h*w, D) token sequence."""
    return x.flatten(2).transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
              key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v for (B, N, Dq), (B, N, Dq), (B, N, Dv) -> (B, N, Dv), in O(N) memory.

    `key_mask` (B, 1, N) bool: keys that may be attended to. It is passed as a (B, 1, 1, N)
    additive bias that broadcasts over the queries, so no N x N matrix is built for it.

    Uses `scaled_dot_product_attention`. Its memory-saving kernels (flash on CPU, flash or
    memory-efficient on CUDA) need one head size for q, k and v; with different sizes PyTorch
    silently falls back to the math kernel, which materialises the N x N matrix (measured on CPU:
    2.3 GB instead of 16 MB at 16,384 tokens). So all three are zero-padded to a common size, a
    multiple of 8: zeros add nothing to q . k, and the padded value columns are sliced off.
    """
    dq, dv = q.shape[-1], v.shape[-1]
    size = 8 * math.ceil(max(dq, dv) / 8)
    # The kernels also need the head dimension contiguous in memory; tokens made by transposing
    # a (B, D, h, w) map are not, and F.pad keeps the strides of its input.
    q, k = F.pad(q, (0, size - dq)).contiguous(), F.pad(k, (0, size - dq)).contiguous()
    v = F.pad(v, (0, size - dv)).contiguous()
    bias = None
    if key_mask is not None:
        # A large negative, not -inf: a row whose keys are all masked stays finite (uniform).
        bias = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device).masked_fill(~key_mask, -1e9).unsqueeze(1)
    out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), attn_mask=bias, scale=scale)
    return out.squeeze(1)[..., :dv]


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                    key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference softmax(q k^T * scale) v that builds the (B, N, N) matrix: tests and benchmarks only."""
    scores = q @ k.transpose(1, 2) * scale
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def sinusoidal_encoding_2d(dim: int, h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2D sinusoidal position encoding (dim, h, w): dim/2 channels for the row, dim/2 for the column.

    Each half is sin and cos of the pixel index at dim/4 frequencies 1 / 10000^(i / (dim/4)).
    `dim` must be a multiple of 4.
    """
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freqs  # (h, quarter)
    cols = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freqs  # (w, quarter)
    row_enc = torch.cat([rows.sin(), rows.cos()], dim=1).T[:, :, None].expand(-1, h, w)
    col_enc = torch.cat([cols.sin(), cols.cos()], dim=1).T[:, None, :].expand(-1, h, w)
    return torch.cat([row_enc, col_enc], dim=0).to(dtype or torch.float32)
