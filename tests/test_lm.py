"""Language-model measures (Skean et al. 2025; Roy & Vetterli 2007) against closed forms, ``analyze`` over
checkpoints, the ``ibscope lm`` CLI, the transformers Trainer callback and docs/language_models.md."""

from __future__ import annotations

import math
import re
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ibscope import lm

DOC = Path(__file__).resolve().parents[1] / "docs" / "language_models.md"
LN2 = math.log(2.0)


def _orthonormal(n, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=dtype))
    return q.T  # n orthonormal rows in R^d


# --------------------------------------------------------------------------- closed forms (no transformers)

@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0])
def test_orthogonal_tokens_have_entropy_log_n(alpha):
    z = 2.5 * _orthonormal(6, 10)            # Gram = 6.25 I: every eigenvalue 1/6
    assert lm.matrix_entropy(z, alpha, unit="nats") == pytest.approx(math.log(6), abs=1e-12)
    assert lm.matrix_entropy(z, alpha) == pytest.approx(math.log2(6), abs=1e-12)          # bits by default
    assert lm.matrix_entropy(z, alpha, normalization="logN") == pytest.approx(1.0, abs=1e-12)
    assert lm.matrix_entropy(z, alpha, normalization="max") == pytest.approx(1.0, abs=1e-12)
    assert lm.matrix_entropy(z, alpha, normalization="logD") == pytest.approx(math.log(6) / math.log(10), abs=1e-12)
    # N > D: at most D orthogonal directions, entropy log D ('max' divides by min(log N, log D) -> 1)
    w = torch.cat([_orthonormal(4, 4)] * 3)
    assert lm.matrix_entropy(w, alpha, unit="nats") == pytest.approx(math.log(4), abs=1e-12)
    assert lm.matrix_entropy(w, alpha, normalization="max") == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_identical_tokens_have_entropy_zero_and_rank_one(alpha):
    v = torch.tensor([[0.3, -1.0, 2.0, 0.5]], dtype=torch.float64)
    z = v.repeat(7, 1) * torch.arange(1, 8, dtype=torch.float64)[:, None]   # collinear rows: rank 1
    assert lm.matrix_entropy(z, alpha) == pytest.approx(0.0, abs=1e-10)
    assert lm.matrix_entropy(z.float(), alpha) == pytest.approx(0.0, abs=1e-5)
    assert lm.effective_rank(z) == pytest.approx(1.0, abs=1e-10)


def test_effective_rank_closed_forms():
    u, v = _orthonormal(5, 9, seed=1), _orthonormal(5, 7, seed=2)
    for k in (1, 3, 5):
        s = torch.tensor([4.0] * k + [0.0] * (5 - k), dtype=torch.float64)
        assert lm.effective_rank(u.T @ torch.diag(s) @ v) == pytest.approx(k, abs=1e-9)
    # unequal singular values 3 and 1: p = (3/4, 1/4), erank = exp(H(p))
    s = torch.tensor([3.0, 1.0, 0, 0, 0], dtype=torch.float64)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert lm.effective_rank(u.T @ torch.diag(s) @ v) == pytest.approx(math.exp(h), abs=1e-9)
    # the Gram spectrum is the squared singular values, normalised
    lam = lm.gram_spectrum(u.T @ torch.diag(s) @ v)
    assert torch.allclose(lam[:2], torch.tensor([0.9, 0.1], dtype=torch.float64), atol=1e-12)


def test_gaussian_renyi2_limit_and_frobenius_identity():
    # rows iid N(0, S): Z^T Z / N -> S, so S_2 -> -log sum (s_i / tr S)^2 (the same nonzero spectrum as Z Z^T)
    g = torch.Generator().manual_seed(0)
    s = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    z = torch.randn(40000, 4, generator=g, dtype=torch.float64) * s.sqrt()
    p = s / s.sum()
    limit2, limit1 = -math.log(float((p ** 2).sum())), -float((p * p.log()).sum())
    assert lm.matrix_entropy(z, 2.0, unit="nats") == pytest.approx(limit2, abs=0.01)
    assert lm.matrix_entropy(z, 1.0, unit="nats") == pytest.approx(limit1, abs=0.01)
    # and N fixed, D -> infinity: Z Z^T / D -> I, entropy -> log N
    w = torch.randn(8, 40000, generator=g, dtype=torch.float64)
    assert lm.matrix_entropy(w, 2.0, unit="nats") == pytest.approx(math.log(8), abs=0.01)
    # Renyi-2 without eigenvalues: S_2 = -log(||K||_F^2 / tr(K)^2)
    x = torch.randn(12, 5, generator=g, dtype=torch.float64)
    k = x @ x.T
    assert lm.matrix_entropy(x, 2.0, unit="nats") == pytest.approx(
        -math.log(float((k * k).sum() / torch.trace(k) ** 2)), abs=1e-10)


