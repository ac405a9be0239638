"""Networks as users bring them: a token transformer and a residual CNN with batch norm.

They exist so that ibscope is tested (and benchmarked) on the architectures
researchers train today, not only on the papers' MLPs: token ids in, an
embedding, self-attention, layer norm (:class:`TokenTransformer`, built from
``nn.TransformerEncoder``), and residual blocks with batch norm
(:class:`ResNet`, after He et al. [1]_). Both are plain ``nn.Module``s with a
``layer_names`` attribute (the modules an information plane records by
default, in forward order).

References
----------
.. [1] K. He, X. Zhang, S. Ren and J. Sun, "Deep residual learning for image
   recognition", CVPR 2016.
.. [2] A. Vaswani et al., "Attention is all you need", NeurIPS 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import Interval, validate_params

__all__ = ["TokenEmbedding", "TokenTransformer", "ResidualBlock", "ResNet"]

_POS_INT = [Interval(int, 1, None)]


class TokenEmbedding(nn.Module):
    """Token plus learned position embedding: ids (n, L) -> (n, L, d_model).

    Injective on sequences as long as the token vectors are distinct (almost
    surely at random initialization), so I(X;T) of its output is H(X).
    """

    def __init__(self, vocab_size: int, length: int, d_model: int):
        super().__init__()
        validate_params("TokenEmbedding", {"vocab_size": vocab_size, "length": length, "d_model": d_model},
                        {"vocab_size": _POS_INT, "length": _POS_INT, "d_model": _POS_INT})
        self.vocab_size, self.length = vocab_size, length
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(torch.randn(length, d_model) * 0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(f"TokenEmbedding takes integer token ids, got dtype {ids.dtype}.")
        if ids.ndim != 2 or ids.shape[1] != self.length:
            raise ValueError(f"TokenEmbedding expects ids of shape (n, {self.length}), got {tuple(ids.shape)}.")
        return self.token(ids) + self.position


class TokenTransformer(nn.Module):
    """A sequence classifier: embedding, ``nn.TransformerEncoder``, mean pooling, linear head.

    Parameters
    ----------
    vocab_size, length : int
        Token vocabulary and (fixed) sequence length.
    n_classes : int, default 2
    d_model, nhead, num_layers, dim_feedforward : int, default 16, 2, 2, 32
    seed : int or None, default 0
        Seeds the initialization (None: torch's global generator).

    ``layer_names``: ``embed``, ``encoder.layers.0`` ... ``encoder.layers.{L-1}``,
    ``pool`` (the mean over positions), ``head``.
    """

    def __init__(self, vocab_size: int, length: int, n_classes: int = 2, *, d_model: int = 16, nhead: int = 2,
                 num_layers: int = 2, dim_feedforward: int = 32, seed: int | None = 0):
        super().__init__()
        validate_params("TokenTransformer", {"n_classes": n_classes, "nhead": nhead, "num_layers": num_layers,
                                             "dim_feedforward": dim_feedforward},
                        {"n_classes": [Interval(int, 2, None)], "nhead": _POS_INT, "num_layers": _POS_INT,
                         "dim_feedforward": _POS_INT})
        if d_model % nhead:
            raise ValueError(f"'d_model' ({d_model}) must be a multiple of 'nhead' ({nhead}).")
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.embed = TokenEmbedding(vocab_size, length, d_model)
            layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.pool = _MeanPool()
            self.head = nn.Linear(d_model, n_classes)
        self.layer_names = ["embed", *[f"encoder.layers.{i}" for i in range(num_layers)], "pool", "head"]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.encoder(self.embed(ids))))


class _MeanPool(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=1)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (projected) input, then ReLU (He et al., 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ResNet(nn.Module):
    """A small residual CNN with batch norm for (n, C, H, W) images.

    Parameters
    ----------
    in_channels : int, default 1
    n_classes : int, default 10
    width : int, default 8
        Channels of the stem and the first stage; each later stage doubles them
        with stride 2.
    stages : int, default 2
    seed : int or None, default 0

    ``layer_names``: ``stem``, ``stage1`` ... ``stage{stages}``, ``pool``, ``fc``.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, *, width: int = 8, stages: int = 2,
                 seed: int | None = 0):
        super().__init__()
        validate_params("ResNet", {"in_channels": in_channels, "n_classes": n_classes, "width": width,
                                   "stages": stages},
                        {"in_channels": _POS_INT, "n_classes": [Interval(int, 2, None)], "width": _POS_INT,
                         "stages": _POS_INT})
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU())
            c = width
            for s in range(1, stages + 1):
                c_out = width if s == 1 else c * 2
                setattr(self, f"stage{s}", ResidualBlock(c, c_out, stride=1 if s == 1 else 2))
                c = c_out
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(c, n_classes)
        self.stages = stages
        self.layer_names = ["stem", *[f"stage{s}" for s in range(1, stages + 1)], "pool", "fc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4:
            raise ValueError(f"ResNet takes images of shape (n, C, H, W) or (n, H, W), got {tuple(x.shape)}; "
                             "reshape flattened images first.")
        h = self.stem(x)
        for s in range(1, self.stages + 1):
            h = getattr(self, f"stage{s}")(h)
        return self.fc(self.pool(h))
