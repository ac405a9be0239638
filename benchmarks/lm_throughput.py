"""Tokens per second of ``ibscope lm``'s analysis on a GPT-2-small-sized model, and exact vs Lanczos entropy.

Two measurements (issue 23, "Scale"):

* throughput (default): a GPT-2-small-sized model (``transformers.GPT2Config(n_layer=12,
  n_embd=768, n_head=12)``, random init, nothing downloaded) on random token ids; the model's
  forward pass alone over all prompts (``output_hidden_states=True``, the same batches) is the
  reference, then ``ibscope.lm.analyze`` with the default measures (prompt entropy, dataset entropy,
  effective rank on all 13 hidden states; ``--soft`` adds the soft-entropy plane) in the same
  process. Tokens per second and the analysis overhead (analysis time / forward time) are printed,
  and the time of the default measures alone on the stored hidden states (what the analysis adds).
  Wall and CPU seconds both: on shared cores the CPU time of this process moves less.
* ``--entropy-sizes 1024 2048 4096``: time and error of the matrix entropy (alpha = 1) by exact
  float32 eigenvalues and by stochastic Lanczos quadrature at min(N, D) = m, on Z = U diag(s) V^T
  (N = 2m rows, D = m, U, V random orthonormal, s_i^2 proportional to 1/i: a power-law spectrum like
  those of LM representations), whose entropy is known in closed form; the table that sets
  ``ibscope.lm.LANCZOS_MIN_SIZE``.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/lm_throughput.py
    PYTHONPATH=src python benchmarks/lm_throughput.py --device cuda --prompts 256
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/lm_throughput.py --entropy-sizes 1024 2048 4096

transformers is needed for the throughput part only (imported lazily).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gpt2(device: torch.device, seed: int) -> torch.nn.Module:
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit("benchmarks/lm_throughput.py needs transformers for the GPT-2 model: "
                         "pip install -c constraints.txt 'ibscope[hf]' (or run --entropy-sizes only).") from e
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=12, n_embd=768, n_head=12)
    return transformers.GPT2Model(cfg).to(device).eval()


def throughput(a: argparse.Namespace) -> None:
    from ibscope.lm import DEFAULT_MEASURES, analyze

    device = torch.device(a.device)
    model = _gpt2(device, a.seed)
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(0, model.config.vocab_size, (a.prompts, a.tokens), generator=g)
    mask = torch.ones_like(ids)
    n_tok = ids.numel()
    print(f"GPT-2-small-sized model (12 layers, d=768, 12 heads, random init, {n_params / 1e6:.1f} M "
          f"parameters) on {device} ({torch.get_num_threads()} torch threads); {a.prompts} prompts x "
          f"{a.tokens} tokens = {n_tok} tokens, batch {a.batch_size}")

    def forward_only() -> tuple[float, float]:
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for s in range(0, a.prompts, a.batch_size):
                out = model(input_ids=ids[s:s + a.batch_size].to(device),
                            attention_mask=mask[s:s + a.batch_size].to(device), output_hidden_states=True)
                for h in out.hidden_states:
                    h.float().sum().item()   # the same device -> host sync per layer as the analysis needs
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    def measures_alone() -> tuple[float, float]:
        """The default measures on hidden states already computed (what analyze adds to the forward pass)."""
        from ibscope.lm._measures import _per_prompt, dataset_entropy

        with torch.no_grad():
            states = []
            for s in range(0, a.prompts, a.batch_size):
                out = model(input_ids=ids[s:s + a.batch_size].to(device),
                            attention_mask=mask[s:s + a.batch_size].to(device), output_hidden_states=True)
                states.append([h.float() for h in out.hidden_states])
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        pooled: list[list[torch.Tensor]] = [[] for _ in states[0]]
        for b, hs in enumerate(states):
            m = mask[b * a.batch_size:(b + 1) * a.batch_size].to(device).bool()
            for i, h in enumerate(hs):
                ent, er, _, _ = _per_prompt(h, m, 1.0, "none", "bits")
                ent.mean().item(), er.mean().item()
                pooled[i].append(h.mean(1))
        for layer in pooled:
            z = torch.cat(layer)
            dataset_entropy(z)
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0

    def analysis(measures) -> tuple[float, float, object]:
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        df = analyze(model, ids, mask, measures=measures, batch_size=a.batch_size, device=device,
                     figure=False)
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0, df

    with torch.no_grad():                                   # warm-up (allocations, kernels): one full batch
        model(input_ids=ids[:a.batch_size].to(device), attention_mask=mask[:a.batch_size].to(device),
              output_hidden_states=True)
    rows = []
    t_fwd = min((forward_only() for _ in range(a.repeats)), key=lambda tc: tc[1])
    rows.append(("forward pass alone (reference)", *t_fwd, None))
    rows.append(("default measures alone, on the stored hidden states", *measures_alone(), t_fwd))
    runs = [("analysis: " + ", ".join(DEFAULT_MEASURES) + " (the default)", DEFAULT_MEASURES)]
    if a.soft:
        runs.append(("analysis: defaults + soft_plane", (*DEFAULT_MEASURES, "soft_plane")))
    df = None
    for name, measures in runs:
        best = (math.inf, math.inf)
        for _ in range(a.repeats):
            t, c, df = analysis(measures)
            best = min(best, (t, c), key=lambda tc: tc[1])
        rows.append((name, *best, t_fwd))
    # wall time is what a user waits; CPU time (this process, all its threads) is what the work costs and
    # moves less when other jobs share the cores. On CUDA the CPU time is only the host's share.
    print(f"\n| run (all {model.config.n_layer + 1} hidden states) | wall s | tokens/s (wall) | cpu s | "
          f"tokens/s (cpu) | x forward (wall) | x forward (cpu) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, t, c, ref in rows:
        rw, rc = (f"{t / ref[0]:.2f}", f"{c / ref[1]:.2f}") if ref else ("1.00", "1.00")
        print(f"| {name} | {t:.1f} | {n_tok / t:,.0f} | {c:.1f} | {n_tok / c:,.0f} | {rw} | {rc} |")
    assert df is not None
    methods = "lanczos" if df["flags"].str.contains("lanczos").any() else "exact"
    print(f"\nmatrix entropies computed by: {methods} (method='auto'; the largest matrix has min(N, D) = "
          f"{min(max(a.tokens, a.prompts), model.config.n_embd)}); best of {a.repeats} run(s) each (least "
          f"cpu); the analysis includes its own forward pass. Load average at the end: "
          f"{' / '.join(f'{v:.1f}' for v in os.getloadavg())}.")


def _known(m: int, seed: int) -> tuple[torch.Tensor, float]:
    """Z (2m x m) = U diag(s) V^T with s_i^2 ~ 1/i, and its entropy (nats) in closed form."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(2 * m, m, generator=g))
    v, _ = torch.linalg.qr(torch.randn(m, m, generator=g))
    s2 = 1.0 / torch.arange(1, m + 1, dtype=torch.float64)
    z = (u * s2.sqrt().float()) @ v.T
    lam = s2 / s2.sum()
    return z, float(-(lam * lam.log()).sum())


