"""Model directories under faults and hostile edits: a save interrupted anywhere (an exception at
each write, rename and delete, or SIGKILL at random moments) leaves the old model or the new one,
never a mixture; leftovers go at the next save or load; a folder mixing parts of two saves, or
naming parts outside itself, is refused; folders saved without checksums still load."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from kerasemote import model_dir, storage, weights
from kerasemote.model import PARTS, StableDiffusion

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "kerasemote-tiny"


class Models:
    """One tiny model that saves as "old" (its random weights) or "new" (every weight + 1).

    Building a Keras model costs seconds; assigning its weights costs milliseconds.
    """

    def __init__(self):
        self.model = StableDiffusion.random("tiny", seed=1)
        old = {part: weights.model_arrays(layer) for part, layer in self.model.parts.items()}
        new = {part: {k: v + 1 for k, v in part_arrays.items()} for part, part_arrays in old.items()}
        self.arrays = {"old": old, "new": new}

    def __getitem__(self, name: str) -> StableDiffusion:
        for part, part_arrays in self.arrays[name].items():
            weights.assign_arrays(self.model.parts[part], part_arrays, name)
        return self.model


@pytest.fixture(scope="module")
def models() -> Models:
    return Models()


@pytest.fixture(scope="module")
def arrays(models) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """name -> part -> variable path -> float32 array: what each model's directory must load as."""
    return models.arrays


def saved_as(directory, arrays) -> str:
    """Which model ("old" or "new") the directory loads as; fails on a mixture or anything else."""
    with model_dir.reading(str(directory)) as found:
        loaded = {part: found.read(part) for part in PARTS}
    for name, expected in arrays.items():
        if all(loaded[part].keys() == expected[part].keys()
               and all(np.array_equal(loaded[part][k], expected[part][k]) for k in expected[part])
               for part in PARTS):
            return name
    matches = {part: [n for n, e in arrays.items() if all(np.array_equal(loaded[part][k], e[part][k])
                                                         for k in e[part])] for part in PARTS}
    raise AssertionError(f"{directory} loads as a mixture: {matches}")


def assert_no_leftovers(directory) -> None:
    names = set(os.listdir(directory))
    manifest = json.loads((Path(directory) / "config.json").read_text())
    assert names == {"config.json", *manifest["parts"].values()}, sorted(names)


# ---------------------------------------------------------------------- (a) a fault at every point


class Crash(OSError):
    pass


def _faulty(monkeypatch, fail_at: int) -> dict[str, int]:
    """Every write, rename, fsync and delete counts; from call ``fail_at`` on, each one fails (a crash)."""
    calls = {"n": 0}
    for name in ("replace", "rename", "remove", "unlink", "fsync"):
        real = getattr(os, name)

        def patched(*args, _real=real, **kwargs):
            calls["n"] += 1
            if fail_at is not None and calls["n"] >= fail_at:
                raise Crash("injected fault")
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, patched)
    return calls


@pytest.mark.parametrize("earlier_saves", [1, pytest.param(2, marks=pytest.mark.slow)],
                         ids=["old-in-first-name-set", "old-in-second-name-set"])
def test_save_failing_at_each_point_leaves_exactly_the_old_or_the_new_model(
        tmp_path, monkeypatch, models, arrays, earlier_saves):
    models["old"].save(str(tmp_path / "count"))
    with monkeypatch.context() as counting:
        calls = _faulty(counting, fail_at=None)
        models["new"].save(str(tmp_path / "count"))
    points = calls["n"]
    assert points >= 10  # 4 parts and config.json: fsync + rename each, the old parts' deletes
    template = tmp_path / "template"
    for _ in range(earlier_saves):
        models["old"].save(str(template))
    outcomes = []
    for fail_at in range(1, points + 1):
        target = tmp_path / f"at{fail_at}"
        shutil.copytree(template, target)
        new = models["new"]
        with monkeypatch.context() as faulty:
            _faulty(faulty, fail_at)
            try:
                new.save(str(target))
            except Crash:
                pass  # a failed delete of the previous save's files is not an error: the next load removes them
        outcomes.append(saved_as(target, arrays))
        assert_no_leftovers(target)  # the load above removed them
    # Before the commit the old model stays, after it the new one.
    assert outcomes[0] == "old" and outcomes[-1] == "new" and outcomes == sorted(outcomes, reverse=True)


