"""Run and sweep directories are untrusted data (issue 22): no write outside them, clear errors naming the file."""

from __future__ import annotations

import json
import os
import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch

# store helpers by attribute (store.x): each test fails on its own on code without them
from ibscope import experiments, store
from ibscope.cli import main
from ibscope.experiments import runner
from ibscope.store import read_json, write_checked_parquet
from ibscope.sweep import SweepSpec, build_sweep_report, run_sweep

TOY = "_sweep_toy"  # tests/_sweep_toy.py: milliseconds per seed
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def toy():
    experiments.allow_module(TOY)
    yield TOY
    experiments._ALLOWED.discard(TOY)


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    return victim


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------- figures never follow links


def test_save_figure_replaces_a_planted_link_never_follows_it(tmp_path):
    from ibscope.plots import pyplot, save_figure

    victim = _victim(tmp_path)
    run = tmp_path / "R"
    run.mkdir()
    (run / "fig.png").symlink_to(victim)
    fig, ax = pyplot().subplots()
    ax.plot([0, 1], [1, 0])
    assert save_figure(fig, run / "fig.png", dpi=30) == run / "fig.png"
    assert victim.read_text() == "precious"
    assert not (run / "fig.png").is_symlink() and (run / "fig.png").read_bytes().startswith(PNG)
    assert [p.name for p in run.iterdir()] == ["fig.png"]  # no temporary file left behind


def test_report_of_a_tracker_dir_never_writes_through_planted_figure_links(tmp_path, capsys):
    from test_report import _tracker_dir  # tests/ is on sys.path (rootdir conftest-less import)

    victim = _victim(tmp_path)
    d = _tracker_dir(tmp_path / "R")
    for name in ("information_plane.png", "information_curves.png", "weight_information.png"):
        (d / name).symlink_to(victim)
    assert main(["report", str(d)]) == 0
    assert victim.read_text() == "precious"
    assert "precious" not in (d / "report.html").read_text()
    assert not (d / "information_plane.png").is_symlink()


def test_report_never_embeds_the_target_of_a_planted_figure_link(tmp_path):
    import base64

    from ibscope.report import Section, render_report

    secret = tmp_path / "id_rsa"
    secret.write_bytes(PNG + b"SECRET-KEY-MATERIAL")
    run = tmp_path / "R"
    run.mkdir()
    (run / "fig.png").symlink_to(secret)
    (run / "notes.png").write_text("not an image")
    page = render_report(run / "report.html", title="t",
                         sections=[Section("Figures", figures=[run / "fig.png", run / "notes.png"])]).read_text()
    assert base64.b64encode(secret.read_bytes()).decode()[:16] not in page
    assert page.count("not a PNG file that ibscope wrote") == 2


# --------------------------------------------------------------------------- names from data


@pytest.mark.parametrize("value", ["../../../x", "/etc/passwd", "..", ".hidden", "a/b", "a\\b", "a\x00b", " ",
                                   "", "é", "x" * 300, "-rf"])
def test_safe_name_never_is_a_path(value):
    name = store.safe_name(value, what="dataset")
    assert name and "/" not in name and "\\" not in name and "\x00" not in name and ".." not in name
    assert not name.startswith((".", "-")) and len(name) <= 80
    assert re.fullmatch(r"[A-Za-z0-9_.+-]+", name)


def test_safe_name_keeps_ordinary_values_and_distinct_values_apart():
    assert store.safe_name("mnist") == "mnist" and store.safe_name("12bit") == "12bit"
    assert store.safe_name(3) == "3"
    assert store.safe_name("a/b") != store.safe_name("a_b") != store.safe_name("a b")
    assert store.safe_name("../x") != store.safe_name("../../x")


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_ntk_figure_name_from_table_data_stays_in_the_run_dir(tmp_path):
    from ibscope.experiments import _ntk

    run = tmp_path / "a" / "b" / "R"
    rows = [{"dataset": "../../../x", "t": t, "source": "infinite", "quantity": "ixz_upper", "split": "train",
             "value": 1.0 + t, "seed": 0} for t in (0.1, 1.0, 10.0)]
    (run / "ntk_..").mkdir(parents=True)  # then 'ntk_../../../x.png' would be tmp_path/a/b/x.png
    paths = _ntk.plot(pd.DataFrame(rows), run)
    assert [p.parent for p in tmp_path.rglob("*.png")] == [run]
    assert len(paths) == 1 and paths[0].parent == run and paths[0].is_file()