def test_float32_agrees_with_float64():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(64, 32, generator=g, dtype=torch.float64) @ torch.diag(torch.linspace(0.1, 3, 32,
                                                                                        dtype=torch.float64))
    for alpha in (0.5, 1.0, 2.0):
        assert lm.matrix_entropy(z.float(), alpha, unit="nats") == pytest.approx(
            lm.matrix_entropy(z, alpha, unit="nats"), abs=1e-4)
    assert lm.effective_rank(z.float()) == pytest.approx(lm.effective_rank(z), rel=1e-4)


@pytest.mark.parametrize("left", [False, True])
def test_padding_never_enters_a_prompt(left):
    g = torch.Generator().manual_seed(1)
    b, s, d = 5, 9, 6
    h = torch.randn(b, s, d, generator=g, dtype=torch.float64)
    lengths = [9, 1, 4, 6, 2]
    pos = torch.arange(s)
    mask = torch.stack([(pos >= s - n) if left else (pos < n) for n in lengths]).long()
    garbage = 1e3 * torch.randn(b, s, d, generator=g, dtype=torch.float64)
    garbage[1, 0 if left else -1] = float("nan")   # NaN at a padded position must not leak
    h_garbage = torch.where(mask.bool()[..., None], h, garbage)
    per = lm.prompt_entropy(h_garbage, mask, 1.0, reduce=False)
    for i, n in enumerate(lengths):
        rows = h[i][mask[i].bool()]
        if n < 2:
            assert math.isnan(float(per[i]))     # one token: left out
        else:
            assert float(per[i]) == pytest.approx(lm.matrix_entropy(rows, 1.0), abs=1e-10)
    assert lm.prompt_entropy(h_garbage, mask) == pytest.approx(float(per[~per.isnan()].mean()), abs=1e-12)
    # per-prompt log N normalization uses each prompt's own length
    pn = lm.prompt_entropy(h_garbage, mask, normalization="logN", reduce=False)
    assert float(pn[3]) == pytest.approx(lm.matrix_entropy(h[3][mask[3].bool()], normalization="logN"), abs=1e-10)
    pooled = lm.mean_pool(h_garbage, mask)
    assert torch.allclose(pooled[2], h[2][mask[2].bool()].mean(0))
    assert lm.dataset_entropy(h_garbage, mask) == pytest.approx(lm.matrix_entropy(pooled), abs=1e-12)
    with pytest.raises(ValueError, match="unpadded"):
        lm.prompt_entropy(torch.where(mask.bool()[..., None], float("nan"), h), mask)


def test_bad_input_is_refused_by_name():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="alpha"):
        lm.matrix_entropy(z, 0.0)
    with pytest.raises(ValueError, match="normalization"):
        lm.matrix_entropy(z, normalization="log2")
    with pytest.raises(ValueError, match="unit"):
        lm.matrix_entropy(z, unit="bans")
    with pytest.raises(ValueError, match="NaN"):
        lm.matrix_entropy(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="all zeros"):
        lm.matrix_entropy(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="'z'"):
        lm.effective_rank(np.ones((3, 2)))
    with pytest.raises(ValueError, match="log 1"):
        lm.matrix_entropy(torch.randn(1, 3), normalization="logN")
    h = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="attention_mask"):
        lm.prompt_entropy(h, torch.ones(2, 5))
    with pytest.raises(ValueError, match="without any token"):
        lm.prompt_entropy(h, torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="fewer than 2"):
        lm.prompt_entropy(h, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]]))


# --------------------------------------------------------------------------- analyze on a toy model (no transformers)

