"""The benchmark harness: the smoke suite runs end to end, and its correctness gate bites."""

import json
import os

import pytest
import torch

from packedrnn import bench, plan


def test_smoke_suite_runs(tmp_path, capsys):
    code = bench.main(["--suite", "smoke", "--repeat", "2", "--warmup", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| case |" in out and "geometric-mean speedup" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["machine"]["torch"] == torch.__version__
    assert len(data["rows"]) == len(bench.SUITES["smoke"])
    for row in data["rows"]:
        assert all(c["ok"] for c in row["checks"].values())
        assert row["results"]["packed"]["ms"] > 0


def test_a_wrong_backend_is_reported_as_wrong():
    case = bench.Case("LSTM", 4, 6, 8, train=True)

    def off_by_a_little(model, x, lengths, case):
        def run():
            out, states, grads = bench._compute(model, x, lengths, "ours", True, "reference")
            return out + 1e-3, states, grads
        return run

    row = bench.run_case(case, torch.device("cpu"), warmup=0, repeat=1, budget_s=1.0,
                         backends=["reference"], extra_runners={"broken": off_by_a_little})
    assert row["checks"]["packedrnn:reference"]["ok"]
    assert not row["checks"]["broken"]["ok"] and row["checks"]["broken"]["failed"] == ["out"]
    assert row["results"]["broken"] == {"wrong": True}
    assert "WRONG" in bench.table([row])


def test_ours_only_times_no_baseline(tmp_path, capsys):
    """--ours-only: packedrnn checked and timed, torch's paths not timed, no speedups claimed."""
    code = bench.main(["--case", "cell=GRU,B=4,T=6,H=8", "--ours-only", "--repeat", "1", "--warmup", "0",
                       "--out", str(tmp_path)])
    assert code == 0
    row = json.loads((tmp_path / "results.json").read_text())["rows"][0]
    assert all(c["ok"] for c in row["checks"].values()) and row["checks"]
    assert row["results"] and all(k.startswith("packedrnn:") for k in row["results"])
    assert "speedup_vs_packed" not in row and "geometric-mean" not in capsys.readouterr().out


def test_parse_case():
    c = bench.parse_case("cell=GRU,B=3,T=7,H=5,I=2,layers=2,bidir=1,dtype=fp64,train=0,lo=0.5")
    assert (c.cell, c.B, c.T, c.H, c.input_size, c.layers, c.bidir, c.dtype, c.train, c.lo) == \
        ("GRU", 3, 7, 5, 2, 2, True, "fp64", False, 0.5)
    lengths = c.lengths()
    assert lengths[0] == 7 and lengths.min() >= 3


def test_timed_runs_keep_matmul_in_fp32():
    """The timed runs allow TF32 in cuDNN (a user's default) but never in cuBLAS, whose products
    run inside packedrnn's ops: an fp32 row is timed as it was checked, in fp32."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    for allow in (True, False):
        with bench._TF32(allow):
            assert torch.backends.cudnn.allow_tf32 is allow
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def _switch_sweep():
    """scripts/switch_sweep.py, imported from its path (scripts/ is not a package)."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "switch_sweep.py"
    spec = importlib.util.spec_from_file_location("switch_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_switch_sweep_checks_and_times_every_configuration(tmp_path, capsys, monkeypatch):
    """Every row x configuration is checked, then timed; a configuration whose results are off is
    WRONG (here: tokens=1, made wrong on purpose) and the switches are unset afterwards."""
    sweep = _switch_sweep()
    real = bench._compute

    def compute(model, x, lengths, kind, train, backend=None):
        out, states, grads = real(model, x, lengths, kind, train, backend)
        if kind == "ours" and plan.setting("tokens") == "1":
            out = out + 1e-3
        return out, states, grads

    monkeypatch.setattr(bench, "_compute", compute)
    code = sweep.main(["--device", "cpu", "--suite", "smoke", "--configs", "default,tokens=1", "--repeat", "1",
                       "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1 and "WRONG: LSTM B=8 T=20 H=32 L=1 fp32 train with tokens=1" in out
    rows = json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert len(rows) == len(bench.SUITES["smoke"])
    for row in rows:
        assert row["results"]["default"]["ms"] > 0 and row["results"]["default"]["errors"]["out"] < 1e-5
        assert row["results"]["tokens=1"]["wrong"]
    assert plan.setting("tokens") is None and plan.setting("backend") is None


def test_onnxruntime_column_is_checked_then_timed():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    row = bench.run_case(bench.Case("GRU", 4, 6, 8, layers=2, bidir=True, train=False), torch.device("cpu"),
                         warmup=0, repeat=2, budget_s=1.0)
    assert row["checks"]["onnxruntime"]["ok"], row["checks"]["onnxruntime"]
    assert row["results"]["onnxruntime"]["ms"] > 0 and row["speedup_vs_onnxruntime"] > 0
    assert "x ort" in bench.table([row])


def test_noisy_rows_are_flagged_and_columns_explained(tmp_path, capsys):
    row = {"label": "r", "fill": 0.5, "steps": 4, "results": {"packed": {"ms": 2.0, "spread": 0.6}}, "checks": {}}
    assert bench.spread(row) == 0.6 and "NOISY" in bench.table([row])
    bench.main(["--suite", "smoke", "--repeat", "2", "--warmup", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "Columns: fill" in out and "vs floor =" in out


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--suite smoke" in out and "steps" in out
