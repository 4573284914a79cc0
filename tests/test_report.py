"""HTML reports: sections present where the data supports them, valid embedded PNGs, determinism, status
banners, comparisons, the CLI, and a report from a tiny real training run."""

from __future__ import annotations

import base64
import html as htmllib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from nclab.report import load_run, results_rows, results_text, try_write_report, write_compare_report, write_report
from nclab.report.figures import PNG_SIGNATURE, fine_color, pca_2d
from nclab.report.html import fmt_value
from nclab.rundir import RunDir
from nclab.utils.errors import NclabError
from test_report_rundirs import make_run

IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" data-file="([^"]+)">')
TABLE_RE = re.compile(r"<table.*?</table>", re.S)


def section_ids(text: str) -> list[str]:
    return re.findall(r'<section id="([a-z_-]+)">', text)


def check_images(report: Path) -> int:
    """Every <img> is an embedded PNG equal to its figures/ file; returns the count."""
    text = report.read_text()
    imgs = IMG_RE.findall(text)
    assert len(imgs) == text.count("<img "), "an <img> that is not an embedded PNG"
    for b64, rel in imgs:
        data = base64.b64decode(b64, validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        f = report.parent / htmllib.unescape(rel)
        assert f.is_file() and f.read_bytes() == data, f"{rel} missing or different from the embedded image"
    return len(imgs)


def assert_self_contained(text: str) -> None:
    assert "<script" not in text.lower()
    for attr in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert not re.match(r"[a-z]+://", attr), f"external reference {attr}"
    assert "url(" not in text and "@import" not in text


@pytest.fixture(scope="module")
def hand_report(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("runs") / "hand", grid=True)
    return write_report(run, strict=True)


def test_hand_built_report_has_every_section(hand_report):
    text = hand_report.read_text()
    assert section_ids(text) == ["results", "curves", "superclasses", "grid", "tables", "subruns", "details"]
    # results table first, with the paper's number in the row of predicted-routing recovery
    first_table = TABLE_RE.findall(text)[1]  # [0] is the header's key/value table
    assert "Coarse test accuracy" in first_table
    row = re.search(r"<tr[^>]*><td>Fine-label recovery, test — predicted coarse routing</td>(.*?)</tr>", first_table)
    assert row and re.findall(r">([^<]*)</td>", row.group(1)) == ["80.00 %", "93.00 %"]
    for label in ("oracle (true) coarse routing", "trained on the fine labels", "raw inputs", "random-init"):
        assert label in first_table
    # header facts come from run.json / status.json
    for needle in ("nclab train --config x.yaml", "deadbeef", "synthetic:coarse=2", "abc123", "torch 2.13.0", "9.0 s"):
        assert needle in text, needle
    # one superclass figure per coarse class; curves for NC, per-layer, fine-within-coarse, recovery
    figs = sorted(p.name for p in (hand_report.parent / "figures").iterdir())
    for name in ("superclass_000.png", "superclass_001.png", "curves_training.png", "curves_nc_coarse.png",
                 "curves_layers_coarse.png", "curves_fine_within_coarse.png", "curves_recovery.png",
                 "grid_recovery_acc.png", "grid_coarse_acc.png", "grid_nc1.png"):
        assert name in figs, name
    assert 'class="banner' not in text  # a complete run


def test_text_is_escaped(hand_report):
    text = hand_report.read_text()
    assert "hand-built &lt;test&gt;" in text and "<test>" not in text
    assert "f0&lt;b&gt;" in text and "f0<b>" not in text
    assert "Geometry &lt;measured&gt;" in text


def test_images_embedded_valid_and_saved(hand_report):
    n = check_images(hand_report)
    assert n == len(list((hand_report.parent / "figures").glob("*.png"))) >= 10
    assert_self_contained(hand_report.read_text())


def test_grid_cells_link_to_each_run_report(hand_report):
    text = hand_report.read_text()
    grid = text.split('<section id="grid">')[1].split("</section>")[0]
    first = TABLE_RE.findall(grid)[0]  # recovery_acc
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', first)
    # the missing sub-run reports were written first; one link per cell, values as percent
    expect = {f"cells/lr{lr}_wd{wd}/report.html": f"{100 * (0.5 + lr + wd * 100):.2f} %"
              for lr in (0.01, 0.1) for wd in (0.0, 0.0005)}
    assert {h: v for h, v in links} == expect
    for h in expect:
        assert (hand_report.parent / h).is_file()
    # colour encodes the value: the best and worst cells differ
    colours = re.findall(r'style="background:(#[0-9a-f]{6})', first)
    assert len(colours) == 4 and len(set(colours)) >= 3


def test_without_subreports_links_go_to_the_folders(tmp_path):
    run = make_run(tmp_path / "g", grid=True, features=False)
    text = write_report(run, strict=True, subreports=False).read_text()
    assert '<a href="cells/lr0.1_wd0.0">' in text and not (run / "cells" / "lr0.1_wd0.0" / "report.html").exists()


def test_regenerating_gives_identical_tables_and_figures(hand_report):
    before = hand_report.read_text()
    figs = {p.name: p.read_bytes() for p in (hand_report.parent / "figures").iterdir()}
    stale = hand_report.parent / "figures" / "stale_from_old_report.png"
    stale.write_bytes(b"x")
    again = write_report(hand_report.parent, strict=True).read_text()
    assert TABLE_RE.findall(again) == TABLE_RE.findall(before)
    assert {p.name: p.read_bytes() for p in (hand_report.parent / "figures").iterdir()} == figs  # stale one pruned
    assert again == before


@pytest.mark.parametrize("status,needle", [("stopped_nan", "Training stopped on NaN"),
                                           ("interrupted", "Training was interrupted"),
                                           ("failed", "The run failed")])
def test_unfinished_run_gets_a_banner(tmp_path, status, needle):
    run = make_run(tmp_path / status, status=status, epochs=4, nan_from=4 if status == "stopped_nan" else None,
                   features=False, with_results=False)
    text = write_report(run, strict=True).read_text()
    banner = re.search(r'<div class="banner">(.*?)</div>', text, re.S)
    assert banner, "no banner"
    assert needle in banner.group(1) and "not valid" in banner.group(1)
    assert "checkpoints/last.pt (epoch 4)" in banner.group(1)
    assert text.index('class="banner"') < text.index("<section")  # above every section
    check_images(run / "report.html")


def test_an_experiment_whose_later_stages_are_missing_is_not_called_complete(tmp_path):
    # status.json says the *training* is complete before recovery and the baselines run: after a kill, or
    # while the fine-label baseline is paused, the report read "complete" with the baselines silently missing
    run = make_run(tmp_path / "exp", features=False)
    res = json.loads((run / "results.json").read_text())
    del res["wall_time_s"]
    (run / "results.json").write_text(json.dumps(res))
    (run / "baseline").mkdir()
    (run / "baseline" / "status.json").write_text(json.dumps({"status": "paused"}))
    text = write_report(run, strict=True).read_text()
    banner = re.search(r'<div class="banner warn">(.*?)</div>', text, re.S)
    assert banner and "The experiment has not finished" in banner.group(1) and '"paused"' in banner.group(1)
    assert "training complete, experiment unfinished" in text


def test_complete_run_has_no_banner(tmp_path):
    text = write_report(make_run(tmp_path / "ok", features=False), strict=True).read_text()
    assert 'class="banner' not in text
    assert '<span class="pill complete">complete</span>' in text


def test_missing_and_corrupt_files_never_kill_the_report(tmp_path):
    # a folder that is not a run: refused, and nothing in it touched (the report would prune figures/*.png)
    other = tmp_path / "paper"
    (other / "figures").mkdir(parents=True)
    (other / "figures" / "mine.png").write_bytes(b"png")
    (other / "report.html").write_text("mine")
    with pytest.raises(NclabError, match="is not a run directory"):
        write_report(other, strict=True)
    assert (other / "figures" / "mine.png").read_bytes() == b"png" and (other / "report.html").read_text() == "mine"
    # a run that has written nothing but its status yet: a report with no sections
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "status.json").write_text('{"status": "running"}')
    text = write_report(empty, strict=True).read_text()
    assert section_ids(text) == ["details"] and "<h1>empty</h1>" in text  # only the status it has
    broken = make_run(tmp_path / "broken", features=False)
    (broken / "results.json").write_text("{not json")
    (broken / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "train_lo')  # torn line
    (broken / "features").mkdir()
    (broken / "features" / "train_features.npy").write_bytes(b"garbage")
    text = write_report(broken, strict=True).read_text()
    assert '<section id="problems">' in text and "results.json: JSONDecodeError" in text
    assert '<section id="curves">' in text  # the good metrics row is still drawn
    check_images(broken / "report.html")


def test_try_write_report_never_raises(tmp_path, capsys):
    assert try_write_report(tmp_path / "does-not-exist") is None
    assert "could not write the report" in capsys.readouterr().err
    assert try_write_report(make_run(tmp_path / "r", features=False)) == tmp_path / "r" / "report.html"


def test_results_rows_and_text_match_results_json(tmp_path):
    run = load_run(make_run(tmp_path / "r", features=False, with_results=True))
    rows = {label: (ours, paper) for label, ours, paper in results_rows(run)}
    assert rows["Fine-label recovery, test — predicted coarse routing"] == (0.8, 0.93)
    assert rows["Coarse test accuracy (the labels the network was trained on)"] == (0.91, None)
    assert rows["Baseline: recovery from raw inputs (fine test accuracy) — predicted coarse routing"] == (0.4, None)
    text = results_text(run)
    assert re.search(r"predicted coarse routing\s+80\.00 %\s+93\.00 %", text)
    assert re.search(r"ARI \(test\)\s+0\.6\s", text)  # not a percentage


def test_results_fall_back_to_last_epoch_without_results_json(tmp_path):
    run = load_run(make_run(tmp_path / "r", epochs=5, features=False, with_results=False))
    rows = {label: ours for label, ours, _ in results_rows(run)}
    assert (rows["Coarse test accuracy (the labels the network was trained on) [last epoch]"]
            == pytest.approx(1 - 0.6 / 5))
    assert rows["Fine-label recovery, test — predicted coarse routing [last epoch]"] == pytest.approx(0.75)


def test_compare_overlays_runs(tmp_path):
    a = make_run(tmp_path / "a", features=False)
    b = make_run(tmp_path / "b", epochs=4, features=False)
    res = json.loads((b / "results.json").read_text())
    res["recovery"]["test_acc"] = 0.7
    (b / "results.json").write_text(json.dumps(res))
    out = write_compare_report([a, b], tmp_path / "cmp", strict=True)
    text = out.read_text()
    assert section_ids(text) == ["results", "curves", "tables", "config"]
    row = re.search(r"<td>Fine-label recovery, test — predicted coarse routing</td>(.*?)</tr>", text)
    assert re.findall(r">([^<]*)</td>", row.group(1)) == ["80.00 %", "70.00 %", "93.00 %"]
    cfg = text.split('<section id="config">')[1]
    assert "optim.epochs" in cfg and "name" in cfg and "data.source" not in cfg  # only differing keys
    assert '<a href="../a">a</a>' in text  # no report yet in a: link to the folder
    check_images(out)
    assert_self_contained(text)
    # the comparison never lands in a run's own folder (its report.html and figures/ would be replaced)
    before = (a / "figures").exists() and sorted(p.name for p in (a / "figures").iterdir())
    with pytest.raises(NclabError, match="is a run directory; pass a new folder"):
        write_compare_report([a, b], a)
    assert ((a / "figures").exists() and sorted(p.name for p in (a / "figures").iterdir())) == before
    with pytest.raises(NclabError, match="listed twice"):
        write_compare_report([a, tmp_path / "a" / "."], tmp_path / "cmp2")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NclabError, match="is not a run directory"):
        write_compare_report([a, tmp_path / "plain"], tmp_path / "cmp3")


def test_cli_report_and_compare(tmp_path, capsys):
    from nclab.cli import main

    a, b = make_run(tmp_path / "a", features=False), make_run(tmp_path / "b", features=False)
    assert main(["report", str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"reports": [str(a / "report.html")]}
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"report": str(tmp_path / "c" / "report.html")}
    assert main(["compare", str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "compare-a-vs-b" / "report.html")
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", str(a)]) == 2


def test_fine_colours_are_fixed_and_distinct():
    cols = [fine_color(f) for f in range(100)]
    assert len(set(cols)) == 100 and cols == [fine_color(f) for f in range(100)]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in cols)


def test_pca_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) * np.array([5, 3, 1, 1, 0.5, 0.1])
    t = rng.normal(size=(7, 6))
    zx, zt = pca_2d(x, t)
    ref = PCA(2).fit(x)
    for ours, theirs in ((zx, ref.transform(x)), (zt, ref.transform(t))):
        assert np.allclose(np.abs(ours), np.abs(theirs), atol=1e-9)
        signs = np.sign(ours[0]) * np.sign(theirs[0])
        assert np.allclose(ours, theirs * signs, atol=1e-9)


def test_fmt_value():
    assert fmt_value(0.93, percent=True) == "93.00 %"
    assert fmt_value(float("nan")) == "NaN" and fmt_value(None) == "—" and fmt_value(3) == "3"
    assert fmt_value(0.0005) == "0.0005" and fmt_value(1.23456e-7) == "1.235e-07"


# ---- a tiny real run -----------------------------------------------------------------------------------

TINY = {
    "data": {"source": "synthetic:coarse=2,fine_per_coarse=3,dim=12,n_train=40,n_test=20", "labels": "coarse"},
    "model": {"name": "mlp", "width": 24, "depth": 1, "head_depth": 2},
    "optim": {"epochs": 3, "lr": 0.05, "batch_size": 64},
    "train": {"device": "cpu", "bf16": False, "channels_last": False},
    "callbacks": {"nc_metrics": {"epochs": "all", "splits": ["train", "test"]}},
}


def _train(run_dir: Path, overrides: dict | None = None, callbacks=None):
    from nclab.train import Trainer, load_config

    cfg = json.loads(json.dumps(TINY))
    for k, v in (overrides or {}).items():
        cfg[k] = {**cfg.get(k, {}), **v} if k != "callbacks" else v
    return Trainer(load_config(cfg), run_dir, callbacks=callbacks)


def test_report_from_a_tiny_real_run(tmp_path):
    tr = _train(tmp_path / "real")
    tr.fit()
    report = write_report(tmp_path / "real", strict=True)
    text = report.read_text()
    assert section_ids(text) == ["results", "curves", "details"]  # no results.json, no features
    figs = {p.name for p in (tmp_path / "real" / "figures").iterdir()}
    assert {"curves_training.png", "curves_nc_coarse.png", "curves_nc_fine.png", "curves_fine_within_coarse.png",
            "curves_layers_coarse.png"} <= figs
    check_images(report)
    rows = [json.loads(line) for line in (tmp_path / "real" / "metrics.jsonl").read_text().splitlines()]
    # the final-metrics table shows the last logged values (independently formatted here)
    final = text.split("Final logged metrics")[1]
    assert f"<td>test_acc</td><td class=\"num\">{100 * rows[-1]['test_acc']:.2f} %</td>" in final
    nc1 = rows[-1]["nc.train.coarse.nc1"]
    assert f"<td>nc.train.coarse.nc1</td><td class=\"num\">{nc1:.4g}</td>" in final
    assert "complete" in text and "synthetic" in text and tr.dataset.checksum in text


def test_report_of_a_real_run_stopped_on_nan(tmp_path):
    from nclab.utils.errors import NclabError

    tr = _train(tmp_path / "nan", {"optim": {"lr": 1e12, "epochs": 3, "momentum": 0.0}, "callbacks": {}})
    with pytest.raises(NclabError, match="non-finite|nan|inf"):
        tr.fit()
    assert json.loads((tmp_path / "nan" / "status.json").read_text())["status"] == "stopped_nan"
    text = write_report(tmp_path / "nan", strict=True).read_text()
    assert "Training stopped on NaN" in text and "not valid" in text


def test_report_of_a_real_interrupted_run(tmp_path):
    from nclab.train import Callback

    class Stop(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 2:
                raise KeyboardInterrupt

    tr = _train(tmp_path / "int", {"callbacks": {}}, callbacks=[Stop()])
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    text = write_report(tmp_path / "int", strict=True).read_text()
    assert "Training was interrupted" in text and "not valid" in text and "checkpoints/last.pt (epoch 1)" in text


def test_sparse_metrics_are_drawn_as_joined_points():
    """A metric logged at some epochs only (NaN elsewhere) is one line through the logged points."""
    from nclab.report.figures import Line, Panel, plot_panels
    from nclab.report.load import to_series

    rows = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 11)]
    for r in rows:
        if r["epoch"] in (1, 4, 10):
            r["nc.train.coarse.nc1"] = 1.0 / r["epoch"]
    s = to_series(rows)
    fig = plot_panels([Panel("NC1", "nc1", [Line("nc.train.coarse.nc1", "train")], logy=True)], [("r", s)], "epoch")
    (line,) = fig.axes[0].lines
    assert list(line.get_xdata()) == [1, 4, 10] and np.allclose(line.get_ydata(), [1, 0.25, 0.1])
    assert fig.axes[0].get_yscale() == "log"


