"""The 12-bit information-plane experiment end to end."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from ibscope.cli import main
from ibscope.experiments import _tishby, runner
from ibscope.experiments._tishby import Config, run_seed
from ibscope.tracking import ActivationRecorder
from ibscope.training import CheckpointError, load_checkpoint

H_Y = 0.99916  # bits, the 12-bit task's label entropy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short but real run: 600 epochs of the paper's network, 80% training fraction."""
    cfg = Config(epochs=600, n_snapshots=12, train_fraction=0.8, keep_activations=False,
                 estimators={"binning": {}, "adaptive_binning": {}, "kde_upper": {}})
    return run_seed(cfg, 0, tmp_path_factory.mktemp("run"))


def test_plane_values_within_information_bounds(trained):
    assert set(trained["estimator"]) == {"binning", "adaptive_binning", "kde_upper"}
    assert trained["unit"].eq("bits").all()
    assert (trained["i_xt"] <= 12 + 1e-9).all() and (trained["i_xt"] >= 0).all()
    assert (trained["i_ty"] <= H_Y + 1e-6).all() and (trained["i_ty"] >= 0).all()
    # data processing: the first hidden layer holds at least what the output holds
    last = trained[trained["epoch"] == 600]
    b = last[last["estimator"] == "binning"].set_index("layer")
    assert b.loc["hidden1", "i_ty"] >= b.loc["output", "i_ty"] - 1e-9


def test_last_hidden_layer_learns_the_label(trained):
    last = trained[(trained["epoch"] == 600) & (trained["layer"] == "hidden5")]
    assert (last.set_index("estimator").loc[["binning", "adaptive_binning"], "i_ty"] > 0.7).all()
    first = trained[(trained["epoch"] == 0) & (trained["layer"] == "hidden5") & (trained["estimator"] == "binning")]
    assert float(first["i_ty"].iloc[0]) < 0.7  # it was learned, not there at initialization
    assert trained.loc[trained["epoch"] == 600, "test_acc"].iloc[0] > 0.85


SMALL = dict(epochs=40, n_snapshots=8, hidden=[10, 7, 5], estimators={"binning": {}})
COLS = ["epoch", "layer", "estimator", "i_xt", "i_ty", "train_acc", "test_acc"]


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    """An uninterrupted run of the small setting (seed 1)."""
    return run_seed(Config(**SMALL), 1, tmp_path_factory.mktemp("ref"))


def _interrupt_at_call(monkeypatch, n):
    """Make the n-th ActivationRecorder.record call (from the snapshot callback) raise KeyboardInterrupt."""
    calls = {"n": 0}
    original = ActivationRecorder.record

    def flaky(self, epoch):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return original(self, epoch)

    monkeypatch.setattr(ActivationRecorder, "record", flaky)
    return calls


def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch, small_reference):
    cfg, reference = Config(**SMALL), small_reference
    calls = _interrupt_at_call(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        run_seed(cfg, 1, tmp_path / "cut")
    kept = pd.read_parquet(tmp_path / "cut" / "infoplane.parquet")
    assert kept["epoch"].nunique() == 4  # every finished snapshot survived
    assert ActivationRecorder.epochs_on_disk(tmp_path / "cut" / "activations") == sorted(kept["epoch"].unique())
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == sorted(kept["epoch"].unique())[-1]

    calls["n"] = -10**6  # no more interruptions; count recomputed snapshots
    resumed = run_seed(cfg, 1, tmp_path / "cut")
    assert calls["n"] == -10**6 + (reference["epoch"].nunique() - 4)  # finished snapshots not recomputed
    pd.testing.assert_frame_equal(resumed[COLS].reset_index(drop=True), reference[COLS].reset_index(drop=True))


def test_truncated_checkpoint_restarts_the_seed_cleanly(tmp_path, monkeypatch, caplog, small_reference):
    cfg = Config(**SMALL)
    calls = _interrupt_at_call(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        run_seed(cfg, 1, tmp_path)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # e.g. the disk filled up under a non-atomic copy
    calls["n"] = -10**6
    with caplog.at_level("WARNING"):
        again = run_seed(cfg, 1, tmp_path)  # no EOFError on every retry: detected, said, restarted
    assert "damaged" in caplog.text and (tmp_path / "checkpoint.pt.damaged").is_file()
    assert load_checkpoint(ckpt)["epoch"] == cfg.epochs
    pd.testing.assert_frame_equal(again[COLS].reset_index(drop=True),
                                  small_reference[COLS].reset_index(drop=True))


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_interrupted_run_on_cuda_resumes_to_identical_results(tmp_path, monkeypatch):
    """The checkpoint's generator state is read back on the CPU even when training runs on the GPU."""
    cfg = Config(**{**SMALL, "device": "cuda"})
    reference = run_seed(cfg, 1, tmp_path / "ref")
    calls = _interrupt_at_call(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        run_seed(cfg, 1, tmp_path / "cut")
    calls["n"] = -10**6
    resumed = run_seed(cfg, 1, tmp_path / "cut")
    pd.testing.assert_frame_equal(resumed[COLS].reset_index(drop=True), reference[COLS].reset_index(drop=True))


def test_planted_or_foreign_checkpoint_is_refused(tmp_path):
    import io
    import pickle

    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"format": "ibscope.fit/1", "x": Evil()}, buf, pickle_module=pickle)
    (tmp_path / "planted").mkdir()
    (tmp_path / "planted" / "checkpoint.pt").write_bytes(buf.getvalue())
    cfg = Config(**{**SMALL, "epochs": 3, "n_snapshots": 2})
    with pytest.raises(CheckpointError, match="Refusing to load checkpoint"):
        run_seed(cfg, 0, tmp_path / "planted")
    # the format written before the experiments trained through fit: said so, not guessed at
    (tmp_path / "old").mkdir()
    torch.save({"model": {}, "optimizer": {}, "generator": torch.Generator().get_state(), "epoch": 2},
               tmp_path / "old" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not an ibscope fit checkpoint"):
        run_seed(cfg, 0, tmp_path / "old")


def test_unbounded_layers_get_fixed_width_bins():
    from ibscope.estimators import Binning

    est = _tishby._layer_estimator("binning", {"n_bins": 30}, "relu", "bits")
    assert est.value_range is None and est.bin_width == pytest.approx(2 / 30)
    tanh = _tishby._layer_estimator("binning", {"n_bins": 30}, "tanh", "bits")
    assert tanh.value_range == (-1.0, 1.0) and tanh.bin_width is None
    explicit = _tishby._layer_estimator("binning", {"bin_width": 0.5}, "tanh", "bits")
    assert explicit.bin_width == 0.5 and explicit.value_range is None
    # fixed width: small ReLU activations fall into few bins, as the same values must whatever the
    # snapshot's spread; per-snapshot min/max bins would be blind to the scale (the Saxe artefact)
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.standard_normal((4096, 3)), 0)
    y = (acts[:, 0] > 0.5).astype(int)
    big, small = est.plane(acts, y)[0], est.plane(0.05 * acts, y)[0]
    stretch = Binning(n_bins=30)
    assert stretch.plane(acts, y)[0] == pytest.approx(stretch.plane(0.05 * acts, y)[0])
    assert small < big - 1.0


def test_bad_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="'activation' parameter of the tishby Config"):
        runner.resolve_config("tishby", overrides={"activation": "tahn"})
    with pytest.raises(ValueError, match="cannot give an information plane"):
        runner.resolve_config("tishby", overrides={"estimators": {"discrete": {}}})
    with pytest.raises(ValueError, match="Unknown estimator 'bining'"):
        runner.resolve_config("tishby", overrides={"estimators": {"bining": {}}})
    with pytest.raises(FileNotFoundError, match="var_u.mat"):
        runner.resolve_config("tishby", overrides={"data": str(tmp_path / "var_u.mat")})
    with pytest.raises(ValueError, match="Unknown setting"):
        runner.resolve_config("tishby", overrides={"epoch": 3})
    with pytest.raises(ValueError, match="Unknown profile"):
        runner.resolve_config("tishby", profile="huge")


