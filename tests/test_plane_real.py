"""The information plane on networks users bring: token transformers, residual CNNs, dead units.

Ground truth used here: for a deterministic layer T of discrete inputs X,
I(X;T) = H(T) (T is a function of X); an injective layer of m distinct inputs
gives log2 m bits. A constant (all-dead) layer gives 0.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from _plane_laws import assert_laws_flagged, every_estimator, fast, h_bits, offered, wkl_plane
from ibscope import estimators as registry
from ibscope.tracking import InformationPlane, information_plane
from ibscope.tracking._plane import layer_params, measure_layer, read_plane_table


class TokenNet(nn.Module):
    """nn.Embedding + a 2-layer nn.TransformerEncoder over token ids, mean-pooled to 2 classes."""

    def __init__(self, vocab=6, d=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, 1, 8, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, x):
        return self.head(self.enc(self.emb(x)).mean(1))


def _tokens(n=400, length=12, vocab=6, seed=0, repeats=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    x = x.repeat(repeats, 1)
    return x, (x.sum(1) % 2).long()


@pytest.mark.parametrize("name", offered())
def test_injective_embedding_of_token_ids_gives_log_n(name):
    # 300 distinct id sequences: the embedding is injective, I(X;T) = H(T) = log2 300 bits
    # (wkl's bias-cancelling weights need a narrow layer: 4 tokens embedded in 1 dimension)
    x, y = _tokens(n=300, length=4 if name == "wkl" else 12)
    m = len(torch.unique(x, dim=0))
    net = TokenNet(d=1) if name == "wkl" else TokenNet()
    df = information_plane(net, x, y, layers=["emb"], estimators={name: fast(name)})
    row = df.iloc[0]
    assert row["discrete_input"] and row["unit"] == "bits"
    assert abs(row["i_xt"] - math.log2(m)) <= 0.25 * math.log2(m)
    assert "saturated_xt" in row["flags"]  # at its ceiling log2(#distinct inputs)
    assert 0 <= row["i_ty"] <= 1 + 0.25 and np.isfinite(row["i_ty"])
    assert row["dim_t"] >= 1 and row["n"] == 300


@pytest.mark.parametrize("name", ["binning", "kde_upper", "ksg", "compressed"])
def test_repeated_inputs_give_log_of_distinct_inputs(name):
    # 100 distinct sequences, each 3 times: H(T) = log2 100, not log2 300
    x, y = _tokens(n=100, repeats=3)
    df = information_plane(TokenNet(), x, y, layers=["emb", "enc.layers.1"], estimators={name: fast(name)})
    for v in df["i_xt"]:
        assert v == pytest.approx(math.log2(100), rel=0.05)
    assert (df["n"] == 300).all()


def test_plug_in_entropy_of_a_non_injective_layer():
    # T = token 0 only (embedding of the first id): H(T) = H(first token) exactly, far below log2 n
    class First(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(6, 3)
            self.pick = nn.Identity()
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(self.pick(self.emb(x)[:, 0]))

    x, y = _tokens(n=600)
    counts = np.bincount(x[:, 0].numpy())
    p = counts[counts > 0] / counts.sum()
    h = float(-(p * np.log2(p)).sum())
    for name in ("ksg", "auto", "binning"):
        row = information_plane(First(), x, y, layers=["pick"], estimators=name).iloc[0]
        assert row["i_xt"] == pytest.approx(h, abs=0.02 if name != "binning" else 0.1)
        assert "saturated_xt" not in row["flags"]


def test_discrete_x_override_and_detection():
    x, y = _tokens(n=200)
    m = TokenNet()
    assert InformationPlane(m, x, y, layers=["emb"], estimators="ksg").discrete_x is True
    assert InformationPlane(m, x.float(), y, layers=["emb"], estimators="ksg", discrete_x=True).discrete_x
    lin = nn.Sequential(nn.Linear(12, 4), nn.Tanh())
    assert InformationPlane(lin, x.float(), y, layers=["1"], estimators="ksg").discrete_x is False
    # discrete inputs declared continuous: the old path (estimate(x, t)), recorded as such
    row = information_plane(m, x, y, layers=["emb"], estimators="ksg", discrete_x=False).iloc[0]
    assert not row["discrete_input"] and row["dim_x"] == 12
    with pytest.raises(TypeError, match="'discrete_x'"):
        InformationPlane(m, x, y, layers=["emb"], discrete_x="yes")


def test_estimator_that_cannot_measure_a_layer_is_refused_at_construction():
    x, y = _tokens(n=100)
    with pytest.raises(ValueError, match="'estimators': 'gaussian' cannot measure layer 'emb'"):
        InformationPlane(TokenNet(), x, y, layers=["emb"], estimators="gaussian")


class ResCNN(nn.Module):
    """A small residual CNN with BatchNorm (two 3x3 convs around a skip connection)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.block = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = self.stem(x)
        h = self.block(h + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h))))))
        return self.head(self.pool(h).flatten(1))