def test_log_spaced_points_get_a_log_epoch_axis():
    """NC metrics at log-spaced epochs (1 .. 350) are drawn on a log x axis; every-epoch curves of the same
    run keep a linear one (the rule: ≥ 4 points spanning ≥ 30x with the median below a fifth of the max)."""
    from nclab.report.figures import Line, Panel, log_spaced, plot_panels
    from nclab.report.load import to_series

    logged = (1, 2, 5, 12, 28, 66, 152, 350)
    rows = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 351)]
    for r in rows:
        if r["epoch"] in logged:
            r["nc.train.coarse.nc1"] = 1.0 / r["epoch"]
    s = to_series(rows)
    fig = plot_panels([Panel("NC1", "nc1", [Line("nc.train.coarse.nc1", "train")]),
                       Panel("loss", "loss", [Line("train_loss", "train")])], [("r", s)], "epoch")
    nc_ax, loss_ax = fig.axes[:2]
    assert nc_ax.get_xscale() == "log" and "log scale" in nc_ax.get_xlabel()
    assert loss_ax.get_xscale() == "linear" and loss_ax.get_xlabel() == "epoch"
    assert list(nc_ax.lines[0].get_xdata()) == list(logged)
    # the rule itself, by hand: too few points, too narrow a range, evenly spaced, non-positive x
    assert not log_spaced([np.array([1, 10, 350])])
    assert not log_spaced([np.array([10, 20, 40, 80, 160])])  # 16x range
    assert not log_spaced([np.arange(1, 351, 10)])  # median 171 > 350 / 5
    assert not log_spaced([np.array([0, 1, 5, 12, 350])])
    assert log_spaced([np.array([1, 5, 12]), np.array([28, 350])])  # pooled over the lines of a panel


