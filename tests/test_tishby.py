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


def test_interrupted_run_resumes_to_identical_results(tmp_path, monkeypatch):
    cfg = Config(epochs=40, n_snapshots=8, hidden=[10, 7, 5], estimators={"binning": {}})
    reference = run_seed(cfg, 1, tmp_path / "ref")

    calls = {"n": 0}
    original = ActivationRecorder.record

    def flaky(self, epoch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return original(self, epoch)

    monkeypatch.setattr(ActivationRecorder, "record", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_seed(cfg, 1, tmp_path / "cut")
    kept = pd.read_parquet(tmp_path / "cut" / "infoplane.parquet")
    assert kept["epoch"].nunique() == 4  # every finished snapshot survived
    assert ActivationRecorder.epochs_on_disk(tmp_path / "cut" / "activations") == sorted(kept["epoch"].unique())

    calls["n"] = -10**6  # no more interruptions; count recomputed snapshots
    resumed = run_seed(cfg, 1, tmp_path / "cut")
    assert calls["n"] == -10**6 + (reference["epoch"].nunique() - 4)  # finished snapshots not recomputed
    cols = ["epoch", "layer", "estimator", "i_xt", "i_ty", "train_acc", "test_acc"]
    pd.testing.assert_frame_equal(resumed[cols].reset_index(drop=True), reference[cols].reset_index(drop=True))


def test_bad_config_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="Unknown activation 'tahn'"):
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