@pytest.fixture(scope="module")
def mnist(shared_data):
    from ibscope.data import load_mnist_idx

    try:
        images, labels = load_mnist_idx(shared_data)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    x = torch.as_tensor(images[:1200], dtype=torch.float32).unsqueeze(1) / 255.0
    x = nn.functional.avg_pool2d(x, 2)  # 14 x 14: keeps the test to seconds, border pixels still constant
    return x, torch.as_tensor(labels[:1200])


@pytest.mark.parametrize("name", ["auto", "compressed"])
def test_mnist_residual_cnn_drops_constant_pixels(mnist, name):
    x, y = mnist
    df = information_plane(ResCNN(), x, y, layers=["pool", "head"], estimators={name: fast(name)})
    assert not df["discrete_input"].any() and df["dropped_columns"].all()
    # MNIST's border pixels are constant over the images: dropped from X, 196 - dropped read
    assert (df["dropped_x"] > 0).all() and (df["dim_x"] + df["dropped_x"] == 196).all()
    assert np.isfinite(df["i_xt"]).all() and (df["i_ty"] >= 0).all()
    assert (df["i_ty"] <= math.log2(10) + 0.1).all()


class DeadNet(nn.Module):
    """A narrow ReLU layer whose unit 1 is dead (zero weights, negative bias: it stays dead in training)."""

    def __init__(self, duplicate=False):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight[1] = 0.0
            self.fc.bias[1] = -5.0
            if duplicate:  # unit 2 a copy of unit 0
                self.fc.weight[2] = self.fc.weight[0]
                self.fc.bias[2] = self.fc.bias[0]
        self.act = nn.ReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.act(self.fc(x)))


@pytest.mark.parametrize("name", ["ksg", "auto", "gaussian_copula", "compressed"])
def test_dead_unit_never_aborts_fit(name):
    from ibscope.training import fit

    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 3, generator=g)
    y = (x[:, 0] > 0).long()
    net = DeadNet()
    plane = InformationPlane(net, x, y, layers=["act"], estimators=name, schedule=[0, 1])
    fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=1e-3), epochs=1,
        batch_size=100, callbacks=[plane], progress=False)
    df = plane.results()
    assert len(df) == 2 and np.isfinite(df["i_xt"]).all() and np.isfinite(df["i_ty"]).all()
    assert (df["dropped_t"] == 1).all() and (df["dim_t"] == 2).all() and df["dropped_columns"].all()


@pytest.mark.parametrize("name", ["ksg", "auto", "gaussian_copula"])
def test_dead_and_duplicate_units_are_dropped(name):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 3, generator=g)
    row = information_plane(DeadNet(duplicate=True), x, (x[:, 0] > 0).long(), layers=["act"],
                            estimators=name).iloc[0]
    assert row["dropped_t"] == 2 and row["dim_t"] == 1 and row["dim_x"] == 3 and row["dropped_x"] == 0
    # the same number as the estimator on the one live unit
    with torch.no_grad():
        live = DeadNet(duplicate=True).act(DeadNet(duplicate=True).fc(x))[:, :1]
    assert row["i_xt"] == pytest.approx(registry.get(name).estimate(x, live), abs=1e-9)


def test_all_dead_layer_is_exactly_zero():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(-1.0)
    x = torch.randn(200, 3)
    y = (x[:, 0] > 0).long()
    row = information_plane(net, x, y, layers=["1"], estimators="ksg").iloc[0]
    assert row["i_xt"] == 0.0 and row["i_ty"] == 0.0 and row["dim_t"] == 1 and row["dropped_t"] == 3


def test_estimator_error_names_layer_epoch_and_quantity():
    class Boom(registry.get("ksg").__class__):
        def _estimate_nats(self, x, y, discrete_x, discrete_y):
            if discrete_y:
                raise ArithmeticError("it broke")
            return super()._estimate_nats(x, y, discrete_x, discrete_y)

    x = torch.randn(100, 3)
    y = (x[:, 0] > 0).long()
    net = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    plane = InformationPlane(net, x, y, layers=["1"], estimators={"boom": Boom()})
    with pytest.raises(ArithmeticError, match=r"I\(T;Y\) of layer '1' at epoch 7 with estimator 'boom': it broke"):
        plane.record(7)


# ------------------------------------------------------------------ directories and provenance


def _plane(tmp_path, **kw):
    x, y = _tokens(n=120)
    args = {"layers": ["emb"], "estimators": "binning", "out_dir": tmp_path}
    return InformationPlane(TokenNet(**kw.pop("net", {})), x if "x" not in kw else kw.pop("x"), y, **{**args, **kw})