class OneHot(torch.nn.Module):
    """hidden_states = (one-hot tokens, 2 x one-hot): distinct tokens are orthogonal representations."""

    def __init__(self, vocab=16):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, vocab)
        with torch.no_grad():
            self.emb.weight.copy_(torch.eye(vocab))

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        h = self.emb(input_ids)
        return types.SimpleNamespace(hidden_states=(h, 2 * h))


def _toy_prompts():
    # distinct tokens within and across prompts, right and left padding (pad id 0 would collide: use 15)
    ids = torch.tensor([[1, 2, 3, 15, 15], [15, 4, 5, 6, 7], [8, 9, 15, 15, 15], [10, 11, 12, 13, 14]])
    mask = (ids != 15).long()
    return ids, mask


def test_analyze_recovers_closed_forms_on_one_hot_tokens(tmp_path):
    ids, mask = _toy_prompts()
    n = mask.sum(1).double()
    df = lm.analyze(OneHot(), ids, mask, measures=lm.MEASURES, batch_size=3)
    assert set(df["layer"]) == {"hidden_states.0", "hidden_states.1"}
    assert (df["unit"][df["measure"].str.endswith("entropy")] == "bits").all()
    for layer in ("hidden_states.0", "hidden_states.1"):
        row = df[(df["layer"] == layer)].set_index("measure")
        # orthogonal tokens: each prompt's entropy is log2 of its length; its effective rank its length
        assert row.loc["prompt_entropy", "value"] == pytest.approx(float(torch.log2(n).mean()), abs=1e-6)
        assert row.loc["effective_rank", "value"] == pytest.approx(float(n.mean()), abs=1e-4)
        # pooled prompts are orthogonal with squared norms 1/n_i: Gram eigenvalues proportional to 1/n_i
        p = (1 / n) / (1 / n).sum()
        assert row.loc["dataset_entropy", "value"] == pytest.approx(float(-(p * p.log2()).sum()), abs=1e-6)
        q = p.sqrt() / p.sqrt().sum()
        assert row.loc["dataset_effective_rank", "value"] == pytest.approx(float(torch.exp(-(q * q.log()).sum())),
                                                                            abs=1e-4)
        assert (row["n_prompts"] == 4).all() and row.loc["prompt_entropy", "n_tokens"] == int(n.sum())
    # batching (and a memory cap that forces one prompt per batch) changes nothing
    per_prompt = 2 * 5 * 16 * 4
    small = lm.analyze(OneHot(), ids, mask, measures=lm.MEASURES, max_bytes=per_prompt + 4 * 2 * 16 * 4)
    pd.testing.assert_series_equal(small["value"], df["value"], atol=1e-6)
    with pytest.raises(ValueError, match="max_bytes"):
        lm.analyze(OneHot(), ids, mask, max_bytes=per_prompt)
    # nats on request; normalised entropies say so
    nats = lm.analyze(OneHot(), ids, mask, measures=["prompt_entropy"], layers=[0], unit="nats")
    assert nats["value"].iloc[0] == pytest.approx(float(torch.log(n).mean()), abs=1e-6)
    normed = lm.analyze(OneHot(), ids, mask, measures=["prompt_entropy"], layers=[1], normalization="logN")
    assert normed["value"].iloc[0] == pytest.approx(1.0, abs=1e-6) and normed["unit"].iloc[0] == "fraction of logN"


def test_analyze_intervals_flags_and_bad_arguments():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 15, (30, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 1:] = 0                        # a one-token prompt: left out of the prompt-level measures
    df = lm.analyze(OneHot(), ids, mask, layers=[0], ci=0.9, n_boot=100)
    pe = df.set_index("measure").loc["prompt_entropy"]
    assert pe["value_lo"] <= pe["value"] <= pe["value_hi"] and pe["ci_level"] == 0.9
    assert "short_prompts" in pe["flags"] and pe["n_prompts"] == 29
    de = df.set_index("measure").loc["dataset_entropy"]
    assert de["value_lo"] < de["value_hi"] and "rank_capped" in de["flags"]   # 30 prompts > 16 dimensions
    with pytest.raises(ValueError, match="measures"):
        lm.analyze(OneHot(), ids, measures=["curvature"])
    with pytest.raises(ValueError, match="ci"):
        lm.analyze(OneHot(), ids, ci=95)
    with pytest.raises(TypeError, match="input_ids"):
        lm.analyze(OneHot(), ids.float())
    with pytest.raises(ValueError, match="attention_mask"):
        lm.analyze(OneHot(), ids, mask[:, :3])
    with pytest.raises(ValueError, match="out of range"):
        lm.analyze(OneHot(), ids, layers=[5])
    with pytest.raises(ValueError, match="twice"):
        lm.analyze([(1, OneHot()), (1, OneHot())], ids)


