"""Weight information on attention models: nn.TransformerEncoder, nn.MultiheadAttention and Hugging Face
GPT-2 / BERT (tiny configs, random init), with no user workaround.

Correctness, not just "runs": the per-example gradients, the Fisher trace and IIW through the engines
(PyTorch's math attention path, hooks plus whole-model torch.func) equal the reference computed by plain
autograd one example at a time, in float64 (relative tolerance 1e-8)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ibscope.weights import fisher, iiw, information_lagrangian, init_prior
from ibscope.weights._pergrad import capture, math_attention

RTOL = 1e-8  # float64; engines and the loop differ only by summation order


class Encoder(nn.Module):
    """Token embedding, a 2-layer nn.TransformerEncoder (batch_first) and a classification head."""

    def __init__(self, vocab: int = 20, d: int = 16, classes: int = 3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.enc(self.emb(x)).mean(1))


class Attention(nn.Module):
    """nn.MultiheadAttention on float features (it returns a tuple) and a head."""

    def __init__(self, d: int = 8, classes: int = 3):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        h = self.inp(x)
        a, _ = self.attn(h, h, h)
        return self.head(a.mean(1))


CE = nn.CrossEntropyLoss(reduction="none")


def _encoder():
    torch.manual_seed(0)
    model = Encoder().double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 20, (6, 5), generator=g)  # integer token ids: never cast to float
    y = torch.randint(0, 3, (6,), generator=g)
    return model, x, y


def _loop_gradients(model, loss_of_example, n):
    """Reference: plain autograd, one example at a time (the user's default attention settings)."""
    rows = []
    for i in range(n):
        model.zero_grad(set_to_none=True)
        loss_of_example(i).backward()
        rows.append({k: p.grad.detach().clone() for k, p in model.named_parameters()})
    model.zero_grad(set_to_none=True)
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _prior(model, scale=0.02, seed=3):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in init_prior(model).items()}


def _iiw_reference(grads, model, prior, n_train):
    """IIW (fisher_quadratic, nats) = n/2 * mean_i <theta - theta_0, g_i>^2."""
    proj = sum((grads[k] * (p.detach() - prior[k])).reshape(grads[k].shape[0], -1).sum(1)
               for k, p in model.named_parameters())
    return 0.5 * n_train * float((proj ** 2).mean())


def _fisher_reference(grads):
    return float(sum(g.pow(2).reshape(g.shape[0], -1).sum(1) for g in grads.values()).mean())


# --------------------------------------------------------------------------- #
# the math-path context manager
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("user_fastpath", [True, False])
def test_math_attention_selects_math_path_and_restores_settings(user_fastpath):
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(user_fastpath)
    try:
        flags = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
                 torch.backends.cuda.math_sdp_enabled())
        with math_attention():
            assert torch.backends.mha.get_fastpath_enabled() is False
            assert torch.backends.cuda.math_sdp_enabled()
            assert not torch.backends.cuda.flash_sdp_enabled()
            assert not torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.mha.get_fastpath_enabled() is user_fastpath
        with pytest.raises(KeyError), math_attention():  # restored on exceptions too
            raise KeyError("boom")
        assert torch.backends.mha.get_fastpath_enabled() is user_fastpath
        assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled(),
                torch.backends.cuda.math_sdp_enabled()) == flags
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


# --------------------------------------------------------------------------- #
# nn.TransformerEncoder
# --------------------------------------------------------------------------- #
def test_transformer_encoder_per_example_gradients_equal_autograd_loop():
    model, x, y = _encoder()
    names = [k for k, _ in model.named_parameters()]
    ref = _loop_gradients(model, lambda i: F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), len(x))
    with math_attention():
        cap = capture(model, names, None, x, loss_fn=CE, y=y)
        got = cap.gradients()
        sq = cap.sq_norms()
    # the attention module returns a tuple and its output projection is read by the attention itself
    assert "enc.layers.0.self_attn.in_proj_weight" in cap.whole
    assert "enc.layers.0.self_attn.out_proj.weight" in cap.whole
    assert "enc.layers.0.linear1.weight" not in cap.whole  # the rest stays on the hook engine
    for k in names:
        torch.testing.assert_close(got[k], ref[k], rtol=RTOL, atol=1e-12, msg=k)
    ref_sq = torch.stack([ref[k].pow(2).reshape(len(x), -1).sum(1) for k in names], 1)
    torch.testing.assert_close(sq, ref_sq, rtol=RTOL, atol=1e-12)


