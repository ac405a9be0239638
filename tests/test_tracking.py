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


# ----------------------------------------------------------- selectors, patterns, mappings, pooling


def _encoder(seed=0, d=8, layers=2):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(d, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).eval()


def _block_outputs(enc, x):
    """The outputs of enc.layers.i, computed by hand (no recorder)."""
    outs, h = [], x
    with torch.no_grad():
        for blk in enc.layers:
            h = blk(h)
            outs.append(h)
    return outs


def test_global_callable_selector_applies_to_tensor_layers():
    enc = _encoder()
    x = torch.randn(10, 5, 8)
    want = _block_outputs(enc, x)
    rec = ActivationRecorder(enc, x, layers=["layers.0", "layers.1"], output=lambda o: o[:, -1])
    acts, _ = rec.capture()
    for i in range(2):  # the last position of every layer, not the whole (5 x 8) output
        assert acts[f"layers.{i}"].shape == (10, 8)
        assert torch.allclose(acts[f"layers.{i}"], want[i][:, -1], atol=1e-5)
    # a global index on a layer returning a tensor would pick samples: refused, naming the layer
    with pytest.raises(ValueError, match=r"global 'output' selector 0 .* layer 'layers.0'"):
        ActivationRecorder(enc, x, layers=["layers.0"], output=0).capture()
    # a selector that fails on a layer's output is a ValueError naming the layer
    with pytest.raises(ValueError, match=r"does not apply to the output of layer 'layers.0'"):
        ActivationRecorder(enc, x, layers=["layers.0"], output=lambda o: o[:, :, :, 0]).capture()


def test_layer_patterns_and_per_layer_mappings():
    enc = _encoder()
    x = torch.randn(6, 5, 8)
    # '*' stays within one component: the blocks, not their submodules, in module order
    rec = ActivationRecorder(enc, x, layers="layers.*")
    assert rec.layers == ["layers.0", "layers.1"]
    assert ActivationRecorder(enc, x, layers=["layers.1", "layers.*"]).layers == ["layers.1", "layers.0"]
    assert ActivationRecorder(enc, x, layers="layers.*.linear?").layers == [
        "layers.0.linear1", "layers.0.linear2", "layers.1.linear1", "layers.1.linear2"]
    assert ActivationRecorder(enc, x, layers="**.norm2").layers == ["layers.0.norm2", "layers.1.norm2"]
    with pytest.raises(ValueError, match=r"Layer pattern 'blocks\.\*' .* matches no module"):
        ActivationRecorder(enc, x, layers="blocks.*")
    # per-layer mappings: keys are recorded layers or patterns over them; anything else is an error
    rec = ActivationRecorder(enc, x, layers="layers.*", output={"layers.*": lambda o: o[:, 0]},
                             pool={"layers.1": None})
    acts, _ = rec.capture()
    want = _block_outputs(enc, x)
    assert torch.allclose(acts["layers.1"], want[1][:, 0], atol=1e-5)
    with pytest.raises(ValueError, match=r"'output' maps name\(s\) \['norm'\] that are not recorded"):
        ActivationRecorder(enc, x, layers="layers.*", output={"norm": 0})
    with pytest.raises(ValueError, match=r"'pool' maps name\(s\) \['blocks.\*'\] .* matches none"):
        ActivationRecorder(enc, x, layers="layers.*", pool={"blocks.*": "mean"})
    with pytest.raises(ValueError, match="'pool' for layer 'layers.0'"):
        ActivationRecorder(enc, x, layers="layers.*", pool="max")


class _TupleOut(torch.nn.Module):
    """Returns (tensor, None) like a Hugging Face attention module, or a dict with one or two tensors."""

    def __init__(self, kind):
        super().__init__()
        self.kind, self.lin = kind, torch.nn.Linear(3, 4)

    def forward(self, x):
        h = self.lin(x)
        if self.kind == "tuple":
            return h, None
        return {"hidden": h, "cache": None} if self.kind == "dict" else {"hidden": h, "other": h * 2}