def test_analyze_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    ids, mask = _toy_prompts()
    first = lm.analyze([(0, OneHot())], ids, mask, out_dir=tmp_path)
    assert (tmp_path / "lm_measures.parquet").is_file() and (tmp_path / "lm_measures.png").is_file()

    class Boom(OneHot):
        def forward(self, *a, **k):
            raise AssertionError("a finished checkpoint was recomputed")

    both = lm.analyze([(0, Boom()), (5, OneHot())], ids, mask, out_dir=tmp_path)
    assert list(dict.fromkeys(both["checkpoint"])) == ["step_0", "step_5"]
    pd.testing.assert_frame_equal(both[both["step"] == 0].reset_index(drop=True), first)
    assert len(pd.read_parquet(tmp_path / "lm_measures.parquet")) == len(both)
    with pytest.raises(ValueError, match="other settings"):
        lm.analyze([(0, OneHot())], ids, mask, out_dir=tmp_path, alpha=2.0)
    with pytest.raises(ValueError, match="other settings"):
        lm.analyze([(0, OneHot())], ids[:2], mask[:2], out_dir=tmp_path)


def test_plot_needs_its_columns(tmp_path):
    with pytest.raises(ValueError, match="layer_index"):
        lm.plot_lm_measures(pd.DataFrame({"checkpoint": ["a"], "value": [1.0]}), tmp_path / "x.png")


def test_import_ibscope_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, ibscope, ibscope.lm; assert 'transformers' not in sys.modules, 'imported'"
    src = str(Path(__file__).resolve().parents[1] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})


# --------------------------------------------------------------------------- Hugging Face (tiny GPT-2, no download)

def _gpt2(seed=0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def test_gpt2_layers_match_hidden_states_and_patterns():
    model = _gpt2().eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (6, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[:2, 5:] = 0
    df = lm.analyze(model, ids, mask, measures=["prompt_entropy", "dataset_entropy"])
    assert sorted(set(df["layer_index"])) == [0, 1, 2]        # embeddings + 2 blocks
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for i, h in enumerate(hs):
        row = df[(df["layer_index"] == i)].set_index("measure")["value"]
        assert row["prompt_entropy"] == pytest.approx(lm.prompt_entropy(h, mask), abs=1e-5)
        assert row["dataset_entropy"] == pytest.approx(lm.dataset_entropy(h, mask), abs=1e-5)
    by_pattern = lm.analyze(model, ids, mask, layers="transformer.h.*", measures=["prompt_entropy"])
    assert list(by_pattern["layer"]) == ["transformer.h.0", "transformer.h.1"]
    # block 0's output is hidden_states[1] (the last block's is before ln_f)
    assert by_pattern["value"].iloc[0] == pytest.approx(df[(df["layer_index"] == 1) & (
        df["measure"] == "prompt_entropy")]["value"].iloc[0], abs=1e-5)
    assert model.training is False


def _train_tiny(model, tmp_path, steps, callbacks=()):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")          # transformers.Trainer needs it
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": x, "labels": x} for x in torch.randint(1, 64, (16, 12), generator=g)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=steps,
                                          per_device_train_batch_size=4, learning_rate=1e-2, report_to=[],
                                          use_cpu=True, logging_steps=1, save_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks))
    return trainer