def test_learning_rate_panel_is_log_only_for_decades_of_decay():
    """A multistep schedule (0.1 -> 0.01 -> 0.001) gets a log lr axis, so its last phase is not drawn as zero;
    a one-cycle schedule (0.2x -> 1x -> 0.07x: < 20x) and one that decays to 0 keep a linear axis."""
    from nclab.report.curves import group_keys
    from nclab.report.figures import plot_panels
    from nclab.report.load import to_series

    def lr_axis_scale(lrs):
        s = to_series([{"epoch": e + 1, "train_loss": 1.0, "lr": v} for e, v in enumerate(lrs)])
        (group,) = [g for g in group_keys(list(s.values)) if g.name == "training"]
        (lr_panel,) = [p for p in group.panels if p.title == "learning rate"]
        ax = plot_panels([lr_panel], [("r", s)], "epoch").axes[0]
        return ax.get_yscale()

    assert lr_axis_scale([0.1] * 4 + [0.01] * 4 + [0.001] * 4) == "log"
    assert lr_axis_scale([0.2, 0.6, 1.0, 0.8, 0.5, 0.2, 0.07]) == "linear"
    assert lr_axis_scale([0.1, 0.07, 0.03, 0.0]) == "linear"


def test_report_labels_routings_and_says_where_things_are_missing(tmp_path):
    run = make_run(tmp_path / "r", features=True)
    res = json.loads((run / "results.json").read_text())
    for c, p in enumerate(res["recovery"]["per_superclass"]):
        p["test_acc_predicted_routing"] = 0.5 + 0.1 * c
    res["baselines"]["raw_pixels"]["oracle_test_acc"] = 0.47
    res["probe"] = {"test_acc": 0.83, "oracle_test_acc": 0.97}
    res["recovery"]["options"] = {"max_train": 300, "normalize": "whiten", "whiten_var": 0.95}
    res["subruns"] = ["gone"]  # listed but not in the folder (e.g. a committed example without its sub-runs)
    (run / "results.json").write_text(json.dumps(res))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["callbacks"] = {"recovery": {"max_train": 10000, "whiten_var": 0.8, "normalize": "whiten"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    rows[-1]["recovery.test_acc"] = 0.7  # the callback's (subset) number, below the final 0.8
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "features" / "centroids.npz").write_bytes(b"x")  # unreadable: must be listed, not silently dropped
    text = write_report(run, strict=True).read_text()
    flat = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    # per superclass: both routings, each named, the values from results.json
    assert "test acc, true-coarse routing" in flat and "test acc, predicted routing" in flat
    assert re.search(r"80\.00 %\s+50\.00 %", flat) and re.search(r"70\.00 %\s+60\.00 %", flat)
    # baselines and probe with their routing
    rows = {label: ours for label, ours, _ in results_rows(load_run(run))}
    assert rows["Baseline: recovery from raw inputs — oracle (true) coarse routing"] == 0.47
    assert rows["Supervised linear probe inside each superclass — oracle (true) coarse routing"] == 0.97
    # the logged (callback) recovery and the final one are told apart (a config from before the recovery section)
    assert "a 10,000-sample train subset (kmeans, normalize whiten at 0.8 of the variance)" in flat
    assert "clusters a 300-sample train subset (kmeans, normalize whiten at 0.95 of the variance)" in flat
    assert flat.count("Logged recovery (curves") == 1
    # a config that records the run's settings: the note names the callback's overrides of them
    cfg["recovery"] = {"method": "kmeans", "normalize": "whiten", "whiten_var": 0.95, "max_train": None}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    flat = " ".join(re.sub(r"<[^>]+>", " ", write_report(run).read_text()).split())
    assert "with max_train=10000, whiten_var=0.8 (callbacks.recovery): kmeans, normalize whiten at 0.8 of the " \
           "variance, a 10,000-sample train subset" in flat
    assert "features/centroids.npz" in text.split('<section id="problems">')[1]
    assert "gone (folder missing)" in flat and "missing (not in this folder)" in flat


def test_demo_refuses_to_overwrite_another_run(tmp_path, capsys):
    from nclab.cli import main

    other = make_run(tmp_path / "mine", features=False)
    before = (other / "results.json").read_text()
    assert main(["demo", "--out", str(other), "--quiet"]) == 2
    assert "holds another run, not a demo" in capsys.readouterr().err
    assert (other / "results.json").read_text() == before


def test_one_axis_grid_names_its_columns_only(tmp_path):
    # a seed-only sweep has one axis: the note must not print an empty "Rows:" label
    from nclab.rundir import RunDir
    from nclab.report import write_report

    run = RunDir(tmp_path / "sweep")
    run.path.mkdir()
    run.write_results({"experiment": "sweep:x", "grid": {"axes": {"seed": [0, 1]}, "cells": [
        {"seed": 0, "run": "seed=0", "recovery_acc": 0.5}, {"seed": 1, "run": "seed=1", "recovery_acc": 0.6}]}})
    text = Path(write_report(run.path)).read_text()
    grid = text.split('<section id="grid">')[1].split("</section>")[0]
    assert "2 runs. Columns: seed." in grid and "Rows:" not in grid


def test_load_run_and_results_text_refuse_a_folder_that_is_not_a_run(tmp_path):
    from nclab.report import load_run, results_text

    # a mistyped path read as a run with nothing in it: results_text printed "(no results recorded)"
    with pytest.raises(NclabError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("hi")
    with pytest.raises(NclabError, match="is a file"):
        load_run(tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NclabError, match="is not a run directory"):
        load_run(tmp_path / "empty")
    # a path instead of what load_run returns was "AttributeError: 'str' object has no attribute 'results'"
    for bad in (str(tmp_path / "empty"), None):
        with pytest.raises(NclabError, match=r"results_text takes what load_run returns"):
            results_text(bad)
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_results({"coarse_test_acc": 0.5})
    assert "50.00" in results_text(load_run(rd.path))
