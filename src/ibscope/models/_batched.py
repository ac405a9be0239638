"""Many independent MLPs trained as one network: seeds as a batch dimension.

Small networks (the 12-bit task's 12-10-7-5-4-3-2) leave a CPU idle between
tiny matrix products; training S seeds one after another pays Python's and
torch's per-call overhead S times. :class:`BatchedMLP` stacks the weights of
S :class:`~ibscope.models.MLP` instances into ``(S, in, out)`` tensors and
runs every seed's forward pass with one batched matrix product per layer.

The seeds stay independent: each keeps its own initialization (copied from
``MLP(..., seed=s)``), its own minibatches (:class:`SeedBatches`) and, since
the training loss is the *sum* of the seeds' mean losses, its own gradient.
Adam, SGD (with momentum and weight decay) and every other element-wise
optimizer then take for each seed exactly the step they take for that seed
alone: per-seed results equal the one-seed path up to floating-point
reassociation in the matrix products (tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._layers import make_activation
from ._mlp import MLP

__all__ = ["BatchedMLP", "SeedBatches", "batched_cross_entropy"]


class BatchedMLP(nn.Module):
    """S MLPs of one architecture evaluated together (weights ``(S, in, out)``).

    Parameters
    ----------
    nets : sequence of MLP
        The seeds' networks (same widths and activations, no noise layers);
        their current weights are copied.

    Notes
    -----
    ``forward(x)`` takes ``(S, B, in)`` (each seed its own batch) or
    ``(B, in)`` (one batch for every seed) and returns logits ``(S, B, out)``.
    :meth:`layer_outputs` returns every recordable layer of every seed
    (``hidden1..``, ``output`` as softmax probabilities), and :meth:`unbatch`
    gives seed ``i`` back as an ordinary :class:`MLP`.
    """

    def __init__(self, nets: Sequence[MLP]):
        super().__init__()
        nets = list(nets)
        if not nets or not all(isinstance(n, MLP) for n in nets):
            raise TypeError("'nets' must be a non-empty sequence of ibscope.models.MLP.")
        ref = nets[0]
        fcs = [name for name in ref._order if name.startswith("fc")]
        if any(name.startswith("noise") for name in ref._order):
            raise ValueError("BatchedMLP does not support noise layers (noise_std > 0).")
        shapes = [[tuple(getattr(n, f).weight.shape) for f in fcs] + [tuple(n.logits.weight.shape)]
                  if n._order == ref._order else None for n in nets]
        if any(s != shapes[0] for s in shapes) or any(n.activations != ref.activations for n in nets):
            raise ValueError("All nets of a BatchedMLP need the same widths and activations.")
        self.n_seeds = len(nets)
        self.activations = list(ref.activations)
        self.layer_names = list(ref.layer_names)
        self.layer_activations = dict(ref.layer_activations)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        with torch.no_grad():
            for f in [*fcs, "logits"]:
                self.weights.append(nn.Parameter(torch.stack([getattr(n, f).weight.detach().T for n in nets]).clone()))
                self.biases.append(nn.Parameter(torch.stack([getattr(n, f).bias.detach()[None, :] for n in nets])
                                                .clone()))
        self.acts = nn.ModuleList(make_activation(a) for a in self.activations)
        self._template = ref

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return x.unsqueeze(0).expand(self.n_seeds, -1, -1)
        if x.ndim != 3 or x.shape[0] != self.n_seeds:
            raise ValueError(f"BatchedMLP input must be (B, in) or ({self.n_seeds}, B, in); got {tuple(x.shape)}.")
        return x

    def _hidden(self, x: torch.Tensor):
        """Yield every hidden layer's output, features first: ``(S, width, B)``, then the logits."""
        # Features-first layout: each layer is one baddbmm (S, out, in) @ (S, in, B), vectorized
        # along the batch (B = 512) instead of along the 2-12 features of the (S, B, in) layout
        # -- 4-10x faster per product on CPU for the 12-bit network (benchmarks/batched_seeds.py).
        # The parameters keep their (S, in, out) shapes (checkpoints unchanged); the products
        # read them through transposed views.
        # Plain lists: slicing a ParameterList builds a new module per call (~1 ms per training
        # step of Python overhead for the 12-bit network).
        ws, bs, acts = list(self.weights), list(self.biases), list(self.acts)
        h = self._input(x).transpose(1, 2)
        for w, b, act in zip(ws[:-1], bs[:-1], acts, strict=True):
            h = act(torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2), h))
            yield h
        yield torch.baddbmm(bs[-1].transpose(1, 2), ws[-1].transpose(1, 2), h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, logits = self._hidden(x)
        return logits.transpose(1, 2)  # (S, B, out), a view of the features-first (S, out, B) logits

    @torch.no_grad()
    def layer_outputs(self, x: torch.Tensor, *, logits: bool = False) -> dict[str, torch.Tensor]:
        """Every recordable layer: ``{hidden1: (S, B, w1), ..., output: (S, B, out) softmax}``.

        With ``logits=True`` the same forward pass also gives ``"logits"``
        ``(S, B, out)`` (what ``forward`` returns), so a snapshot needs one pass.
        """
        *hidden, z = self._hidden(x)
        out = {f"hidden{i}": h.transpose(1, 2).contiguous() for i, h in enumerate(hidden, start=1)}
        out["output"] = torch.softmax(z, dim=1).transpose(1, 2).contiguous()
        if logits:
            out["logits"] = z.transpose(1, 2)
        return out

    @torch.no_grad()
    def unbatch(self, i: int) -> MLP:
        """Seed ``i`` as an ordinary MLP (a copy of its current weights)."""
        import copy

        net = copy.deepcopy(self._template)
        fcs = [name for name in net._order if name.startswith("fc")] + ["logits"]
        for f, w, b in zip(fcs, self.weights, self.biases, strict=True):
            getattr(net, f).weight.copy_(w[i].T)
            getattr(net, f).bias.copy_(b[i, 0])
        return net


def batched_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over seeds of each seed's mean cross entropy (logits (S, B, C), target (S, B)).

    The gradient with respect to seed s's weights is that of its own mean
    loss, as when it trains alone.
    """
    if logits.ndim != 3 or target.shape != logits.shape[:2]:
        raise ValueError(f"batched_cross_entropy needs logits (S, B, C) and target (S, B); got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}.")
    # cross_entropy's (N, C, d) form on the (S, C, B) logits: for BatchedMLP's output a
    # contiguous view (no copy of the logits, no reshape in the backward pass)
    ce = nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return ce.mean(1).sum()


class SeedBatches:
    """Minibatches for S seeds at once, each seed with its own data and shuffling generator.

    Each epoch, seed s draws ``torch.randperm(n, generator=g_s)`` and its
    batches are consecutive slices of ``batch_size`` -- what
    :class:`ibscope.training.TensorBatches` does for one seed -- and the
    seeds' k-th batches are stacked: ``x`` ``(S, b, ...)``, ``y`` ``(S, b)``.

    Parameters
    ----------
    x : torch.Tensor (S, n, ...), or (N, ...) with ``rows``
    y : torch.Tensor (S, n), or (N,) with ``rows``
    batch_size : int
    seeds : sequence of int
        The shuffling seed of each of the S data sets.
    rows : torch.Tensor (S, n) of int, optional
        Seed s's data are the rows ``rows[s]`` of one shared ``x`` and ``y``
        (e.g. each seed's training split of one data set): the same batches
        as ``SeedBatches(x[rows], y[rows], ...)``, without the ``(S, n, ...)``
        copy. Each epoch then gathers its rows from the small shared ``x``
        (which stays in cache) instead of from S copies: for the 12-bit task
        (50 seeds) ~4x less time per epoch.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seeds: Sequence[int], *,
                 rows: torch.Tensor | None = None):
        if rows is not None:
            if (not isinstance(rows, torch.Tensor) or rows.ndim != 2 or rows.dtype.is_floating_point
                    or rows.dtype == torch.bool or len(seeds) != rows.shape[0]):
                raise ValueError(f"SeedBatches 'rows' must be an integer tensor (S, n) for S seeds; got "
                                 f"{getattr(rows, 'shape', rows)!r} and {len(seeds)} seeds.")
            if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"SeedBatches with 'rows' needs x (N, ...) and y (N,); got {tuple(x.shape)} "
                                 f"and {tuple(y.shape)}.")
            if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= x.shape[0]):
                raise ValueError(f"SeedBatches 'rows' must index the {x.shape[0]} rows of 'x'.")
            rows = rows.to(device=x.device, dtype=torch.int64)
            n = int(rows.shape[1])
        elif x.ndim < 3 or y.ndim != 2 or x.shape[:2] != y.shape or len(seeds) != x.shape[0]:
            raise ValueError(f"SeedBatches needs x (S, n, ...), y (S, n) and S seeds; got {tuple(x.shape)}, "
                             f"{tuple(y.shape)} and {len(seeds)} seeds.")
        else:
            n = int(x.shape[1])
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"'batch_size' must be a positive int, got {batch_size!r}.")
        self.x, self.y, self.rows = x, y, rows
        self.n = n
        self.n_seeds = len(seeds)
        self.batch_size = min(batch_size, self.n)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perms = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators]).to(self.x.device)
        s = self.n_seeds
        if self.rows is not None:
            # the epoch's rows of the shared data: seed s's j-th example is rows[s, perms[s, j]]
            flat = torch.gather(self.rows, 1, perms).reshape(-1)
            shape = (s, self.n)
            xs = self.x.index_select(0, flat).reshape(*shape, *self.x.shape[1:])
            ys = self.y.index_select(0, flat).reshape(shape)
        else:
            # one row selection per epoch over the flattened (S * n) rows, then contiguous slices (the
            # same batches as indexing each slice); index_select is ~3x faster than gather with an
            # expanded index
            flat = (perms + torch.arange(s, device=perms.device)[:, None] * self.n).reshape(-1)
            xs = self.x.reshape(s * self.n, *self.x.shape[2:]).index_select(0, flat).reshape(self.x.shape)
            ys = self.y.reshape(-1).index_select(0, flat).reshape(self.y.shape)
        for start in range(0, self.n, self.batch_size):
            yield xs[:, start:start + self.batch_size], ys[:, start:start + self.batch_size]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if len(state["generators"]) != len(self.generators):
            raise ValueError("SeedBatches state holds another number of seeds.")
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s)