def test_ib_compare_figure_name_from_table_data_stays_in_the_run_dir(tmp_path):
    from ibscope.experiments import _ib_compare

    run = tmp_path / "a" / "R"
    rows = [{"dataset": "../../../x", "method": m, "seed": s, "quantity": q, "value": v, "unit": u}
            for m in ("vanilla", "vib") for s in (0, 1)
            for q, v, u in (("test_accuracy", 0.9 + 0.01 * s, "none"), ("iiw", 2.0 + s, "bits"))]
    (run / "ib_compare_..").mkdir(parents=True)  # then "ib_compare_../../../x.png" is tmp_path/a/x.png
    paths = _ib_compare.plot(pd.DataFrame(rows), run)
    assert [p.parent for p in tmp_path.rglob("*.png")] == [run]
    assert len(paths) == 1 and paths[0].parent == run and paths[0].is_file()


# --------------------------------------------------------------------------- HTML escapes every value


def _verdict_record(**changes):
    rec = {"claim": "c", "paper": "p", "profile": "quick", "seeds": 2, "runs": {"main": "runs/x"},
           "statistic": {"name": "s", "params": {}, "unit": "bits"},
           "verdict": {"verdict": "reproduced", "estimate": 1.0, "low": 0.5, "high": 1.5, "level": 0.95, "n": 2,
                       "interval": "t", "reason": "because", "details": {}},
           "power": None}
    for k, v in changes.items():
        if k.startswith("v_"):
            rec["verdict"][k[2:]] = v
        else:
            rec[k] = v
    return rec


def _claim_dir(out):
    from ibscope.reproduce import catalogue

    cid = next(iter(catalogue()))
    d = out / "claims" / cid
    d.mkdir(parents=True)
    return cid, d


def test_catalogue_escapes_planted_markup(tmp_path):
    from ibscope.reproduce import build_catalogue_report

    out = tmp_path / "repro"
    _, d = _claim_dir(out)
    script = "<script>alert(1)</script>"
    (d / "verdict.json").write_text(json.dumps(_verdict_record(
        profile=script, v_interval=script, v_reason=script, v_verdict=script,
        statistic={"unit": script}, runs={script: "runs/x"})))
    page = build_catalogue_report(out).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize("change, key", [
    ({"v_low": "drop"}, "verdict.low"), ({"v_n": "<script>"}, "verdict.n"), ({"profile": 3}, "profile"),
    ({"runs": []}, "runs"), ({"statistic": {}}, "statistic.unit"), ({"verdict": [1]}, "verdict"),
])
def test_catalogue_names_the_damaged_verdict_and_key(tmp_path, change, key):
    from ibscope.reproduce import build_catalogue_report

    out = tmp_path / "repro"
    _, d = _claim_dir(out)
    rec = _verdict_record(**change)
    if change.get("v_low") == "drop":
        del rec["verdict"]["low"]
    (d / "verdict.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=rf"verdict '.*verdict\.json' is damaged.*'{re.escape(key)}'"):
        build_catalogue_report(out)


def test_catalogue_never_embeds_a_planted_link_or_links_outside(tmp_path):
    from ibscope.reproduce import build_catalogue_report

    out = tmp_path / "repro"
    _, d = _claim_dir(out)
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG + b"SECRET-KEY-MATERIAL")
    (d / "replicates.png").symlink_to(secret)
    (d / "verdict.json").write_text(json.dumps(_verdict_record()))
    page = build_catalogue_report(out).read_text()
    import base64

    assert base64.b64encode(secret.read_bytes()).decode()[:20] not in page
    (d / "verdict.json").write_text(json.dumps(_verdict_record(runs={"main": "../../.."})))
    with pytest.raises(ValueError, match=r"run 'main' points to '\.\./\.\./\.\.', not to a directory inside"):
        build_catalogue_report(out)


