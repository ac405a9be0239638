"""Tests of ibscope.training: the one training loop, callbacks, checkpoints, resume, guards."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn

from ibscope.training import (
    BatchLoss,
    Callback,
    CheckpointError,
    NonFiniteLossError,
    TensorBatches,
    fit,
    load_checkpoint,
)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))


def _data(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, (x[:, 0] + 0.3 * x[:, 1] > 0).long()


class Recorder(Callback):
    """Records the hooks it sees; counts epochs in its state (to test resume)."""

    def __init__(self, crash_at=None):
        self.events, self.crash_at, self.seen = [], crash_at, 0

    def on_train_begin(self, state):
        self.events.append(("begin", state.epoch, state.resumed))

    def on_epoch_end(self, state):
        self.events.append(("epoch", state.epoch))
        self.seen += 1
        if self.crash_at is not None and state.epoch == self.crash_at:
            raise KeyboardInterrupt

    def on_train_end(self, state):
        self.events.append(("end", state.epoch))

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, s):
        self.seen = int(s["seen"])


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_epoch_convention_and_history():
    net, (x, y) = _net(), _data()
    rec = Recorder()
    state = fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=3,
                batch_size=16, callbacks=[rec], eval_data=(x, y), progress=False)
    assert rec.events == [("begin", 0, False), ("epoch", 0), ("epoch", 1), ("epoch", 2), ("epoch", 3), ("end", 3)]
    assert [h["epoch"] for h in state.history] == [1, 2, 3]
    assert state.step == 3 * 4
    assert 0 <= state.history[-1]["eval_acc"] <= 1
    # training reduced the loss on this separable task
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def test_same_as_hand_written_loop():
    (x, y), loss = _data(), nn.CrossEntropyLoss()
    a = _net()
    fit(a, loss, (x, y), torch.optim.SGD(a.parameters(), lr=0.1), epochs=4, batch_size=10, seed=7, progress=False)
    b = _net()
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(7)
    for _ in range(4):
        for idx in torch.split(torch.randperm(64, generator=gen), 10):
            opt.zero_grad()
            loss(b(x[idx]), y[idx]).backward()
            opt.step()
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=0)


def test_resume_after_crash_equals_uninterrupted(tmp_path):
    (x, y), loss = _data(), nn.CrossEntropyLoss()
    ref = _net()
    fit(ref, loss, (x, y), torch.optim.Adam(ref.parameters(), lr=0.01), epochs=6, batch_size=16,
        progress=False, checkpoint_dir=tmp_path / "ref")
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    with pytest.raises(KeyboardInterrupt):
        fit(net, loss, (x, y), opt, epochs=6, batch_size=16, progress=False, callbacks=[Recorder(crash_at=4)],
            checkpoint_dir=tmp_path / "run")
    net2 = _net(seed=99)  # different weights: everything must come from the checkpoint
    rec = Recorder()
    state = fit(net2, loss, (x, y), torch.optim.Adam(net2.parameters(), lr=0.01), epochs=6, batch_size=16,
                progress=False, callbacks=[rec], checkpoint_dir=tmp_path / "run")
    assert state.resumed and rec.events[0] == ("begin", 3, True)  # epoch 4 was not checkpointed: crash inside its hooks
    assert rec.seen == 4 + 3  # restored count (epochs 0..3) plus epochs 4, 5, 6
    assert [h["epoch"] for h in state.history] == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(_params(net2), _params(ref), rtol=0, atol=0)


def test_planted_pickle_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"format": "ibscope.fit/1", "x": Evil()}, buf, pickle_module=pickle)
    (tmp_path / "checkpoint.pt").write_bytes(buf.getvalue())
    net, (x, y) = _net(), _data()
    with pytest.raises(CheckpointError, match="Refusing to load checkpoint"):
        fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=1,
            batch_size=16, progress=False, checkpoint_dir=tmp_path)


def test_truncated_checkpoint_is_moved_aside_and_run_restarts(tmp_path, caplog):
    net, (x, y) = _net(), _data()
    fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=2,
        batch_size=16, progress=False, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100])
    net = _net()
    with caplog.at_level("WARNING"):
        state = fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=2,
                    batch_size=16, progress=False, checkpoint_dir=tmp_path)
    assert not state.resumed and len(state.history) == 2
    assert (tmp_path / "checkpoint.pt.damaged").is_file()
    assert "damaged" in caplog.text and "checkpoint.pt" in caplog.text
    assert load_checkpoint(path)["epoch"] == 2


def test_checkpoint_of_another_model_is_refused(tmp_path):
    (x, y) = _data()
    net = _net()
    fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=1,
        batch_size=16, progress=False, checkpoint_dir=tmp_path)
    other = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="another run"):
        fit(other, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(other.parameters(), lr=0.1), epochs=1,
            batch_size=16, progress=False, checkpoint_dir=tmp_path)


def test_nonfinite_loss_stops_with_last_good_state(tmp_path):
    (x, y) = _data()
    net = _net()
    good = None

    class Poison(Callback):
        def on_train_batch_end(self, state):
            nonlocal good
            if state.step == 5:
                good = _params(state.model).clone()
                with torch.no_grad():  # the next forward pass gives NaN
                    state.model[0].weight[0, 0] = float("nan")

    with pytest.raises(NonFiniteLossError, match="epoch 2") as info:
        fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=3,
            batch_size=16, progress=False, callbacks=[Poison()], checkpoint_dir=tmp_path)
    assert info.value.step == 5 and info.value.checkpoint == tmp_path / "last_good.pt"
    saved = torch.load(info.value.checkpoint, weights_only=True)
    assert saved["step"] == 5
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # resume point stays consistent
    assert torch.isnan(_params(net)).sum() == 1 and good is not None


def test_check_weights_restores_state_before_a_bad_update():
    (x, y) = _data()
    net = _net()

    class BadOpt(torch.optim.SGD):
        def step(self, closure=None):
            super().step(closure)
            if self.state.setdefault("calls", [0]):
                self.state["calls"][0] += 1
                if self.state["calls"][0] == 3:
                    with torch.no_grad():
                        next(iter(net.parameters())).fill_(float("inf"))

    with pytest.raises(NonFiniteLossError, match="weight became non-finite"):
        fit(net, nn.CrossEntropyLoss(), (x, y), BadOpt(net.parameters(), lr=0.1), epochs=2, batch_size=16,
            progress=False, check_weights=True)
    assert torch.isfinite(_params(net)).all()


def test_batch_loss_terms_and_dataloader_multi_input():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

        def forward(self, u, v):
            return self.a(u) + self.b(v)

    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(40, 3, generator=g), torch.randn(40, 2, generator=g)
    y = (u[:, 0] > 0).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(u, v, y), batch_size=8, shuffle=True)
    net = Two()
    ce = nn.CrossEntropyLoss()

    def objective(model, batch):
        out = model(*batch[:-1])
        penalty = 1e-3 * sum((p ** 2).sum() for p in model.parameters())
        return ce(out, batch[-1]) + penalty, {"penalty": penalty}

    state = fit(net, BatchLoss(objective), loader, torch.optim.SGD(net.parameters(), lr=0.1), epochs=2,
                progress=False, eval_data=loader)
    assert "penalty" in state.history[0] and state.history[0]["penalty"] > 0
    assert "eval_loss" in state.metrics and "eval_acc" not in state.metrics  # BatchLoss: no accuracy guessed
    state = fit(net, ce, loader, torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, progress=False,
                eval_data=loader)
    assert 0 <= state.metrics["eval_acc"] <= 1


def test_tensor_batches_min_batch_and_state():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    tb = TensorBatches((x, y), 4, seed=3, min_batch_size=3)
    assert len(tb) == 2 and [b[0].shape[0] for b in tb] == [4, 4]
    s = tb.state_dict()
    first = [b[1].tolist() for b in tb]
    tb.load_state_dict(s)
    assert [b[1].tolist() for b in tb] == first


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "net"}, "'model'"),
    ({"loss_fn": 3}, "'loss_fn'"),
    ({"optimizer": "sgd"}, "'optimizer'"),
    ({"epochs": 0}, "'epochs'"),
    ({"epochs": True}, "'epochs'"),
    ({"callbacks": [object()]}, "'callbacks'"),
    ({"train_data": torch.zeros(3)}, "'train_data'"),
    ({"train_data": iter([(torch.zeros(2, 3), torch.zeros(2).long())])}, "one-shot"),
    ({"batch_size": None}, "'batch_size'"),
    ({"checkpoint_every": 0}, "'checkpoint_every'"),
    ({"device": "gpu9"}, "'device'"),
])
def test_bad_input_names_the_argument(kwargs, match):
    net, (x, y) = _net(), _data()
    args = {"model": net, "loss_fn": nn.CrossEntropyLoss(), "train_data": (x, y),
            "optimizer": torch.optim.SGD(net.parameters(), lr=0.1), "epochs": 1, "batch_size": 8,
            "progress": False, **kwargs}
    with pytest.raises((TypeError, ValueError), match=match):
        fit(args.pop("model"), args.pop("loss_fn"), args.pop("train_data"), args.pop("optimizer"), **args)


def test_optimizer_of_another_model_is_refused():
    net, other, (x, y) = _net(), _net(), _data()
    with pytest.raises(ValueError, match="'optimizer' does not hold"):
        fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(other.parameters(), lr=0.1), epochs=1,
            batch_size=8, progress=False)


def test_lr_scheduler_callback_steps_and_resumes(tmp_path):
    from ibscope.training import LRSchedulerCallback

    (x, y) = _data()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    cb = LRSchedulerCallback(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), interval="epoch")
    fit(net, nn.CrossEntropyLoss(), (x, y), opt, epochs=2, batch_size=16, progress=False, callbacks=[cb],
        checkpoint_dir=tmp_path)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # halved after each of 2 epochs, not at epoch 0
    net2 = _net()
    opt2 = torch.optim.SGD(net2.parameters(), lr=1.0)
    cb2 = LRSchedulerCallback(torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5), interval="epoch")
    fit(net2, nn.CrossEntropyLoss(), (x, y), opt2, epochs=3, batch_size=16, progress=False, callbacks=[cb2],
        checkpoint_dir=tmp_path)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.125)  # resumed at epoch 2, one more halving
    per_step = LRSchedulerCallback(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    fit(net, nn.CrossEntropyLoss(), (x, y), opt, epochs=1, batch_size=16, progress=False, callbacks=[per_step])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25 * 0.5 ** 4)  # 4 steps of 16 rows
    with pytest.raises(ValueError, match="'interval'"):
        LRSchedulerCallback(per_step.scheduler, interval="batch")


# --------------------------------------------------------------------------- #
# callback state keyed by state_key (issue 22)
# --------------------------------------------------------------------------- #
class _Crash(Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, state):
        if state.epoch == self.at:
            raise KeyboardInterrupt


def _planes(net, x, y):
    from ibscope.tracking import InformationPlane

    return (InformationPlane(net, x, y, layers=["0"], estimators="binning"),
            InformationPlane(net, x, y, layers=["2"], estimators="binning"))


def test_swapped_planes_each_get_their_own_state_on_resume(tmp_path):
    (x, y), loss = _data(), nn.CrossEntropyLoss()
    net = _net()
    a, b = _planes(net, x, y)
    with pytest.raises(KeyboardInterrupt):
        fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=4, batch_size=16,
            progress=False, callbacks=[a, b, _Crash(3)], checkpoint_dir=tmp_path, checkpoint_every=1)
    net2 = _net(seed=5)
    a2, b2 = _planes(net2, x, y)
    fit(net2, loss, (x, y), torch.optim.SGD(net2.parameters(), lr=0.1), epochs=4, batch_size=16,
        progress=False, callbacks=[b2, a2, _Crash(99)], checkpoint_dir=tmp_path)  # the other order
    for plane, layer in ((a2, "0"), (b2, "2")):
        df = plane.results()
        assert set(df["layer"]) == {layer}  # by position, each would hold the other's rows
        assert sorted(df["epoch"].unique()) == [0, 1, 2, 3, 4]
    assert a.state_key != b.state_key and "fingerprint=" in a.state_key


def test_state_key_default_and_explicit():
    rec = Recorder()
    assert rec.state_key == f"{Recorder.__module__}.Recorder"
    rec.state_key = "mine"
    assert rec.state_key == "mine"
    with pytest.raises(TypeError, match="state_key"):
        rec.state_key = ""


def test_duplicate_state_keys_are_refused_and_explicit_keys_resume(tmp_path):
    (x, y), loss = _data(), nn.CrossEntropyLoss()
    net = _net()
    kw = dict(epochs=3, batch_size=16, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="same state_key .*Recorder.*explicit key"):
        fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), callbacks=[Recorder(), Recorder()], **kw)
    assert not (tmp_path / "checkpoint.pt").exists()  # refused before anything ran
    r1, r2 = Recorder(crash_at=2), Recorder()
    r1.state_key, r2.state_key = "first", "second"
    r2.seen = 50  # the two states differ: the checkpoint of epoch 1 holds first=2, second=52
    with pytest.raises(KeyboardInterrupt):
        fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), callbacks=[r2, r1], **kw)
    s1, s2 = Recorder(), Recorder()
    s1.state_key, s2.state_key = "first", "second"
    fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), callbacks=[s1, s2], **kw)  # swapped
    assert load_checkpoint(tmp_path / "checkpoint.pt")["callbacks"].keys() == {"first", "second"}
    assert (s1.seen, s2.seen) == (2 + 2, 52 + 2)  # epochs 0, 1 restored, then epochs 2 and 3


def test_unknown_and_missing_state_keys_warn(tmp_path):
    (x, y), loss = _data(), nn.CrossEntropyLoss()
    net = _net()
    kw = dict(batch_size=16, progress=False, checkpoint_dir=tmp_path)
    old = Recorder()
    old.state_key = "gone"
    fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=2, callbacks=[old], **kw)
    new = Recorder()
    new.state_key = "added"
    with pytest.warns(UserWarning) as rec:
        fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=3, callbacks=[new], **kw)
    text = " ".join(str(w.message) for w in rec)
    assert "'gone'" in text and "dropped" in text and "'added'" in text and "initial state" in text
    assert new.seen == 1  # not given the other callback's state: only epoch 3


def test_positional_checkpoint_of_older_ibscope_resumes_same_order(tmp_path):
    (x, y), loss = _data(), nn.CrossEntropyLoss()
    net = _net()
    kw = dict(batch_size=16, progress=False, checkpoint_dir=tmp_path)
    fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=2, callbacks=[Recorder()], **kw)
    path = tmp_path / "checkpoint.pt"
    payload = load_checkpoint(path)
    payload["callbacks"] = list(payload["callbacks"].values())  # the format before state_key
    torch.save(payload, path)
    rec = Recorder()
    with pytest.warns(UserWarning, match="by position"):
        fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=3, callbacks=[rec], **kw)
    assert rec.seen == 3 + 1
    payload = load_checkpoint(path)
    assert isinstance(payload["callbacks"], dict)  # rewritten keyed
    payload["callbacks"] = list(payload["callbacks"].values())
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="by position"):
        fit(net, loss, (x, y), torch.optim.SGD(net.parameters(), lr=0.1), epochs=4,
            callbacks=[Recorder(), _Crash(99)], **kw)


def test_tracker_state_keys_tell_trackers_apart(tmp_path):
    from ibscope.weights import WeightInformation

    x, y = _data()
    loss = nn.CrossEntropyLoss(reduction="none")
    a = WeightInformation(loss, (x, y), quantities=("iiw",))
    b = WeightInformation(loss, (x, y), quantities=("fisher",))
    c = WeightInformation(loss, (x, y), quantities=("iiw",), out_dir=tmp_path / "c")
    keys = {a.state_key, b.state_key, c.state_key}
    assert len(keys) == 3 and all(k.startswith("ibscope.weights.") for k in keys)
    assert str(tmp_path / "c") in c.state_key
    pl_int = pytest.importorskip("ibscope.integrations.lightning")
    wrapped = pl_int.IbscopeCallback(a)
    assert a.state_key in wrapped.state_key and wrapped.state_key != pl_int.IbscopeCallback(b).state_key
