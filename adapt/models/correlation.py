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

Variants (each a `correlation.*` config key):
- value_bias: the learned value projection Wv with a per-class bias. Off: with a bias the module
  can learn a global class-prior shift (the same logit offset at every pixel) instead of
  correlations between pixels.
- query: what q and k are computed from: "prediction" (p), "features" (the network's detached
  penultimate features, what p lacks: texture and shape), "both" (concatenated). Values stay p.
- window: 0 attends over the whole image; an odd w attends over the w x w cells around each
  pixel only, so a pole or a sign under one cell is not averaged with every large region of the
  image that happens to have similar probabilities (memory O(N w^2), no N x N matrix).
- position_bias: a learned logit per (dy, dx) offset of the local window, added to q . k before
  the softmax (Swin's relative position bias), from 0. Local windows only: global attention
  meets grids of every size, which no fixed table of offsets covers, so it is refused there.
- upsample: attend at a finer stride. p (and the features) are upsampled bilinearly by this
  factor, the validity mask by nearest, and SA(p) is average-pooled back to p's grid, so that a
  thin object covers u^2 tokens instead of one. The window counts fine cells.

The module is trained on source only (see `adapt.losses.correlation_fit_loss`) and then used
frozen as a teacher on target (`adapt.losses.correlation_transfer_loss`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from uda_adapt.adapt.models.masked_upsample import masked_upsample
from uda_adapt.common.errors import UserError

VALUE_MODES = ("prediction", "learned")
SPATIAL_MODES = ("none", "conv3x3", "posenc")
QUERY_MODES = ("prediction", "features", "both")

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
        value_bias: bool = False,
        query: str = "prediction",
        feature_channels: int = 0,
        window: int = 0,
        position_bias: bool = False,
        upsample: int = 1,
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
        if query not in QUERY_MODES:
            raise UserError(f"unknown correlation query {query!r}; valid values: {', '.join(QUERY_MODES)}")
        if query != "prediction" and feature_channels < 1:
            raise UserError(f"correlation query={query!r} needs the network's feature width (feature_channels), got {feature_channels}")
        if window < 0 or (window and window % 2 == 0):
            raise UserError(f"correlation window must be 0 (global attention) or an odd number of cells, got {window}")
        if position_bias and not window:
            raise UserError("correlation position_bias needs a local window: global attention sees grids of every size, "
                            "which no table of offsets covers; set correlation.window to an odd number (e.g. 9)")
        if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 1:
            raise UserError(f"correlation upsample must be a whole factor of 1 or more, got {upsample!r}")
        self.num_classes = num_classes
        self.dim = dim
        self.value = value
        self.spatial = spatial
        self.temperature = float(temperature)
        self.query_mode = query
        self.feature_channels = feature_channels if query != "prediction" else 0
        self.window = window
        self.upsample = upsample
        kernel = 3 if spatial == "conv3x3" else 1
        qk_in = {"prediction": num_classes, "features": feature_channels, "both": num_classes + feature_channels}[query]
        self.query = nn.Conv2d(qk_in, dim, kernel, padding=kernel // 2)
        self.key = nn.Conv2d(qk_in, dim, kernel, padding=kernel // 2)
        self.value_proj = nn.Conv2d(num_classes, num_classes, 1, bias=value_bias) if value == "learned" else None
        self.gamma = nn.Parameter(torch.zeros(())) if value == "learned" else None
        self.posenc_scale = nn.Parameter(torch.ones(())) if spatial == "posenc" else None
        # One logit per offset, [dy + w // 2, dx + w // 2], as Swin's relative position bias
        # (microsoft/Swin-Transformer models/swin_transformer.py:101 and :141, there per head over
        # (2w-1)^2 offsets between two windows; here each pixel's window is centred on it, so w^2
        # offsets). Zeros, not Swin's trunc_normal (:122): the module starts as it is without one.
        self.position_bias = nn.Parameter(torch.zeros(window, window)) if position_bias else None

    @property
    def needs_features(self) -> bool:
        """True when q and k come from the network's features, which callers must then pass."""
        return self.query_mode != "prediction"

    def config(self) -> dict:
        """The constructor's arguments, to rebuild this module from a checkpoint."""
        return {"dim": self.dim, "value": self.value, "spatial": self.spatial, "temperature": self.temperature,
                "value_bias": self.value_proj is not None and self.value_proj.bias is not None,
                "query": self.query_mode, "feature_channels": self.feature_channels, "window": self.window,
                "position_bias": self.position_bias is not None, "upsample": self.upsample}

    def attend(self, p: torch.Tensor, valid: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """The raw attention output sum_j A_ij v_j, (B, C, h, w), with v = p or Wv p.

        `valid` (B, h, w) bool: pixels that may be attended to (False on padding, where there is
        no image); None attends everywhere. `features` (B, F, h', w'): the network's penultimate
        features, needed when `needs_features`; detached here and resized to p's grid.
        """
        if self.upsample == 1:
            return self._attend_on_grid(p, valid, self._query_input(p, features))
        h, w = p.shape[-2:]
        fine = (h * self.upsample, w * self.upsample)
        fine_valid = None
        if valid is not None:
            fine_valid = F.interpolate(valid.unsqueeze(1).float(), size=fine, mode="nearest").squeeze(1) > 0.5
        qk_input = self._query_input(p, features)
        fine_p = masked_upsample(p, valid, fine)
        fine_qk = fine_p if qk_input is p else masked_upsample(qk_input, valid, fine)
        out = self._attend_on_grid(fine_p, fine_valid, fine_qk)
        # Back to p's grid by the mean of each cell's u x u fine outputs, not bilinear: it keeps a
        # convex combination of probabilities, every fine token's output counts (and gets a
        # gradient), and those tokens are exactly the cell's own, valid or not as the cell is.
        # Bilinear (no antialias) equals it at u = 2 but reads only the centre tokens at u >= 3.
        return F.avg_pool2d(out, self.upsample)

    def _attend_on_grid(self, p: torch.Tensor, valid: torch.Tensor | None, qk_input: torch.Tensor) -> torch.Tensor:
        """`attend` on p's own grid, with q/k computed from `qk_input` (same grid)."""
        b, c, h, w = p.shape
        q, k = self.query(qk_input), self.key(qk_input)
        if self.posenc_scale is not None:
            encoding = self.posenc_scale * sinusoidal_encoding_2d(self.dim, h, w, p.device, p.dtype)
            q, k = q + encoding, k + encoding
        v = p if self.value_proj is None else self.value_proj(p)
        scale = 1.0 / (math.sqrt(self.dim) * self.temperature)
        if self.window:
            return local_attention(q, k, v, self.window, scale, valid, self.position_bias)
        key_mask = None if valid is None else valid.reshape(b, 1, h * w)
        out = attention(to_tokens(q), to_tokens(k), to_tokens(v), scale=scale, key_mask=key_mask)
        # contiguous(): this view has channels-last strides, which interpolate keeps and whose
        # gradient NLL's CPU backward rejects ("grad_input must be contiguous").
        return out.transpose(1, 2).reshape(b, c, h, w).contiguous()

    def forward(self, p: torch.Tensor, valid: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.value_proj is None:
            return self.attend(p, valid, features)
        return torch.softmax(self._learned_logits(p, valid, features), dim=1)

    def log_probs(self, p: torch.Tensor, valid: torch.Tensor | None = None, features: torch.Tensor | None = None) -> torch.Tensor:
        """log of `forward(p)`, (B, C, h, w), finite everywhere (probabilities floored at PROB_EPS)."""
        if self.value_proj is None:
            return torch.log(self.attend(p, valid, features).clamp_min(PROB_EPS))
        return torch.log_softmax(self._learned_logits(p, valid, features), dim=1)

    def _learned_logits(self, p: torch.Tensor, valid: torch.Tensor | None = None,
                        features: torch.Tensor | None = None) -> torch.Tensor:
        return torch.log(p.clamp_min(PROB_EPS)) + self.gamma * self.attend(p, valid, features)

    def _query_input(self, p: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        if self.query_mode == "prediction":
            return p
        if features is None:
            raise UserError(f"correlation query={self.query_mode!r} attends over the network's features, but none were "
                            "given; pass them (see `classifier_features`) or set correlation.query=prediction")
        features = features.detach().float()
        if tuple(features.shape[-2:]) != tuple(p.shape[-2:]):
            features = F.interpolate(features, size=p.shape[-2:], mode="bilinear", align_corners=False)
        return features if self.query_mode == "features" else torch.cat([p, features], dim=1)


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


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float,
                    valid: torch.Tensor | None = None, position_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Each pixel attends to the `window` x `window` cells around it: (B, D, h, w) q and k, (B, Cv, h, w) v
    -> (B, Cv, h, w).

    Neighbourhoods are gathered with `unfold` (memory O(N window^2), no N x N matrix); cells
    outside the image and cells where `valid` (B, h, w) is False are left out of each softmax.
    A pixel with no valid neighbour at all gets the mean of its zero-padded window (finite; such
    pixels are padding and out of every loss). `position_bias` (window, window): a logit added
    for the key at offset (dy, dx) at [dy + window // 2, dx + window // 2], before the masking.
    """
    b, d, h, w = q.shape
    cells, pad = window * window, window // 2
    keys = F.unfold(k, window, padding=pad).view(b, d, cells, h * w)
    values = F.unfold(v, window, padding=pad).view(b, v.shape[1], cells, h * w)
    scores = (q.reshape(b, d, 1, h * w) * keys).sum(dim=1) * scale            # (B, cells, N)
    if position_bias is not None:
        # unfold orders a window's cells row by row, as the bias is flattened.
        scores = scores + position_bias.reshape(1, cells, 1)
    inside = torch.ones(b, 1, h, w, dtype=q.dtype, device=q.device)
    if valid is not None:
        inside = inside * valid.unsqueeze(1).to(q.dtype)
    inside = F.unfold(inside, window, padding=pad) > 0.5                        # (B, cells, N)
    # A large negative, not -inf: a pixel with no valid neighbour stays finite.
    weights = torch.softmax(scores.masked_fill(~inside, -1e9), dim=1)
    return (weights.unsqueeze(1) * values).sum(dim=2).view(b, v.shape[1], h, w)


def naive_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float) -> torch.Tensor:
    """Reference for `local_attention` that builds the full (B, N, N) matrix with a distance mask: tests only."""
    b, d, h, w = q.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    near = ((rows[:, None] - rows[None, :]).abs() <= window // 2) & ((cols[:, None] - cols[None, :]).abs() <= window // 2)
    out = naive_attention(to_tokens(q), to_tokens(k), to_tokens(v), scale, key_mask=near.unsqueeze(0))
    return out.transpose(1, 2).reshape(b, v.shape[1], h, w)


@contextlib.contextmanager
def classifier_features(network: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the input of `network.classifier` (the penultimate features) on each forward.

    Yields a list that holds the last forward's (B, F, h, w) features as its only item. Every model
    of `adapt.models` ends in a `classifier` layer; one whose classifier takes no plain tensor
    cannot provide features, which is a user error naming `correlation.query`.
    """
    classifier = getattr(network, "classifier", None)
    if classifier is None:
        raise UserError(f"{type(network).__name__} has no `classifier` layer to take features from; "
                        "set correlation.query=prediction")
    captured: list[torch.Tensor] = []

    def hook(_module, inputs):
        if not inputs or not torch.is_tensor(inputs[0]):
            raise UserError(f"{type(network).__name__}'s classifier takes no feature tensor; set correlation.query=prediction")
        captured[:] = [inputs[0]]

    handle = classifier.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def feature_channels_of(network: nn.Module) -> int:
    """Width F of the features `classifier_features` records (the classifier's input channels)."""
    classifier = getattr(network, "classifier", None)
    channels = getattr(classifier, "in_channels", None)
    if not isinstance(channels, int):
        raise UserError(f"cannot tell the feature width of {type(network).__name__}'s classifier; "
                        "set correlation.query=prediction")
    return channels


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


@torch.no_grad()
def refine_pseudo_labels(attended: torch.Tensor, pseudo: torch.Tensor, confidence: torch.Tensor,
                         threshold: float, module_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense pseudo labels from sparse ones: the module's argmax where the teacher is unsure.

    `attended` (B, C, H, W): the module's SA(p) of the teacher's prediction, at the labels' size;
    `pseudo`, `confidence` (B, H, W): the teacher's argmax and max probability. Where confidence <
    `threshold` and max SA(p) >= `module_threshold`, the label becomes argmax SA(p) and the
    confidence `threshold`, so a confidence weight counts the pixel as sure. Returns new
    (pseudo, confidence); the inputs are left unchanged.
    """
    module_confidence, module_label = attended.max(dim=1)
    refined = (confidence < threshold) & (module_confidence >= module_threshold)
    return (torch.where(refined, module_label, pseudo),
            torch.where(refined, torch.full_like(confidence, threshold), confidence))
