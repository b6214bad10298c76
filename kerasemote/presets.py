"""Named models: where their weights come from, a download cache with checksums, and ``load_model``.

A preset is plain data: either a model directory shipped with the package
(``kerasemote-tiny``, the default: offline, nothing to download) or the files to
fetch (URL + sha256). On a machine with internet the files are downloaded once
into the cache, converted into a model directory, and loaded from there
afterwards. Without internet the download fails fast with a message naming the
file and the two ways round: ``--weights PATH`` (a copy of the file/folder) or
``kerasemote convert``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from kerasemote import storage
from kerasemote.convert.kerascv_layout import KERASCV_FILES

if TYPE_CHECKING:
    from kerasemote.model import StableDiffusion

_HF = "https://huggingface.co"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model: its checkpoint format and the files that make it."""

    name: str
    description: str
    source_format: str  # "kerascv" (a folder of keras-cv .h5 files), "single_file" or "model_dir" (shipped)
    files: tuple[RemoteFile, ...]
    local_dir: str | None = None  # a model directory shipped with the package


_PACKAGE = Path(__file__).resolve().parent


def shipped_model_dir(name: str) -> str:
    """The folder of a model directory that ships with kerasemote.

    The repository commits it as ``weights/<name>``; ``setup.py`` installs ``weights/`` as the
    data package ``kerasemote.pretrained``. So an installed wheel has it at
    ``kerasemote/pretrained/<name>`` and a source checkout or editable install at
    ``weights/<name>`` beside the package.

    Args:
        name: the model folder's name, e.g. ``"kerasemote-tiny"``.

    Returns:
        The first of those two folders that holds a ``config.json``; the checkout's path when
        neither does (``load_model`` then names it in its error).
    """
    installed, checkout = _PACKAGE / "pretrained" / name, _PACKAGE.parent / "weights" / name
    return str(installed if (installed / "config.json").is_file() else checkout)


PRESETS: dict[str, Preset] = {
    "kerasemote-tiny": Preset(
        "kerasemote-tiny",
        "kerasemote's own 64 px emoji model (14.8 M parameters, trained from scratch on the packaged "
        "emoji; weights/README.md). Ships with the package: offline, nothing to download.",
        "model_dir",
        (),
        local_dir=shipped_model_dir("kerasemote-tiny"),
    ),
    "sd-v1-4": Preset(
        "sd-v1-4",
        "Stable Diffusion 1.4, keras-cv's published weights (keras-cv numerics).",
        "kerascv",
        tuple(RemoteFile(*published) for published in KERASCV_FILES.values()),
    ),
    "sd-v1-5": Preset(
        "sd-v1-5",
        "Stable Diffusion 1.5 (v1-5-pruned-emaonly.safetensors, original single-file layout).",
        "single_file",
        (
            RemoteFile(
                "v1-5-pruned-emaonly.safetensors",
                _HF
                + "/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors",
                "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
            ),
        ),
    ),
}


# What every command and ``load_model`` use when no model is named: works offline, in seconds.
DEFAULT_MODEL = "kerasemote-tiny"


class PresetUnavailable(RuntimeError):
    """A preset's files could not be downloaded (no internet, wrong checksum...)."""


def cache_dir() -> str:
    """Where downloads and converted presets live: ``$KERASEMOTE_CACHE`` or ``~/.cache/kerasemote``."""
    return os.environ.get("KERASEMOTE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "kerasemote"))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(file: RemoteFile, folder: str, timeout: float = 15.0) -> str:
    """Fetch one file into ``folder`` (skipped when a copy with the right sha256 is there).

    Raises:
        PresetUnavailable: the URL cannot be reached or the checksum does not match.
    """
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, file.filename)
    if os.path.exists(target) and sha256_of(target) == file.sha256:
        return target
    partial = target + ".part"
    try:
        with urllib.request.urlopen(file.url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=file.filename) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise PresetUnavailable(
            f"Could not download {file.filename} from {file.url} ({err}). Without internet, fetch the file "
            f"on another machine and either pass it with `--weights PATH` (the file, or the folder holding "
            f"it), or run `kerasemote convert PATH --out DIR` and then use `--model DIR`."
        ) from None
    found = sha256_of(partial)
    if found != file.sha256:
        os.remove(partial)
        raise PresetUnavailable(
            f"{file.filename}: sha256 expected {file.sha256}, found {found}; the download is corrupt or "
            "the file changed upstream."
        )
    os.replace(partial, target)
    return target


