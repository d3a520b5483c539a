"""Runs from Python: plastic.train writes the CLI's run folder (the same files, the same
numbers), reports progress, stops cleanly on an exception in its callback and resumes;
plastic.load_run reads a run back."""

import os
import subprocess

import numpy as np
import pytest

import plastic
from conftest import cli_binary

SMALL = dict(task="cue-reward", hidden_size=8, max_batch=12, log_every=4, test_batch=2,
             batch_size=4, seed=5)


def rows_without_time(path):
    # every column but the wall-clock one
    return [line.split("\t")[:4] for line in open(path).read().splitlines()]


def test_train_writes_the_run_folder_and_reports_progress(tmp_path):
    events = []
    summary = plastic.train(out=tmp_path / "run", progress=events.append, **SMALL)
    for name in ("config.toml", "progress.tsv", "best.safetensors", "checkpoint.safetensors",
                 "test.json"):
        assert (tmp_path / "run" / name).exists(), name
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds.count("step") == 12 and kinds.count("log") == 4
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 13))
    assert all(np.isfinite(e["loss"]) for e in events if e["event"] == "step")
    assert summary["steps"] == 12 and np.isfinite(summary["test_loss"])

    run = plastic.load_run(tmp_path / "run")
    assert run.config["hidden_size"] == 8 and run.config["task"] == "cue-reward"
    progress = run.progress
    steps = list(progress["step"])
    assert steps == [0, 4, 8, 12]
    assert run.summary == summary
    best = plastic.Network.load(tmp_path / "run")
    assert set(run.parameters) == set(best.parameters())
    for n, v in best.parameters().items():
        np.testing.assert_array_equal(run.parameters[n], v)
    # the file alone carries its configuration
    alone = plastic.Network.load(tmp_path / "run" / "best.safetensors", dtype="float64")
    assert alone.dtype == np.float64 and alone.config == best.config
    # and Python's safetensors reads it
    safetensors = pytest.importorskip("safetensors.numpy")
    tensors = safetensors.load_file(str(tmp_path / "run" / "best.safetensors"))
    for n, v in tensors.items():
        np.testing.assert_array_equal(v, run.parameters[n])
    # the network trained: the best parameters' test loss is that of test.json
    losses = [best.forward(b["inputs"], b["targets"])["loss"]
              for b in (plastic.episodes(run.config, split="test", index=k) for k in range(2))]
    assert abs(np.mean(losses) - summary["test_loss"]) <= 1e-6 * summary["test_loss"]


def test_the_same_folder_as_the_cli(tmp_path):
    cli = cli_binary()
    if cli is None:
        pytest.skip("the plastic CLI is not built (cargo build --release -p plastic-cli); "
                    "the test command builds it")
    plastic.train(out=tmp_path / "py", **SMALL)
    sets = [f"--set={k}={v}" for k, v in SMALL.items() if k not in ("task", "seed")]
    subprocess.run([cli, "train", "--task", "cue-reward", "--seed", "5", "--out",
                    str(tmp_path / "cli"), *sets], check=True, capture_output=True)
    for name in ("config.toml", "best.safetensors"):
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert rows_without_time(tmp_path / "py" / "progress.tsv") == rows_without_time(
        tmp_path / "cli" / "progress.tsv")
    assert (plastic.load_run(tmp_path / "py").summary["test_loss"]
            == plastic.load_run(tmp_path / "cli").summary["test_loss"])


def test_an_exception_in_the_callback_stops_the_run_and_it_resumes(tmp_path):
    class Stop(Exception):
        pass

    def stop_at_6(event):
        if event["event"] == "step" and event["step"] == 6:
            raise Stop("enough")

    with pytest.raises(Stop):
        plastic.train(out=tmp_path / "run", progress=stop_at_6, **SMALL)
    assert not (tmp_path / "run" / "test.json").exists()
    partial = plastic.load_run(tmp_path / "run")
    assert partial.summary is None and list(partial.progress["step"]) == [0, 4]
    # refused without overwrite, resumed with resume=True, to the uninterrupted result
    with pytest.raises(ValueError):
        plastic.train(out=tmp_path / "run", **SMALL)
    resumed = plastic.train(out=tmp_path / "run", resume=True)
    whole = plastic.train(out=tmp_path / "whole", **SMALL)
    assert resumed["test_loss"] == whole["test_loss"]
    assert rows_without_time(tmp_path / "run" / "progress.tsv") == rows_without_time(
        tmp_path / "whole" / "progress.tsv")
    # overwrite replaces it
    again = plastic.train(out=tmp_path / "run", overwrite=True, **SMALL)
    assert again["test_loss"] == whole["test_loss"]


def test_progress_without_pandas_is_a_dict_of_columns(tmp_path, monkeypatch):
    import builtins

    plastic.train(out=tmp_path / "run", **SMALL)
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    run = plastic.load_run(tmp_path / "run")
    assert isinstance(run.progress, dict)
    assert run.progress["step"].dtype == np.int64
    assert set(run.progress) == {"step", "train_loss", "val_loss", "lr", "elapsed_s"}


def test_a_damaged_best_file_is_refused(tmp_path):
    plastic.train(out=tmp_path / "run", **SMALL)
    path = tmp_path / "run" / "best.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError) as e:
        plastic.Network.load(tmp_path / "run")
    assert "corrupt" in str(e.value)
    assert os.path.exists(path)


def test_progress_with_pandas_is_a_dataframe(tmp_path):
    pandas = pytest.importorskip("pandas")
    plastic.train(out=tmp_path / "run", **SMALL)
    run = plastic.load_run(tmp_path / "run")
    assert isinstance(run.progress, pandas.DataFrame)
    assert list(run.progress.columns) == ["step", "train_loss", "val_loss", "lr", "elapsed_s"]
    assert list(run.progress["step"]) == [0, 4, 8, 12]