def test_next_save_after_a_crash_removes_leftovers_and_writes_the_new_model(tmp_path, monkeypatch, models, arrays):
    target = tmp_path / "m"
    models["old"].save(str(target))
    with monkeypatch.context() as faulty:
        _faulty(faulty, fail_at=5)  # mid-way through the parts
        with pytest.raises(Crash):
            models["new"].save(str(target))
    assert any(name.startswith(".tmp-") or name.endswith(".b.npz") for name in os.listdir(target))
    models["new"].save(str(target))
    assert_no_leftovers(target)
    assert saved_as(target, arrays) == "new"


# ---------------------------------------------------------------------- (b) SIGKILL at random moments

CHILD = textwrap.dedent("""
    import sys
    from kerasemote import model_dir, weights
    via, target, *sources = sys.argv[1:]
    if via == "StableDiffusion":
        from kerasemote.model import StableDiffusion
        models = [StableDiffusion.load(source) for source in sources]
        saves = [lambda m=m: m.save(target) for m in models]
    else:  # the same writer StableDiffusion.save drives, without building Keras models
        def saver(source):
            with model_dir.reading(source) as found:
                parts = {part: found.read(part) for part in model_dir.PARTS}
                manifest = {k: v for k, v in found.manifest.items() if k not in model_dir.RESERVED}
            writers = [(part, lambda path, a=a, p=part: weights.save_arrays(path, a, {"part": p}))
                       for part, a in parts.items()]
            return lambda: model_dir.write(target, writers, manifest)
        saves = [saver(source) for source in sources]
    print("ready", flush=True)
    i = 0
    while True:
        saves[i % 2]()
        i += 1
""")