def entropy_table(a: argparse.Namespace) -> None:
    from ibscope.lm import LANCZOS_MIN_SIZE, lanczos_entropy, matrix_entropy

    device = torch.device(a.device)
    print(f"matrix entropy (alpha = 1, nats) of Z = U diag(s) V^T, N = 2m, D = m, s_i^2 ~ 1/i, float32 on "
          f"{device} ({torch.get_num_threads()} torch threads); error = estimate - closed form; "
          f"Lanczos: {a.probes} probes + a {a.probes}-column Hutch++ sketch, {a.steps} steps, seeds "
          f"0..{a.seeds - 1}; LANCZOS_MIN_SIZE = {LANCZOS_MIN_SIZE}")
    print("\n| m = min(N, D) | exact s | exact error | Lanczos s | Lanczos error (mean over seeds) | "
          "max abs error | reported se | x exact time |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in a.entropy_sizes:
        z, h = _known(m, a.seed)
        z = z.to(device)
        _sync(device)
        t0 = time.perf_counter()
        e = matrix_entropy(z, unit="nats", method="exact")
        _sync(device)
        te = time.perf_counter() - t0
        errs, ses, tl = [], [], math.inf
        for sd in range(a.seeds):
            _sync(device)
            t0 = time.perf_counter()
            est = lanczos_entropy(z, unit="nats", probes=a.probes, steps=a.steps, seed=sd)
            _sync(device)
            tl = min(tl, time.perf_counter() - t0)
            errs.append(est.value - h)
            ses.append(est.se)
        print(f"| {m} | {te:.2f} | {e - h:+.1e} | {tl:.2f} | {sum(errs) / len(errs):+.4f} | "
              f"{max(map(abs, errs)):.4f} | {sum(ses) / len(ses):.4f} | {tl / te:.2f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (a lent GPU)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="runs of each row; the best is reported")
    p.add_argument("--soft", action="store_true", help="also time the defaults + the soft-entropy plane")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--entropy-sizes", type=int, nargs="+", metavar="M",
                   help="instead: exact vs Lanczos matrix entropy at min(N, D) = M")
    p.add_argument("--probes", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seeds", type=int, default=3, help="Lanczos seeds per size (--entropy-sizes)")
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here.")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch {torch.__version__}")
    if a.entropy_sizes:
        entropy_table(a)
    else:
        throughput(a)


if __name__ == "__main__":
    main()
