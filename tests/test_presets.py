"""The shipped `kerasemote-tiny` preset: the default model, found in a source checkout and in an installed wheel."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

import kerasemote
from kerasemote import presets
from kerasemote.cli import main

ROOT = Path(__file__).parent.parent
SHIPPED = ROOT / "weights" / "kerasemote-tiny"
MODEL_FILES = {"config.json", "text_encoder.npz", "unet.npz", "vae_encoder.npz", "vae_decoder.npz"}


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_kerasemote_tiny_is_the_default_and_resolves_to_the_committed_model_directory():
    preset = presets.PRESETS[presets.DEFAULT_MODEL]
    assert presets.DEFAULT_MODEL == "kerasemote-tiny"
    assert preset.files == ()  # nothing to download
    assert Path(preset.local_dir).resolve() == SHIPPED.resolve()
    assert MODEL_FILES <= set(os.listdir(preset.local_dir))


def test_load_model_by_name_loads_the_shipped_weights_and_records_the_preset_name():
    model = kerasemote.load_model("kerasemote-tiny")
    assert model.config.name == "kerasemote-tiny" and model.config.image_size == 64
    assert model.source == "kerasemote-tiny"  # trained files record the name, not this machine's path


def test_load_model_without_a_name_uses_the_default_model(monkeypatch):
    monkeypatch.setattr(presets, "DEFAULT_MODEL", "no-such-default-model")
    with pytest.raises(FileNotFoundError, match="no-such-default-model"):
        kerasemote.load_model()


def test_the_package_load_model_is_the_presets_one():
    assert kerasemote.load_model is presets.load_model


def test_generate_with_no_model_argument_draws_64_px_images_offline(tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "a grinning face emoji", "--num-images", "2", "--steps", "2", "--seed", "0",
                 "--out", str(out)]) == 0
    assert [Image.open(out / f"image_00{i}.png").size for i in range(2)] == [(64, 64), (64, 64)]


def test_weights_with_the_shipped_preset_is_an_error_naming_the_downloadable_presets():
    with pytest.raises(ValueError, match="sd-v1-4, sd-v1-5"):
        presets.load_model("kerasemote-tiny", weights="v1-5-pruned-emaonly.safetensors")


def test_an_installation_without_the_shipped_files_says_so(tmp_path, monkeypatch):
    gone = presets.Preset("kerasemote-tiny", "", "model_dir", (), local_dir=str(tmp_path / "missing"))
    monkeypatch.setitem(presets.PRESETS, "kerasemote-tiny", gone)
    with pytest.raises(FileNotFoundError, match="ships with kerasemote.*missing has no config.json"):
        presets.load_model("kerasemote-tiny")


def test_shipped_model_dir_prefers_the_wheel_copy_over_the_checkout(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "kerasemote"
    monkeypatch.setattr(presets, "_PACKAGE", package)
    assert presets.shipped_model_dir("m") == str(tmp_path / "site-packages" / "weights" / "m")
    (package / "pretrained" / "m").mkdir(parents=True)
    (package / "pretrained" / "m" / "config.json").write_text("{}")
    assert presets.shipped_model_dir("m") == str(package / "pretrained" / "m")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """kerasemote built as a wheel from a copy of the repository and installed with ``pip --target``."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "kerasemote", src / "kerasemote", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SHIPPED, src / "weights" / "kerasemote-tiny")
    shutil.copytree(ROOT / "dataset" / "noto-emoji", src / "dataset" / "noto-emoji")  # setup.py ships it too
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: build with the installed setuptools, offline.
    subprocess.run(pip + ["wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist")],
                   check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("kerasemote-*.whl")
    subprocess.run(pip + ["install", str(wheel), "--no-deps", "--target", str(tmp / "site")], check=True, cwd=tmp)
    return wheel, tmp / "site"


def _run_installed(site: Path, code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(site))  # ahead of the editable install's finder
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=site.parent, capture_output=True,
                            text=True, check=True)
    return result.stdout.strip()


def test_the_wheel_carries_the_shipped_model_and_the_installed_preset_finds_it(installed_wheel):
    wheel, site = installed_wheel
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("kerasemote/pretrained/"))
    assert shipped == sorted(f"kerasemote/pretrained/kerasemote-tiny/{f}" for f in MODEL_FILES)
    for name in MODEL_FILES:
        assert _sha256(site / "kerasemote" / "pretrained" / "kerasemote-tiny" / name) == _sha256(SHIPPED / name)
    found = _run_installed(site, "import kerasemote, kerasemote.presets as p; "
                                 "print(kerasemote.__file__); print(p.PRESETS[p.DEFAULT_MODEL].local_dir)")
    assert found.splitlines() == [str(site / "kerasemote" / "__init__.py"),
                                  str(site / "kerasemote" / "pretrained" / "kerasemote-tiny")]


@pytest.mark.slow
def test_the_installed_wheel_loads_the_default_model_and_generates(installed_wheel):
    _, site = installed_wheel
    found = _run_installed(site, "import kerasemote; m = kerasemote.load_model(); "
                                 "print(m.config.name, m.generate('a grinning face emoji', steps=2, seed=0).shape)")
    assert found.splitlines()[-1] == "kerasemote-tiny (1, 64, 64, 3)"


def test_committed_weights_match_the_sha256_and_sizes_in_the_weights_manifest():
    manifest = (ROOT / "weights" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w.]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|$", manifest, flags=re.M)
    assert {name for name, _, _ in rows} == MODEL_FILES
    for name, size, digest in rows:
        path = SHIPPED / name
        assert path.stat().st_size == int(size.replace(",", "")), name
        assert _sha256(path) == digest, f"{path}: sha256 differs from weights/README.md"
