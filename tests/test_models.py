import math

import numpy as np
import pytest
import torch

from ibscope.models import ACTIVATIONS, MLP, ConvNet, GaussianNoise


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_mlp_every_activation(act):
    m = MLP(12, (10, 7, 5, 4, 3), 2, activation=act, seed=0)
    out = m(torch.randn(8, 12))
    assert out.shape == (8, 2)
    assert m.layer_names == ["hidden1", "hidden2", "hidden3", "hidden4", "hidden5", "output"]


def test_truncated_normal_init_statistics():
    m = MLP(400, (300,), 2, init="truncated_normal", seed=1)
    w = m.fc1.weight
    std = 1 / math.sqrt(400)
    assert w.abs().max() <= 2 * std + 1e-7  # truncated at two standard deviations
    # a N(0, s^2) truncated at +-2s has std 0.8796 s
    assert w.std().item() == pytest.approx(0.8796 * std, rel=0.02)
    assert torch.all(m.fc1.bias == 0)


def test_init_schemes_and_seeds():
    he = MLP(500, (400,), 2, init="he", seed=0).fc1.weight.std().item()
    xa = MLP(500, (400,), 2, init="xavier", seed=0).fc1.weight.std().item()
    assert he == pytest.approx(math.sqrt(2 / 500), rel=0.03)
    assert xa == pytest.approx(math.sqrt(2 / 900), rel=0.03)
    a, b = MLP(12, (5,), 2, seed=3), MLP(12, (5,), 2, seed=3)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, MLP(12, (5,), 2, seed=4).fc1.weight)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="Unknown activation 'tanhh'"):
        MLP(12, (5,), 2, activation="tanhh")
    with pytest.raises(ValueError, match="Unknown init"):
        MLP(12, (5,), 2, init="orthogonal")
    with pytest.raises(ValueError, match="one per hidden layer"):
        MLP(12, (5, 4), 2, activation=["tanh"])
    with pytest.raises(ValueError, match="noise_std"):
        GaussianNoise(-1.0)


def test_noise_layers():
    torch.manual_seed(0)
    t = torch.full((20000, 1), 2.0)
    add = GaussianNoise(0.5)(t)
    mul = GaussianNoise(0.5, mode="multiplicative")(t)
    assert add.std().item() == pytest.approx(0.5, rel=0.05)
    assert mul.std().item() == pytest.approx(1.0, rel=0.05)  # 0.5 * |2|
    off = GaussianNoise(0.5, in_eval=False).eval()
    assert torch.equal(off(t), t)
    m = MLP(12, (5,), 2, noise_std=0.1, seed=0)
    assert hasattr(m, "noise1")


def test_convnet_shapes():
    c = ConvNet(seed=0)
    assert c(torch.randn(3, 784)).shape == (3, 10)
    assert c(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert c.layer_names[-1] == "output"


def test_token_task_distinct_sequences_and_labels():
    from ibscope.data import token_task

    x, y = token_task(500, vocab_size=5, length=10, n_classes=3, seed=1)
    assert x.shape == (500, 10) and x.dtype == np.int64 and y.dtype == np.int64
    assert len(np.unique(x, axis=0)) == 500          # H(X) = log2 n on this set
    counts = np.stack([(x == c).sum(1) for c in range(3)], 1)
    assert np.array_equal(y, counts.argmax(1)) and set(np.unique(y)) <= {0, 1, 2}
    assert np.array_equal(token_task(500, vocab_size=5, length=10, n_classes=3, seed=1)[0], x)
    with pytest.raises(ValueError, match="too large"):
        token_task(100, vocab_size=2, length=5)
    with pytest.raises(ValueError, match="'n_classes'"):
        token_task(10, vocab_size=3, n_classes=4)


def test_token_transformer_and_resnet():
    from ibscope.models import ResNet, TokenTransformer

    m = TokenTransformer(6, 12, 3, d_model=8, nhead=2, num_layers=3)
    ids = torch.randint(0, 6, (7, 12))
    assert m(ids).shape == (7, 3)
    names = dict(m.named_modules())
    assert all(n in names for n in m.layer_names) and m.layer_names[1:4] == [
        "encoder.layers.0", "encoder.layers.1", "encoder.layers.2"]
    # seeded: the same seed builds the same weights, another seed others
    a, b = TokenTransformer(6, 12, seed=3), TokenTransformer(6, 12, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(TypeError, match="integer token ids"):
        m(ids.float())
    with pytest.raises(ValueError, match="multiple of 'nhead'"):
        TokenTransformer(6, 12, d_model=10, nhead=3)
    r = ResNet(1, 10, width=4, stages=3)
    assert r(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert r.layer_names == ["stem", "stage1", "stage2", "stage3", "pool", "fc"]
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in r.modules())
    with pytest.raises(ValueError, match="'width'"):
        ResNet(width=0)
