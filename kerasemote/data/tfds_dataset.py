"""A TensorFlow Datasets builder over a prepared directory, so ``tfds.load`` works offline.

The prepared directory is the builder's ``manual_dir``; nothing is downloaded.

Example:
    >>> import tensorflow_datasets as tfds
    >>> import kerasemote.data.tfds_dataset  # registers "kerasemote_emoji"
    >>> ds = tfds.load(
    ...     "kerasemote_emoji", split="train", data_dir="emoji_512/tfds",
    ...     download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir="emoji_512")},
    ... )

or simply ``kerasemote.data.tfds_load("emoji_512", split="train")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from kerasemote.data.dataset import label_names, read_metadata
from kerasemote.data.split import SPLITS

TFDS_NAME = "kerasemote_emoji"


class KerasemoteEmoji(tfds.core.GeneratorBasedBuilder):
    """Emoji images with captions, vendors and labels from a ``kerasemote data prepare`` directory."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Prepared-directory format version 1."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Run `kerasemote data prepare --source twemoji --out DIR` and pass DIR as the manual_dir "
        "(tfds.download.DownloadConfig(manual_dir=DIR))."
    )
    # TFDS derives this from the package through `importlib_resources`, which some TFDS
    # installs lack (ModuleNotFoundError); the answer is simply this file.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "caption": tfds.features.Text(),
                "description": tfds.features.Text(),
                "vendor": tfds.features.Text(),
                "emoji": tfds.features.Text(),
                "label": tfds.features.Tensor(shape=(), dtype=np.int64),  # -1: unlabelled
                "label_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "caption"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = Path(dl_manager.manual_dir)
        rows = read_metadata(root)
        names = label_names(root)
        return {split: self._generate_examples(root, [r for r in rows if r["split"] == split], names)
                for split in SPLITS if any(r["split"] == split for r in rows)}

    def _generate_examples(self, root: Path, rows: list[dict], names: list[str]) -> Iterator[tuple[str, dict]]:
        for row in rows:
            yield row["id"], {
                "image": os.fspath(root / row["file"]),
                "caption": row["caption"],
                "description": row.get("description") or "",
                "vendor": row["vendor"],
                "emoji": row.get("emoji") or "",
                "label": names.index(row["label"]) if row["label"] else -1,
                "label_name": row["label"] or "",
            }


def tfds_builder(prepared_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> KerasemoteEmoji:
    """Build (once) the TFDS version of a prepared directory and return the builder.

    Args:
        prepared_dir: written by :func:`kerasemote.data.prepare`.
        data_dir: where TFDS writes its records; default ``<prepared_dir>/tfds`` so two
            prepared sets never share a cache.
    """
    prepared_dir = Path(prepared_dir)
    read_metadata(prepared_dir)  # a clear error before TFDS wraps it
    builder = KerasemoteEmoji(data_dir=os.fspath(data_dir or prepared_dir / "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(prepared_dir))
    )
    return builder


def tfds_load(
    prepared_dir: str | os.PathLike, split: str = "train", data_dir: str | os.PathLike | None = None, **as_dataset: Any
):
    """``tfds.load`` equivalent for a prepared directory: elements are feature dicts.

    Extra keyword arguments go to ``builder.as_dataset`` (``as_supervised=True`` gives
    ``(image uint8, caption)`` pairs).
    """
    return tfds_builder(prepared_dir, data_dir).as_dataset(split=split, **as_dataset)