@pytest.mark.slow  # ~35-70 s on 2 busy cores; runs in make test-slow
def test_transformer_encoder_iiw_fisher_lagrangian_without_workaround():
    model, x, y = _encoder()
    ref = _loop_gradients(model, lambda i: F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), len(x))
    prior = _prior(model)
    data = [(x[:4], y[:4]), (x[4:], y[4:])]
    fast_before = torch.backends.mha.get_fastpath_enabled()
    expected = _iiw_reference(ref, model, prior, len(x))
    assert expected > 0
    for engine in ("hooks", "jvp"):
        got = iiw(model, CE, data, prior_mean=prior, engine=engine, unit="nats")
        assert got.total == pytest.approx(expected, rel=RTOL), engine
    f = fisher(model, data, kind="empirical")
    assert f.trace == pytest.approx(_fisher_reference(ref), rel=RTOL)
    lag = [information_lagrangian(model, CE, data, beta=b, steps=10, lr=0.1, seed=0) for b in (1e-4, 1.0)]
    assert all(r.total > 0 for r in lag) and lag[1].total < lag[0].total  # more beta, less information
    noisy = lag[0].settings["weight_space_noise"]
    assert "enc.layers.0.self_attn.out_proj.weight" in noisy and "emb.weight" in noisy
    assert "enc.layers.0.linear1.weight" not in noisy and "head.weight" not in noisy
    assert torch.backends.mha.get_fastpath_enabled() is fast_before


# --------------------------------------------------------------------------- #
# nn.MultiheadAttention used directly
# --------------------------------------------------------------------------- #
def test_multihead_attention_model():
    torch.manual_seed(0)
    model = Attention().double().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    ref = _loop_gradients(model, lambda i: F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), len(x))
    prior = _prior(model)
    data = [(x, y)]
    got = iiw(model, CE, data, prior_mean=prior, unit="nats", groups="parameter")
    assert got.total == pytest.approx(_iiw_reference(ref, model, prior, len(x)), rel=RTOL)
    assert got.per_layer["attn.out_proj.weight"] > 0  # not silently zero (the module never runs itself)
    assert fisher(model, data, kind="empirical").trace == pytest.approx(_fisher_reference(ref), rel=RTOL)
    assert information_lagrangian(model, CE, data, beta=1e-3, steps=5).total > 0


# --------------------------------------------------------------------------- #
# output selector
# --------------------------------------------------------------------------- #
class Tupled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        out = self.lin(x)
        return out, out.detach()


def test_output_selector_is_required_and_checked():
    model = Tupled().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    data = [(x, torch.tensor([0, 1, 0, 1]))]
    prior = _prior(model)
    with pytest.raises(TypeError, match="output="):
        iiw(model, CE, data, prior_mean=prior)
    with pytest.raises(TypeError, match="output="):
        fisher(model, data)
    with pytest.raises(TypeError, match="output="):
        information_lagrangian(model, CE, data, beta=0.1, steps=1)
    with pytest.raises(ValueError, match="output=5"):
        iiw(model, CE, data, prior_mean=prior, output=5)
    with pytest.raises(TypeError, match="'output'"):
        fisher(model, data, output=1.5)
    a = iiw(model, CE, data, prior_mean=prior, output=0).total
    b = iiw(model, CE, data, prior_mean=prior, output=lambda o: o[0]).total
    assert a == pytest.approx(b, rel=1e-12) and a > 0


# --------------------------------------------------------------------------- #
# Hugging Face GPT-2 and BERT (tiny configs, random init)
# --------------------------------------------------------------------------- #
def _lm_loss(logits, y):
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)