def test_run_report_escapes_markup_in_a_results_table(tmp_path, toy):
    out = runner.run(toy, seeds=[0], out_dir=tmp_path / "R", progress=False, report=False)
    df = pd.read_parquet(out / "seed_0" / "result.parquet")
    df["flags"] = "<script>alert(1)</script>"
    write_checked_parquet(out / "seed_0" / "result.parquet", df,
                          read_json(out / "seed_0" / "result.json", what="sidecar"))
    page = runner.build_run_report(out).read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --------------------------------------------------------------------------- tensor files


def _planted_pickle(path):
    path.write_bytes(pickle.dumps({"prior": os.getcwd}, protocol=2))  # a global reference: weights_only refuses it


def test_planted_pickle_prior_is_refused_naming_the_file(tmp_path):
    from ibscope.weights import WeightInformation

    d = tmp_path / "R"
    d.mkdir()
    _planted_pickle(d / "weight_information_prior_seed0.pt")
    x, y = torch.randn(8, 3), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"prior '.*weight_information_prior_seed0\.pt' is not a tensor file "
                                         r"that ibscope wrote") as info:
        WeightInformation(torch.nn.functional.cross_entropy, (x, y), out_dir=d)
    assert "weights_only" not in str(info.value) and "overwrite=True" in str(info.value)


def test_load_tensor_file_refuses_pickles_and_names_truncated_files(tmp_path):
    _planted_pickle(tmp_path / "a.pt")
    with pytest.raises(store.UnsafeTensorFile, match=r"'.*a\.pt' is not a tensor file that ibscope wrote") as info:
        store.load_tensor_file(tmp_path / "a.pt", what="the thing")
    assert "weights_only" not in str(info.value)
    torch.save({"w": torch.arange(100.0)}, tmp_path / "b.pt")
    assert torch.equal(store.load_tensor_file(tmp_path / "b.pt")["w"], torch.arange(100.0))
    _truncate(tmp_path / "b.pt")
    with pytest.raises(ValueError, match=r"'.*b\.pt' is not a tensor file .*truncated"):
        store.load_tensor_file(tmp_path / "b.pt")
    with pytest.raises(FileNotFoundError, match="c.pt"):
        store.load_tensor_file(tmp_path / "c.pt")


def test_sgld_index_cannot_name_files_outside_its_directory(tmp_path):
    from ibscope.objectives import PosteriorEnsemble

    victim = _victim(tmp_path)
    d = tmp_path / "samples"
    d.mkdir()
    (d / "index.json").write_text(json.dumps({"files": ["../victim.txt"], "counter": 0, "n_steps": 0}))
    with pytest.raises(ValueError, match=r"index '.*index\.json' is damaged: it names '\.\./victim\.txt'"):
        PosteriorEnsemble(torch.nn.Linear(2, 2), directory=d, max_samples=1)
    (d / "index.json").write_text(json.dumps({"files": [], "counter": 0}))
    with pytest.raises(ValueError, match="lacks the key 'n_steps'"):
        PosteriorEnsemble(torch.nn.Linear(2, 2), directory=d)
    assert victim.read_text() == "precious"


# --------------------------------------------------------------------------- JSON sidecars


def test_read_json_checks_required_keys_and_types(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"a": 1, "b": "s", "c": True, "d": 1}))
    assert read_json(p, what="it", required={"a": int, "b": str, "d": float})["a"] == 1
    with pytest.raises(ValueError, match=r"It '.*x\.json' is damaged: it lacks the key 'z'.*Hint\."):
        read_json(p, what="it", hint="Hint.", required={"z": int})
    with pytest.raises(ValueError, match="key 'b' holds a JSON string, not a number"):
        read_json(p, what="it", required={"b": int})
    with pytest.raises(ValueError, match="key 'c' holds a JSON boolean, not a number"):
        read_json(p, what="it", required={"c": int})