def test_directory_of_another_model_is_refused_or_overwritten(tmp_path):
    p = _plane(tmp_path)
    assert len(p.record(0)) == 1
    assert len(_plane(tmp_path).record(0)) == 0  # same fingerprint: resumed, epoch 0 not recomputed
    meta = json.loads((tmp_path / "information_plane.json").read_text())
    assert meta["fingerprint"] == p.fingerprint and len(meta["fingerprint"]) == 64
    other = {"net": {"d": 6}}  # another model structure
    with pytest.raises(ValueError, match=r"holds an information plane of another measurement.*overwrite=True"):
        _plane(tmp_path, **other)
    x2, _ = _tokens(n=120, seed=5)  # other evaluation inputs
    with pytest.raises(ValueError, match="overwrite=True"):
        _plane(tmp_path, x=x2)
    with pytest.raises(ValueError, match="other estimators"):
        _plane(tmp_path, estimators="kde_upper")
    with pytest.raises(ValueError, match="overwrite=True"):
        _plane(tmp_path, ci=0.9)
    q = _plane(tmp_path, overwrite=True, **other)
    assert q.epochs_done() == [] and len(q.record(0)) == 1
    assert json.loads((tmp_path / "information_plane.json").read_text())["fingerprint"] == q.fingerprint
    assert len(read_plane_table(tmp_path)) == 1


def test_directory_without_fingerprint_is_refused(tmp_path):
    _plane(tmp_path).record(0)
    meta = json.loads((tmp_path / "information_plane.json").read_text())
    del meta["fingerprint"]
    (tmp_path / "information_plane.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"no fingerprint.*overwrite=True"):
        _plane(tmp_path)
    assert _plane(tmp_path, overwrite=True).epochs_done() == []


def test_row_provenance_recomputes_the_number(tmp_path):
    x, y = _tokens(n=200)
    net = TokenNet()
    df = information_plane(net, x, y, layers=["enc.layers.0"], estimators={"c": fast("compressed")},
                           out_dir=tmp_path)
    meta = json.loads((tmp_path / "information_plane.json").read_text())
    assert meta["ibscope_version"] and meta["discrete_x"] is True and meta["fingerprint"]
    spec = meta["estimators"]["c"]
    est = registry.get(spec["name"], **{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in spec["params"].items()})
    with torch.no_grad():
        t = net.enc.layers[0](net.emb(x)).reshape(200, -1)
    row = df.iloc[0]
    assert row["dim_t"] == t.shape[1] and row["dim_x"] == 12
    again = measure_layer(t, y, est, x=x, discrete_x=True)
    assert float(again.i_xt) == pytest.approx(row["i_xt"], abs=1e-9)
    assert float(again.i_ty) == pytest.approx(row["i_ty"], abs=1e-6)


def test_layer_params_one_rule_for_bounded_and_unbounded_layers():
    assert layer_params("binning", "tanh", {"n_bins": 30}) == {"n_bins": 30, "value_range": (-1.0, 1.0)}
    assert layer_params("binning", "relu", {"n_bins": 20}) == {"n_bins": 20, "bin_width": 0.1}
    assert layer_params("binning", "relu", {"bin_width": 0.5}) == {"bin_width": 0.5}
    assert layer_params("binning", None) == {}
    assert layer_params("adaptive_binning", "relu") == {"floor": 0.0}
    # the library plane bins an ibscope ReLU layer with the same fixed width as the experiment
    from ibscope.models import MLP

    x = torch.randn(100, 4)
    p = InformationPlane(MLP(4, (5,), 2, activation="relu"), x, (x[:, 0] > 0).long(), estimators="binning")
    assert p.plan["hidden1"][0][1].get_params()["bin_width"] == pytest.approx(2 / 30)


def test_zoo_token_transformer_every_estimator(recwarn):
    from ibscope.data import token_task
    from ibscope.models import TokenTransformer

    x, y = token_task(400, vocab_size=6, length=12, seed=1)
    net = TokenTransformer(6, 12, seed=1)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    ests = every_estimator()  # layers wider than 128 are randomly projected to 128 (max_features)
    df = information_plane(net, x, y, estimators=ests, layers=net.layer_names, chain=net.layer_names,
                           max_features=128)
    df = pd.concat([df, wkl_plane(net, x, y, net.layer_names)], ignore_index=True)
    assert set(df["estimator"]) == set(offered()) and set(df["layer"]) == set(net.layer_names)
    assert df["discrete_input"].all()
    assert_laws_flagged(df, 400, h_bits(y), net.layer_names)
    embed = df[df["layer"] == "embed"].set_index("estimator")["i_xt"]
    assert (abs(embed - math.log2(400)) <= 0.25 * math.log2(400)).all(), embed.to_dict()


@pytest.mark.slow  # ~14 s
def test_zoo_residual_cnn_on_mnist_every_estimator(mnist, recwarn):
    from ibscope.models import ResNet

    x, y = mnist
    net = ResNet(in_channels=1, n_classes=10, width=4, stages=2).eval()
    # 1200 images, ~120 per class: gaussian_copula's class-conditional covariances need more samples per
    # class than dimensions, so layers are randomly projected to 64 (max_features; a ValueError otherwise)
    df = information_plane(net, x, y, estimators=every_estimator(), layers=net.layer_names,
                           chain=net.layer_names, max_features=64)
    df = pd.concat([df, wkl_plane(net, x, y, net.layer_names)], ignore_index=True)
    assert set(df["estimator"]) == set(offered()) and set(df["layer"]) == set(net.layer_names)
    assert not df["discrete_input"].any()
    assert_laws_flagged(df, len(y), h_bits(y), net.layer_names)