@pytest.mark.slow  # ~35-70 s on 2 busy cores; runs in make test-slow
def test_gpt2_iiw_fisher_lagrangian_match_autograd_loop():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (4, 6), generator=g)
    y = torch.randint(0, 64, (4, 6), generator=g)
    data = [(x, y)]
    ref = _loop_gradients(model, lambda i: _lm_loss(model(x[i:i + 1]).logits, y[i:i + 1]).sum(), len(x))
    prior = _prior(model, scale=0.01)
    with pytest.raises(TypeError, match="output='logits'"):
        iiw(model, _lm_loss, data, prior_mean=prior)
    got = iiw(model, _lm_loss, data, prior_mean=prior, output="logits", unit="nats")
    assert got.total == pytest.approx(_iiw_reference(ref, model, prior, len(x)), rel=RTOL)
    assert got.per_layer["transformer.wte"] > 0  # the tied embedding / LM head
    # the sequence Fisher: per-example log-likelihood = sum over positions
    fref = _loop_gradients(model, lambda i: F.cross_entropy(model(x[i:i + 1]).logits[0], y[i], reduction="sum"),
                           len(x))
    assert fisher(model, data, kind="empirical", output="logits").trace == pytest.approx(
        _fisher_reference(fref), rel=RTOL)
    assert fisher(model, data, output="logits", n_samples=2).trace > 0
    lag = information_lagrangian(model, _lm_loss, data, beta=1e-3, steps=3, output="logits")
    assert lag.total > 0 and "transformer.wte.weight" in lag.settings["weight_space_noise"]


def test_bert_with_named_inputs_and_padding_mask():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  vocab_size=64, max_position_embeddings=32, num_labels=3,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    x = {"input_ids": torch.randint(0, 64, (4, 6), generator=g),
         "attention_mask": torch.tensor([[1] * 6, [1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]])}
    y = torch.randint(0, 3, (4,), generator=g)
    ref = _loop_gradients(
        model, lambda i: F.cross_entropy(model(**{k: v[i:i + 1] for k, v in x.items()}).logits, y[i:i + 1]), 4)
    prior = _prior(model, scale=0.01)
    data = [(x, y)]
    got = iiw(model, CE, data, prior_mean=prior, output="logits", unit="nats")
    assert got.total == pytest.approx(_iiw_reference(ref, model, prior, 4), rel=RTOL)
    assert fisher(model, data, kind="empirical", output="logits").trace == pytest.approx(
        _fisher_reference(ref), rel=RTOL)
    assert information_lagrangian(model, CE, data, beta=1e-3, steps=3, output="logits").total > 0


# --------------------------------------------------------------------------- #
# WeightInformation on an attention model with named inputs and a dict output
# --------------------------------------------------------------------------- #
class NamedEncoder(Encoder):
    """The Encoder called as model(input_ids=...) and returning {'logits': ...} (like a Hugging Face model)."""

    def forward(self, input_ids):
        return {"logits": super().forward(input_ids)}


def test_weight_information_tracker_on_attention_model_with_named_inputs(tmp_path):
    from ibscope.weights import WeightInformation

    torch.manual_seed(0)
    model = NamedEncoder().double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 20, (6, 5), generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    data = [({"input_ids": x}, y)]
    prior = _prior(model)
    fast_before = torch.backends.mha.get_fastpath_enabled()

    def tracker(data=data, **kw):
        return WeightInformation(CE, data, quantities=("iiw", "fisher"), prior_mean=prior, out_dir=tmp_path,
                                 iiw_kwargs={"output": "logits", "unit": "nats"},
                                 fisher_kwargs={"output": "logits", "kind": "empirical"}, model=model, **kw)

    rows = tracker().record(1)
    ref = _loop_gradients(model, lambda i: F.cross_entropy(model(x[i:i + 1])["logits"], y[i:i + 1]), len(x))
    total = rows[rows.layer == "total"].set_index("quantity").value
    assert total["iiw"] == pytest.approx(_iiw_reference(ref, model, prior, len(x)), rel=RTOL)
    assert total["fisher"] == pytest.approx(_fisher_reference(ref), rel=RTOL)
    assert torch.backends.mha.get_fastpath_enabled() is fast_before
    assert len(tracker().record(1)) == 0  # same measurement: resumed
    other = [({"input_ids": x.flip(0)}, y)]
    with pytest.raises(ValueError, match="overwrite=True"):
        tracker(data=other).record(1)
    with pytest.raises(TypeError, match="output="):
        WeightInformation(CE, data, quantities=("iiw",), prior_mean=prior, model=model).record(1)