@pytest.mark.slow  # 20 child processes: about 15 s with the bare writer, minutes when each builds Keras models
@pytest.mark.parametrize("via", ["model_dir", "StableDiffusion"])
def test_save_killed_at_random_moments_always_loads_as_exactly_one_model(tmp_path, models, arrays, via):
    sources = {name: tmp_path / name for name in ("old", "new")}
    for name, directory in sources.items():
        models[name].save(str(directory))
    target = tmp_path / "target"
    models["old"].save(str(target))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(20)
    seen = []
    for _ in range(20):
        child = subprocess.Popen([sys.executable, str(script), via, str(target), str(sources["old"]),
                                  str(sources["new"])], stdout=subprocess.PIPE, cwd=REPO,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)})
        assert child.stdout.readline().strip() == b"ready"
        threading.Event().wait(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        seen.append(saved_as(target, arrays))
        assert_no_leftovers(target)
    assert set(seen) == {"old", "new"}, seen  # the kills did land in different saves


# ---------------------------------------------------------------------- (c) parts of different saves


def _swap_in(target: Path, other: Path, part: str) -> str:
    """Put ``other``'s ``part`` file under the name ``target``'s config.json gives it."""
    name = json.loads((target / "config.json").read_text())["parts"][part]
    source = json.loads((other / "config.json").read_text())["parts"][part]
    shutil.copyfile(other / source, target / name)
    return name


def _truncate(target: Path, other: Path, part: str) -> str:
    name = json.loads((target / "config.json").read_text())["parts"][part]
    data = (target / name).read_bytes()
    (target / name).write_bytes(data[: len(data) // 2])
    return name


def _flip_byte(target: Path, other: Path, part: str) -> str:
    name = json.loads((target / "config.json").read_text())["parts"][part]
    data = bytearray((target / name).read_bytes())
    data[-100] ^= 1
    (target / name).write_bytes(bytes(data))
    return name


def _other_config(target: Path, other: Path, part: str) -> str:
    shutil.copyfile(other / "config.json", target / "config.json")
    return json.loads((target / "config.json").read_text())["parts"]["text_encoder"]


@pytest.mark.parametrize("tamper, part, other_dtype", [
    (_swap_in, "unet", "float32"),
    (_swap_in, "vae_decoder", "float16"),
    (_truncate, "text_encoder", "float32"),
    (_flip_byte, "vae_encoder", "float32"),
    (_other_config, "text_encoder", "float32"),
], ids=["unet-of-another-save", "float16-part-of-another-save", "truncated-part", "one-bit-changed",
        "config-of-another-save"])
def test_folder_mixing_parts_of_different_saves_is_refused(tmp_path, models, tamper, part, other_dtype):
    target, other = tmp_path / "target", tmp_path / "other"
    models["old"].save(str(target))
    models["new"].save(str(other), dtype=other_dtype)
    name = tamper(target, other, part)
    config = json.loads((target / "config.json").read_text())
    size, digest = config["part_bytes"][part], config["part_sha256"][part]
    found_size = (target / name).stat().st_size
    with pytest.raises(model_dir.PartMismatchError) as err:
        with model_dir.reading(str(target)):
            pass
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{target / name}: not the {part} that ")
    assert f"expected {size} bytes with sha256 {digest}, found {found_size} bytes with sha256 " in message
    assert "mixes files of different saves" in message


def test_loading_a_mixed_folder_fails_before_building_the_model(tmp_path, models, monkeypatch):
    target, other = tmp_path / "target", tmp_path / "other"
    models["old"].save(str(target))
    models["new"].save(str(other))
    _swap_in(target, other, "unet")
    monkeypatch.setattr(StableDiffusion, "__init__", lambda *a, **k: pytest.fail("model built"))
    with pytest.raises(model_dir.PartMismatchError, match=r"unet\.npz: not the unet"):
        StableDiffusion.load(str(target))


# ---------------------------------------------------------------------- (d) parts outside the folder


def _outside_copy(target: Path) -> str:
    outside = target.parent / "outside.npz"
    shutil.copyfile(target / "unet.npz", outside)
    return str(outside)


def _symlink_out(target: Path) -> str:
    (target / "link.npz").symlink_to(_outside_copy(target))
    return "link.npz"


@pytest.mark.parametrize("checksums", [True, False], ids=["with-checksums", "old-format"])
@pytest.mark.parametrize("name", [
    lambda t: "../outside.npz", lambda t: _outside_copy(t), lambda t: "sub/../../outside.npz",
    lambda t: "..\\outside.npz", lambda t: 7, lambda t: "", _symlink_out,
], ids=["dotdot", "absolute", "dotdot-inside", "backslash-dotdot", "number", "empty", "symlink-out"])
def test_part_names_leaving_the_folder_are_refused(tmp_path, models, name, checksums):
    target = tmp_path / "m"
    models["old"].save(str(target))
    _outside_copy(target)
    config = json.loads((target / "config.json").read_text())
    if not checksums:
        for key in ("model_id", "part_bytes", "part_sha256"):
            del config[key]
    config["parts"]["unet"] = value = name(target)
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        with model_dir.reading(str(target)):
            pass
    message = str(err.value)
    assert message.startswith(f"{target / 'config.json'}: field 'parts.unet' expected a relative path inside")
    assert repr(value) in message and "\n" not in message


@pytest.mark.parametrize("edit, field, expected", [
    (lambda c: c.update(parts=["unet.npz"]), "parts", "a JSON object"),
    (lambda c: c["part_sha256"].update(unet="abc"), "part_sha256.unet", "64 hex digits"),
    (lambda c: c["part_bytes"].pop("vae_decoder"), "part_bytes.vae_decoder", "a byte count"),
    (lambda c: c.update(part_sha256=None), "part_sha256", "a JSON object"),
    (lambda c: c.update(version="1"), "version", "an integer from 1 to 1"),
    (lambda c: c.update(version=7), "version", "an integer from 1 to 1"),
], ids=["parts-list", "short-sha256", "missing-size", "null-checksums", "version-text", "version-newer"])
def test_malformed_part_fields_are_refused_naming_the_field(tmp_path, models, edit, field, expected):
    target = tmp_path / "m"
    models["old"].save(str(target))
    config = json.loads((target / "config.json").read_text())
    edit(config)
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"config\.json: field '{field}' expected {expected}, found"):
        with model_dir.reading(str(target)):
            pass


# ---------------------------------------------------------------------- (e) folders saved without checksums


def test_folder_saved_without_checksums_still_loads(tmp_path, models, arrays):
    target = tmp_path / "m"
    models["old"].save(str(target))
    config = json.loads((target / "config.json").read_text())
    for key in ("model_id", "part_bytes", "part_sha256", "parts"):
        del config[key]  # what earlier versions wrote, parts named by default
    (target / "config.json").write_text(json.dumps(config))
    assert saved_as(target, arrays) == "old"
    models["new"].save(str(target))  # saving over it: the old files go, the new model is checked
    assert saved_as(target, arrays) == "new"
    assert_no_leftovers(target)


def test_shipped_model_without_checksums_loads_and_is_left_untouched():
    before = {p.name: p.stat().st_mtime_ns for p in SHIPPED.iterdir()}
    with model_dir.reading(str(SHIPPED)) as found:
        assert found.expected is None
        assert all(found.read(part) for part in PARTS)
    assert {p.name: p.stat().st_mtime_ns for p in SHIPPED.iterdir()} == before


# ---------------------------------------------------------------------- what a save writes


def test_saves_alternate_name_sets_and_record_each_parts_checksum(tmp_path, models):
    target = tmp_path / "m"
    names = []
    for _ in range(3):
        models["old"].save(str(target), extra={"note": "kept"})
        config = json.loads((target / "config.json").read_text())
        names.append(config["parts"]["unet"])
        assert config["note"] == "kept" and config["format"] == "kerasemote-model"
        for part, name in config["parts"].items():
            size, digest = model_dir.file_digest(str(target / name))
            assert (config["part_bytes"][part], config["part_sha256"][part]) == (size, digest)
        assert_no_leftovers(target)
    assert names == ["unet.npz", "unet.b.npz", "unet.npz"]


def test_files_kept_beside_the_model_survive_a_save(tmp_path, models):
    target = tmp_path / "m"
    models["old"].save(str(target))
    (target / "README.md").write_text("card")
    (target / "unet.backup.npz").write_bytes(b"mine")
    models["new"].save(str(target))
    assert (target / "README.md").read_text() == "card" and (target / "unet.backup.npz").read_bytes() == b"mine"


@pytest.mark.parametrize("field", ["parts", "model_id", "part_sha256", "format"])
def test_extra_facts_cannot_replace_the_fields_a_save_writes(tmp_path, models, field):
    with pytest.raises(ValueError, match=rf"config\.json fields \['{field}'\] are written by the save itself"):
        models["old"].save(str(tmp_path / "m"), extra={field: "x"})


def test_load_while_another_process_holds_the_folder_leaves_in_progress_files_alone(tmp_path, models):
    fcntl = pytest.importorskip("fcntl")
    target = tmp_path / "m"
    models["old"].save(str(target))
    in_progress = target / ".tmp-0123abcd-unet.b.npz"
    in_progress.write_bytes(b"being written")
    other = os.open(target, os.O_RDONLY)  # another process reading (a save would hold it exclusively)
    try:
        fcntl.flock(other, fcntl.LOCK_SH)
        with model_dir.reading(str(target)):
            pass
        assert in_progress.exists()
    finally:
        os.close(other)
    with model_dir.reading(str(target)):
        pass
    assert not in_progress.exists()


def test_copied_model_directory_is_checked_and_carries_extra_facts(tmp_path, models, arrays):
    source, target = tmp_path / "src", tmp_path / "dst"
    models["new"].save(str(source))
    models["old"].save(str(target))
    model_dir.copy(str(source), str(target), {"vae": {"steps": 4}})
    assert saved_as(target, arrays) == "new"
    assert json.loads((target / "config.json").read_text())["vae"] == {"steps": 4}
    models["old"].save(str(tmp_path / "third"))
    _swap_in(source, tmp_path / "third", "unet")  # a mixed source is refused, the target kept
    with pytest.raises(model_dir.PartMismatchError):
        model_dir.copy(str(source), str(target))
    assert saved_as(target, arrays) == "new"


# ---------------------------------------------------------------------- gs://


def test_gcs_save_interrupted_before_config_json_keeps_the_old_model(gcs_bucket, monkeypatch, models, arrays):
    target = gcs_bucket + "/m"
    models["old"].save(target)
    real = storage.write_bytes

    def no_config(path, data):
        if storage.basename(path) == "config.json":
            raise Crash("upload interrupted")
        real(path, data)

    with monkeypatch.context() as faulty:
        faulty.setattr(storage, "write_bytes", no_config)
        with pytest.raises(Crash):
            models["new"].save(target)
    assert "unet.b.npz" in storage.listdir(target)  # uploaded, not named
    assert saved_as(target, arrays) == "old"
    models["new"].save(target)
    assert saved_as(target, arrays) == "new"
    assert storage.listdir(target) == ["config.json", *sorted(f"{p}.b.npz" for p in PARTS)]
