import numpy as np
import pytest
import torch
from torch import nn

from ibscope._fingerprint import array_digest, fingerprint, module_structure


def test_fingerprint_tells_structure_data_and_settings_apart():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(10, 3)
    base = fingerprint(model=net, layers=["0", "2"], inputs=x, estimators={"ksg": {"k": 3}})
    # same structure, other weights (training changes them): same fingerprint
    other = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert fingerprint(model=other, layers=["0", "2"], inputs=x, estimators={"ksg": {"k": 3}}) == base
    changed = [
        dict(model=nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)), layers=["0", "2"], inputs=x,
             estimators={"ksg": {"k": 3}}),
        dict(model=nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), layers=["0", "2"], inputs=x,
             estimators={"ksg": {"k": 3}}),
        dict(model=net, layers=["0"], inputs=x, estimators={"ksg": {"k": 3}}),
        dict(model=net, layers=["0", "2"], inputs=x + 1e-6, estimators={"ksg": {"k": 3}}),
        dict(model=net, layers=["0", "2"], inputs=x.double(), estimators={"ksg": {"k": 3}}),
        dict(model=net, layers=["0", "2"], inputs=x, estimators={"ksg": {"k": 5}}),
    ]
    for parts in changed:
        assert fingerprint(**parts) != base


def test_array_digest_and_structure():
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert array_digest(torch.as_tensor(a)) == array_digest(a) | {"dtype": "torch.int64"}
    assert array_digest(a)["shape"] == [2, 3]
    assert array_digest(torch.ones(2, dtype=torch.bfloat16))["dtype"] == "torch.bfloat16"
    s = module_structure(nn.BatchNorm1d(3))
    assert s[0][1].endswith("BatchNorm1d") and ["running_mean", [3], "torch.float32"] in s[0][3]
    with pytest.raises(TypeError, match="'model'"):
        module_structure("not a module")