def _source_path(preset: Preset, weights: str | None, folder: str) -> str:
    """The checkpoint to convert: the user's copy, or downloaded files."""
    if weights is not None:
        return weights
    paths = [download(f, folder) for f in preset.files]
    return folder if preset.source_format == "kerascv" else paths[0]


def load_model(
    name_or_dir: str | None = None, weights: str | None = None, cache: str | None = None
) -> "StableDiffusion":
    """Load a model by preset name, from a model directory, or from a convertible checkpoint.

    Args:
        name_or_dir: a preset (``kerasemote-tiny``, ``sd-v1-4``, ``sd-v1-5``; see ``PRESETS``),
            a model directory (local, Drive or ``gs://``), or a checkpoint that
            ``kerasemote convert`` reads (converted on the fly). Default: ``DEFAULT_MODEL``,
            the ``kerasemote-tiny`` model shipped with the package (offline).
        weights: a downloadable preset's checkpoint already on this machine (the file, or the
            folder holding it), used instead of downloading.
        cache: where downloads and converted presets live; default ``cache_dir()``.

    Returns:
        The loaded ``StableDiffusion``.

    Example:
        >>> model = load_model()                     # kerasemote-tiny, 64 px
        >>> images = model.generate("a grinning face emoji", num_images=2, seed=0)
    """
    # Imported here: the preset table and downloads work without TensorFlow (the CLI reads them).
    from kerasemote.convert import convert_checkpoint
    from kerasemote.model import StableDiffusion

    name_or_dir = DEFAULT_MODEL if name_or_dir is None else name_or_dir
    if name_or_dir in PRESETS:
        return _load_preset(PRESETS[name_or_dir], weights, cache)
    if storage.exists(storage.join(name_or_dir, "config.json")):
        return StableDiffusion.load(name_or_dir)
    if storage.exists(name_or_dir):
        return convert_checkpoint(name_or_dir)
    raise FileNotFoundError(
        f"{name_or_dir!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an existing model "
        "directory or checkpoint."
    )


def _load_preset(preset: Preset, weights: str | None, cache: str | None) -> "StableDiffusion":
    """A shipped preset from its folder; a downloadable one from the cache, converting it once."""
    from kerasemote.convert import convert_checkpoint
    from kerasemote.model import StableDiffusion

    if preset.local_dir is not None:
        if weights is not None:
            raise ValueError(
                f"Preset {preset.name!r} ships with kerasemote, so `--weights` has nothing to replace; it "
                f"is for the downloadable presets ({', '.join(n for n, other in PRESETS.items() if other.files)}): "
                f"name one with `--model`, or pass a model directory as `--model DIR`."
            )
        if not os.path.isfile(os.path.join(preset.local_dir, "config.json")):
            raise FileNotFoundError(
                f"Preset {preset.name!r} ships with kerasemote, but {preset.local_dir} has no config.json: "
                "this installation lacks the model files. Reinstall kerasemote (the wheel carries them as "
                "kerasemote/pretrained/), or pass a copy of the folder with `--model DIR`."
            )
        model = StableDiffusion.load(preset.local_dir)
        model.source = preset.name  # what trained files record: the name, not this machine's path
        return model
    root = cache or cache_dir()
    converted = os.path.join(root, "models", preset.name)
    if weights is None and os.path.exists(os.path.join(converted, "config.json")):
        return StableDiffusion.load(converted)
    source = _source_path(preset, weights, os.path.join(root, "downloads", preset.name))
    model = convert_checkpoint(source)
    model.save(converted, extra={"preset": preset.name})
    return model