class _Wrap(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.block = _TupleOut(kind)

    def forward(self, x):
        return self.block(x)


def test_container_with_one_tensor_is_recorded_and_two_are_ambiguous():
    x = torch.randn(7, 3)
    for kind in ("tuple", "dict"):
        net = _Wrap(kind)
        acts, _ = ActivationRecorder(net, x, layers=["block"]).capture()
        with torch.no_grad():
            assert torch.allclose(acts["block"], net.block.lin(x), atol=1e-6)
    with pytest.raises(TypeError, match=r"Layer 'block' returns a dict .* holds 2 tensors.*output="):
        ActivationRecorder(_Wrap("two"), x, layers=["block"]).capture()
    acts, _ = ActivationRecorder(_Wrap("two"), x, layers=["block"], output="other").capture()
    assert acts["block"].shape == (7, 4)


class _Tokens(torch.nn.Module):
    """A toy token model called with keywords: embeddings (batch, seq, 4) and a causal running sum."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(20, 4)
        self.mix = torch.nn.Identity()

    def forward(self, input_ids, attention_mask=None, labels=None):
        if labels is not None:
            raise AssertionError("labels must not reach the model")
        h = self.emb(input_ids)
        return self.mix(h.cumsum(1))


def _padded(n=9, seq=6, left=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, seq + 1, (n,), generator=g)
    pos = torch.arange(seq)
    mask = (pos >= seq - lengths[:, None]) if left else (pos < lengths[:, None])
    ids = torch.randint(1, 20, (n, seq), generator=g) * mask
    return ids, mask.long(), lengths


@pytest.mark.parametrize("left", [True, False])
def test_pooling_respects_the_attention_mask(left):
    net = _Tokens()
    ids, mask, lengths = _padded(left=left)
    with torch.no_grad():
        h = net.emb(ids).cumsum(1)
    last = torch.stack([h[i, (mask[i].nonzero().max())] for i in range(len(ids))])
    mean = torch.stack([h[i][mask[i].bool()].mean(0) for i in range(len(ids))])
    batch = {"input_ids": ids, "attention_mask": mask}
    rec = ActivationRecorder(net, batch, layers=["emb", "mix"], pool={"mix": "last", "emb": "mean"},
                             batch_size=4)
    acts, _ = rec.capture(inputs=True)
    assert torch.allclose(acts["mix"], last, atol=1e-6)
    assert torch.allclose(acts["emb"], torch.stack([net.emb(ids[i][mask[i].bool()]).mean(0)
                                                    for i in range(len(ids))]).detach(), atol=1e-6)
    # the flattened inputs: one column per position, the id where unmasked and -1 where padded
    assert torch.equal(acts["__input__"].long(), torch.where(mask.bool(), ids, -1))
    mean_rec = ActivationRecorder(net, batch, layers="mix", pool="mean").capture()[0]["mix"]
    assert torch.allclose(mean_rec, mean, atol=1e-6)
    cls = ActivationRecorder(net, batch, layers="mix", pool="cls")
    if left:  # position 0 is padding in some sequences: refused, never pooled silently
        with pytest.raises(ValueError, match="pool='cls' for layer 'mix' .* padding"):
            cls.capture()
    else:
        assert torch.allclose(cls.capture()[0]["mix"], h[:, 0], atol=1e-6)
    # without pooling a token-level layer is its full flattened width
    assert ActivationRecorder(net, batch, layers="mix").widths() == {"mix": 6 * 4}
    # a pool on a layer that is not (batch, seq, hidden) is refused
    with pytest.raises(ValueError, match="pool='last' for layer 'mix' needs a \\(batch, seq, hidden\\)"):
        ActivationRecorder(net, batch, layers="mix", pool="last", output=lambda o: o[:, 0]).capture()


def test_pooling_without_mask_uses_every_position():
    enc = _encoder()
    x = torch.randn(6, 5, 8)
    want = _block_outputs(enc, x)
    acts, _ = ActivationRecorder(enc, x, layers="layers.*", pool="mean").capture()
    assert torch.allclose(acts["layers.1"], want[1].mean(1), atol=1e-5)


def test_mapping_inputs_and_loaders_of_mappings():
    from torch.utils.data import DataLoader

    net = _Tokens()
    ids, mask, _ = _padded(n=10)
    labels = torch.arange(10) % 3
    rows = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(10)]
    loader = DataLoader(rows, batch_size=4)
    rec = ActivationRecorder(net, loader, layers="mix", pool="last", labels_in_batches=True)
    acts, got = rec.capture()
    assert torch.equal(got, labels) and acts["mix"].shape == (10, 4)
    whole = ActivationRecorder(net, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                               layers="mix", pool="last", labels_in_batches=True, batch_size=3)
    acts2, got2 = whole.capture()
    assert whole.n_samples == 10 and torch.equal(got2, labels)
    assert torch.allclose(acts["mix"], acts2["mix"], atol=1e-6)
    with pytest.raises(TypeError, match="'labels' or 'label'"):
        ActivationRecorder(net, {"input_ids": ids}, labels_in_batches=True)
    # labels given separately: a labels entry would reach the model, so it is refused
    with pytest.raises(ValueError, match="'labels' entry, which would be passed to the model"):
        ActivationRecorder(net, {"input_ids": ids, "labels": labels})
    with pytest.raises(ValueError, match="'label' entry"):
        ActivationRecorder(net, [{"input_ids": ids, "label": labels}])
    with pytest.raises(ValueError, match="different numbers of samples"):
        ActivationRecorder(net, {"input_ids": ids, "attention_mask": mask[:5]})
    with pytest.raises(TypeError, match=r"entries \['attention_mask'\] are not"):
        ActivationRecorder(net, {"input_ids": ids, "attention_mask": mask.tolist()})
    # dynamic padding: an unpooled token layer would change width between batches
    short = [{"input_ids": ids[:4, :3]}, {"input_ids": ids[4:, :]}]
    assert ActivationRecorder(net, short).n_samples == 10  # a list of batches is counted up front
    with pytest.raises(ValueError, match="layer 'mix' different widths \\(12 and 24\\)"):
        ActivationRecorder(net, short, layers="mix").capture()
    assert ActivationRecorder(net, short, layers="mix", pool="last").capture()[0]["mix"].shape == (10, 4)


def test_max_bytes_is_never_exceeded():
    net = _Tokens()
    ids, mask, _ = _padded(n=40)
    batch = {"input_ids": ids, "attention_mask": mask}
    full = 40 * 6 * 4 * 4  # float32, seq x hidden per sample
    acts, _ = ActivationRecorder(net, batch, layers="mix", max_bytes=full, batch_size=8).capture()
    assert acts["mix"].shape == (40, 24)
    with pytest.raises(ValueError, match=r"layer 'mix' would hold more than max_bytes=3839"):
        ActivationRecorder(net, batch, layers="mix", max_bytes=full - 1, batch_size=8).capture()
    # pooling or a projection brings it under the budget
    ActivationRecorder(net, batch, layers="mix", max_bytes=full // 6, pool="mean", batch_size=8).capture()
    ActivationRecorder(net, batch, layers="mix", max_bytes=full // 6, max_features=4, batch_size=8).capture()


def test_plane_groups_token_layers_by_their_flattened_width():
    from ibscope.tracking import InformationPlane

    net = _Tokens()
    ids, mask, _ = _padded(n=40)
    y = torch.arange(40) % 2
    batch = {"input_ids": ids, "attention_mask": mask}
    one = 40 * 24 * 4
    plane = InformationPlane(net, batch, y, layers=["emb", "mix"], max_bytes=one, max_features=None,
                             estimators="kde_upper", batch_size=16)
    assert plane.recorder.widths() == {"emb": 24, "mix": 24}
    assert plane._groups() == [["emb"], ["mix"]]
    pooled = InformationPlane(net, batch, y, layers=["emb", "mix"], max_bytes=one, pool="last",
                              estimators="kde_upper")
    assert pooled._groups() == [["emb", "mix"]]
    assert len(pooled.record(0)) == 2
    too_small = InformationPlane(net, batch, y, layers="mix", max_bytes=one - 1, max_features=None,
                                 estimators="kde_upper", batch_size=16)
    with pytest.raises(ValueError, match="layer 'mix' would hold more than max_bytes"):
        too_small.record(0)