@pytest.mark.slow  # ~19 s; the CLI with default flags stays in the fast suite (test_cli_experiments)
def test_cli_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "tishby", "--profile", "test", "--seeds", "2", "--out", str(out), "--no-progress",
            "--estimator", "binning", "--estimator", "kde_upper"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "infoplane.png" in html and "bits" in html
    res = pd.read_parquet(out / "results.parquet")
    assert set(res["seed"]) == {0, 1} and res["config_hash"].nunique() == 1
    assert {"run_id", "seed", "epoch", "layer", "estimator", "i_xt", "i_ty", "unit", "train_loss",
            "train_acc", "test_loss", "test_acc", "config_hash"} <= set(res.columns)
    stamp = (out / "seed_0" / "result.parquet").stat().st_mtime_ns
    assert main(args) == 0  # resume: finished seeds are not recomputed
    assert (out / "seed_0" / "result.parquet").stat().st_mtime_ns == stamp
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").is_file()
    # the same directory with another config is refused
    assert main([*args[:-4], "--epochs", "7"]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["experiment"] == "tishby"


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["run", "tishby", "--estimator", "nope", "--out", str(tmp_path)]) == 2
    assert "Unknown estimator 'nope'" in capsys.readouterr().err
    assert main(["run", "tishby", "--data", str(tmp_path / "missing.mat"), "--out", str(tmp_path)]) == 2
    assert "var_u.mat" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_original_file_gives_same_run_as_generator(tmp_path, shared_data):
    path = shared_data / "var_u.mat"
    if not path.is_file():
        pytest.skip("var_u.mat not in shared data")
    cfg = dict(epochs=5, n_snapshots=2, hidden=[5], estimators={"binning": {}}, keep_activations=False)
    a = run_seed(Config(**cfg), 0, tmp_path / "a")
    b = run_seed(Config(data=str(path), **cfg), 0, tmp_path / "b")
    assert np.allclose(a["i_ty"], b["i_ty"]) and math.isclose(_tishby.label_entropy(Config()), H_Y, abs_tol=5e-6)


@pytest.mark.slow
def test_paper_setup_full_run(tmp_path):
    """The paper's full setup (8000 epochs, 300 snapshots, 80% training fraction), one seed."""
    cfg = Config(keep_activations=False)  # every default is the paper's
    res = run_seed(cfg, 0, tmp_path)
    assert res["epoch"].nunique() == 300 and res["epoch"].max() == 8000
    assert (res["i_xt"] <= 12 + 1e-9).all() and (res["i_ty"] <= H_Y + 1e-6).all()
    last = res[(res["epoch"] == 8000) & (res["layer"] == "hidden5")].set_index("estimator")
    assert (last["i_ty"] > 0.7).all()
    # the late phase compresses the output layer under fixed binning: I(X;T) falls from its peak
    out = res[(res["estimator"] == "binning") & (res["layer"] == "output")].set_index("epoch")["i_xt"]
    assert out.loc[8000] < out.max()