def test_run_report_names_a_config_without_experiment(tmp_path, toy, capsys):
    out = runner.run(toy, seeds=[0], out_dir=tmp_path / "R", progress=False, report=False)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["experiment"]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config '.*config\.json' is damaged: it lacks the key 'experiment'"):
        runner.build_run_report(out)
    assert main(["report", str(out)]) == 2
    assert "lacks the key 'experiment'" in capsys.readouterr().err


def test_sweep_report_names_a_record_without_grid(tmp_path, toy):
    d = tmp_path / "sw"
    assert run_sweep(SweepSpec(toy, grid={"scale": [1.0, 2.0]}, seeds=1), d, workers=0, progress=False,
                     report=False).ok
    meta = json.loads((d / "sweep.json").read_text())
    del meta["grid"]
    (d / "sweep.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"record '.*sweep\.json' is damaged: it lacks the key 'grid'"):
        build_sweep_report(d)


def _tiny_plane(out_dir, **kw):
    from ibscope import InformationPlane

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = (x[:, 0] > 0).long()
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    return InformationPlane(net, x, y, layers=["1"], estimators="binning", out_dir=out_dir, **kw)


@pytest.mark.parametrize("text, why", [('{"format": "ibscope.information_pl', "not valid JSON"),
                                       ("[1, 2]", "holds a JSON list, not a dict")])
def test_plane_resume_names_a_damaged_sidecar(tmp_path, text, why):
    _tiny_plane(tmp_path).record(0)
    (tmp_path / "information_plane.json").write_text(text)
    with pytest.raises(ValueError, match=rf"sidecar '.*information_plane\.json' is damaged: {why}.*overwrite=True"):
        _tiny_plane(tmp_path)


def test_plane_resume_refuses_an_edited_part(tmp_path):
    _tiny_plane(tmp_path).record(0)  # not compacted: the rows are in a part
    (part,) = (tmp_path / "information_plane.parts").glob("*.parquet")
    df = pd.read_parquet(part)
    df["i_xt"] = df["i_xt"] + 1.0
    df.to_parquet(part, index=False)
    with pytest.raises(ValueError, match=r"does not match its sidecar.*overwrite=True"):
        _tiny_plane(tmp_path)


def test_plane_resume_refuses_an_edited_table(tmp_path):
    plane = _tiny_plane(tmp_path)
    plane.record(0)
    plane.compact()  # the rows now in information_plane.parquet
    table = tmp_path / "information_plane.parquet"
    df = pd.read_parquet(table)
    df["i_xt"] = df["i_xt"] + 1.0  # a valid Parquet file, edited outside ibscope
    df.to_parquet(table, index=False)
    with pytest.raises(ValueError, match=r"table '.*information_plane\.parquet' .*does not match its sidecar.*"
                                         r"overwrite=True"):
        _tiny_plane(tmp_path)
    assert _tiny_plane(tmp_path, overwrite=True).epochs_done() == []
    assert _tiny_plane(tmp_path).epochs_done() == []  # the remedy leaves a consistent directory


# --------------------------------------------------------------------------- --out that is a file


@pytest.mark.parametrize("cmd", [["run", TOY, "--allow-module", TOY], ["sweep", "SPEC"],
                                 ["reproduce", "--all", "--profile", "quick"]])
def test_cli_out_that_is_a_file_is_a_clear_error(tmp_path, capsys, cmd, toy):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"experiment: {TOY}\ngrid: {{scale: [1.0]}}\n")
    host = tmp_path / "hostname"
    host.write_text("h\n")
    cmd = [str(spec) if c == "SPEC" else c for c in cmd]
    for out, what in ((host, "is a file, not a directory"), (host / "sub", "above it is a file")):
        assert main([*cmd, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"'--out' '{out}'" in err and what in err and "Traceback" not in err
    assert host.read_text() == "h\n"


# --------------------------------------------------------------------------- damaged results are never dropped


def test_run_report_refuses_a_truncated_seed_and_the_remedy_works(tmp_path, toy, capsys):
    out = runner.run(toy, seeds=[0, 1, 2], out_dir=tmp_path / "R", progress=False, report=True)
    rows = len(pd.read_parquet(out / "results.parquet"))
    _truncate(out / "seed_1" / "result.parquet")
    with pytest.raises(ValueError, match=r"result of seed_1 of the run '.*' is damaged: .*result\.parquet.*"
                                          r"truncated.*ibscope run"):
        runner.build_run_report(out)
    assert main(["report", str(out)]) == 2
    assert "seed_1" in capsys.readouterr().err
    assert len(pd.read_parquet(out / "results.parquet")) == rows  # not rewritten without the seed
    runner.run(toy, seeds=[0, 1, 2], out_dir=out, progress=False, report=True)  # the remedy given
    assert len(pd.read_parquet(out / "results.parquet")) == rows
    assert (out / "seed_1" / "calls.txt").read_text().count("call") == 2  # seed 1 only was recomputed
    assert (out / "seed_0" / "calls.txt").read_text().count("call") == 1


def test_sweep_report_never_uses_a_stale_table_and_lists_damaged_tasks(tmp_path, toy):
    d = tmp_path / "sw"
    spec = SweepSpec(toy, grid={"scale": [1.0, 2.0, 3.0]}, seeds=2)
    res = run_sweep(spec, d, workers=0, progress=False, report=True)
    assert res.ok and len(pd.read_parquet(d / "results.parquet")) == 18
    bad = sorted(res.done)[0]
    _truncate(d / "tasks" / bad / "result.parquet")
    page = build_sweep_report(d).read_text()
    table = pd.read_parquet(d / "results.parquet")
    assert bad not in set(table["task_id"]) and len(table) == 15  # rebuilt from the 5 good tasks
    assert "5 of 6 task(s) finished" in page and "Damaged task results" in page and bad in page
    assert "results.parquet (15 rows" in page
    res = run_sweep(spec, d, workers=0, progress=False, report=True)  # the remedy: rerun the sweep
    assert res.ok and res.ran == 1 and len(pd.read_parquet(d / "results.parquet")) == 18
    assert "Damaged task results" not in (d / "report.html").read_text()


def test_checked_parquet_state_tells_absent_other_and_damaged(tmp_path):
    p = tmp_path / "r.parquet"
    assert store.checked_parquet_state(p)[0] == "absent"
    write_checked_parquet(p, pd.DataFrame({"a": np.arange(5)}), {"config_hash": "h"})
    assert store.checked_parquet_state(p, expect={"config_hash": "h"}) == ("ok", "")
    assert store.checked_parquet_state(p, expect={"config_hash": "g"})[0] == "other"
    _truncate(p)
    state, why = store.checked_parquet_state(p, expect={"config_hash": "h"})
    assert state == "damaged" and "truncated" in why and "r.parquet" in why
    p.unlink()
    assert store.checked_parquet_state(p)[0] == "damaged"


def test_sweep_manifest_cannot_name_a_task_directory_outside_tasks(tmp_path, toy):
    d = tmp_path / "a" / "sw"
    spec = SweepSpec(toy, grid={"scale": [1.0]}, seeds=1)
    assert run_sweep(spec, d, workers=0, progress=False, report=False).ok
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["tasks"][0]["task_id"] = "../../../x"
    (d / "manifest.json").write_text(json.dumps(manifest))
    for call in (lambda: build_sweep_report(d), lambda: run_sweep(spec, d, workers=0, progress=False)):
        with pytest.raises(ValueError, match=r"manifest '.*manifest\.json' is damaged: the task id '\.\./\.\./\.\./x'"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