def test_checkpoint_directories_cli_and_safetensors_only(tmp_path):
    model = _gpt2()
    model.save_pretrained(tmp_path / "checkpoint-0")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        x = torch.randint(1, 64, (4, 12))
        opt.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
    model.save_pretrained(tmp_path / "checkpoint-3")
    model.eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 64, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    dirs = [tmp_path / "checkpoint-0", tmp_path / "checkpoint-3"]
    df = lm.analyze(dirs, ids, mask, layers=[0, 2])
    assert set(df["step"]) == {0, 3} and set(df["checkpoint"]) == {"checkpoint-0", "checkpoint-3"}
    with torch.no_grad():
        h = model.transformer(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[2]
    got = df[(df["step"] == 3) & (df["layer_index"] == 2) & (df["measure"] == "prompt_entropy")]["value"].iloc[0]
    assert got == pytest.approx(lm.prompt_entropy(h, mask), abs=1e-5)
    # the CLI over the same directories
    from ibscope.cli import main

    np.savez(tmp_path / "data.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    assert main(["lm", *map(str, dirs), "--data", str(tmp_path / "data.npz"), "--out", str(tmp_path / "out"),
                 "--layers", "h.*", "--ci", "0.9"]) == 0   # AutoModel: the base model, no "transformer." prefix
    table = pd.read_parquet(tmp_path / "out" / "lm_measures.parquet")
    assert set(table["checkpoint"]) == {"checkpoint-0", "checkpoint-3"} and table["value_lo"].notna().all()
    assert (tmp_path / "out" / "lm_measures.png").is_file()
    assert main(["lm", str(dirs[1]), "--data", str(tmp_path / "data.npz"), "--out", str(tmp_path / "out2"),
                 "--layers", "0", "2", "--measure", "effective_rank", "--unit", "nats"]) == 0
    table = pd.read_parquet(tmp_path / "out2" / "lm_measures.parquet")
    assert sorted(table["layer_index"]) == [0, 2] and set(table["measure"]) == {"effective_rank"}
    # pickle weights are never read
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((dirs[0] / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match="safetensors"):
        lm.analyze([pickled], ids)


@pytest.mark.parametrize("bound", [False, True])
def test_trainer_callback_logs_at_chosen_steps(tmp_path, bound):
    from ibscope.integrations.hf_trainer import IbscopeTrainerCallback

    model = _gpt2()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 64, (6, 8), generator=g)
    cb = IbscopeTrainerCallback(ids, steps=(0, 2, 4), layers=[0, 2], ci=0.9, n_boot=50)
    trainer = _train_tiny(model, tmp_path, 4, callbacks=[cb])
    if bound:
        cb.bind(trainer)
    trainer.train()
    assert sorted(set(cb.results["step"])) == [0, 2, 4]
    logged = [r for r in trainer.state.log_history if any(k.startswith("ibscope/") for k in r)]
    assert [r["step"] for r in logged] == [0, 2, 4]
    key = "ibscope/prompt_entropy_bits/hidden_states.2"
    assert all(key in r and f"{key}/lo" in r and f"{key}/n_flags" in r for r in logged)
    at4 = cb.results[(cb.results["step"] == 4) & (cb.results["layer_index"] == 2)
                     & (cb.results["measure"] == "prompt_entropy")]["value"].iloc[0]
    assert logged[-1][key] == pytest.approx(at4)
    # the analysis at step 4 saw the trained weights (differs from the initialization's)
    assert logged[-1][key] != pytest.approx(logged[0][key], abs=1e-6)
    with pytest.raises(ValueError, match="every"):
        IbscopeTrainerCallback(ids, every=0)


def test_trainer_callback_schedule_and_evaluate_hooks():
    pytest.importorskip("transformers")
    from ibscope.integrations.hf_trainer import IbscopeTrainerCallback

    ids, mask = _toy_prompts()
    cb = IbscopeTrainerCallback(ids, mask, steps=(), every=3, on_evaluate=True, layers=[0],
                                measures=["prompt_entropy"])
    state = types.SimpleNamespace(global_step=0, log_history=[])
    model = OneHot()
    for step in range(1, 7):
        state.global_step = step
        cb.on_step_end(None, state, None, model=model)
        if step in (4, 6):            # an evaluation at step 6 does not measure step 6 twice
            cb.on_evaluate(None, state, None, model=model)
    assert [r["step"] for r in state.log_history] == [3, 4, 6]
    n = mask.sum(1).double()
    assert state.log_history[0]["ibscope/prompt_entropy_bits/hidden_states.0"] == pytest.approx(
        float(torch.log2(n).mean()), abs=1e-6)
    assert list(cb.results["step"]) == [3, 4, 6]


# --------------------------------------------------------------------------- the tutorial runs verbatim

def test_docs_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/language_models.md has no python example"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), ns)
    assert (tmp_path / "lm_run" / "lm_measures.png").is_file()
    table = pd.read_parquet(tmp_path / "lm_run" / "lm_measures.parquet")
    assert set(table["step"]) == {0, ns["STEPS"]}
