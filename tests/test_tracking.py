import numpy as np
import pytest
import torch

from ibscope.models import MLP
from ibscope.tracking import ActivationRecorder, linear_schedule, log_schedule


@pytest.mark.parametrize("n_epochs,n", [(8000, 300), (100, 30), (10, 50), (1, 2)])
def test_log_schedule(n_epochs, n):
    s = log_schedule(n_epochs, n)
    assert s[0] == 0 and s[-1] == n_epochs
    assert s == sorted(set(s)) and len(s) <= min(n, n_epochs + 1)
    if n_epochs >= 100:
        assert len(s) == n
        gaps = np.diff(s)
        assert gaps[0] <= gaps[-1]  # denser early (log spacing)
    assert linear_schedule(10, 3) == [0, 5, 10]
    with pytest.raises(ValueError, match="n_snapshots"):
        log_schedule(10, 1)


def test_recorder_streams_snapshots_to_disk(tmp_path):
    m = MLP(12, (6, 4), 2, seed=0)
    x = torch.randn(50, 12)
    rec = ActivationRecorder(m, x, out_dir=tmp_path, schedule=[0, 3], batch_size=16)
    assert rec.maybe_record(1) is None
    snap = rec.maybe_record(3)
    assert set(snap) == {"hidden1", "hidden2", "output"}
    assert snap["hidden1"].shape == (50, 6) and snap["output"].shape == (50, 2)
    assert np.allclose(snap["output"].sum(1), 1, atol=1e-5)
    with torch.no_grad():
        want = torch.tanh(m.fc1(x)).numpy()
    assert np.allclose(snap["hidden1"], want, atol=1e-6)
    assert ActivationRecorder.epochs_on_disk(tmp_path) == [3]
    loaded = ActivationRecorder.load(tmp_path, 3)
    assert np.array_equal(loaded["hidden2"], snap["hidden2"])
    # hooks are removed after recording: nothing listens during training
    assert not m.hidden1._forward_hooks and not m.output._forward_hooks
    assert m.training


def test_recorder_any_module_and_errors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    rec = ActivationRecorder(net, torch.randn(10, 3))
    assert rec.layers == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"Layer name\(s\) \['nope'\] not found"):
        ActivationRecorder(net, torch.randn(10, 3), layers=["nope"])
    with pytest.raises(TypeError, match="'inputs'"):
        ActivationRecorder(net, np.zeros((10, 3)))
    bad = MLP(3, (4,), 2, seed=0)
    with torch.no_grad():
        bad.fc1.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or infinite activations"):
        ActivationRecorder(bad, torch.randn(5, 3)).record(0)


def test_recorder_tuple_loader_and_shared_modules():
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 3)

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, a, b):
            return self.lin(self.lin(a) + b)

    a, b = torch.randn(40, 3), torch.randn(40, 3)
    net = Twice()
    # weight sharing: an error naming the module and its number of calls, never silently mixed rows
    with pytest.raises(ValueError, match="Layer 'lin' ran 2 times"):
        ActivationRecorder(net, (a, b), batch_size=16).record(0)
    rec = ActivationRecorder(net, (a, b), batch_size=16, call="all")
    snap = rec.record(0)
    with torch.no_grad():
        want = torch.cat([lin(a), lin(lin(a) + b)], 1).numpy()
    assert np.allclose(snap["lin"], want, atol=1e-6)
    loader = DataLoader(TensorDataset(a, b, torch.arange(40)), batch_size=16)
    rec = ActivationRecorder(net, loader, call="last", labels_in_batches=True)
    acts, labels = rec.capture(inputs=True)
    assert labels.tolist() == list(range(40)) and acts["__input__"].shape == (40, 6)
    assert np.allclose(acts["lin"].numpy(), want[:, 3:], atol=1e-6)
    with pytest.raises(TypeError, match="one-shot iterator"):
        ActivationRecorder(net, iter(loader))
    with pytest.raises(ValueError, match="'call' for layer 'lin'"):
        ActivationRecorder(net, (a, b), call="middle")
