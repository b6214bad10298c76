"""What a run shows while it trains: TensorBoard scalars and images, validation grids, the loss curve."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import tensorflow as tf

from kerasemote import storage
from kerasemote.training.config import TrainConfig
from kerasemote.training.runlock import TENSORBOARD_DIR, VALIDATION_DIR

logger = logging.getLogger(__name__)


def summary_writer(out_dir: str):
    """A TensorBoard writer of ``out_dir/tensorboard``, or None where TensorFlow cannot write there."""
    try:
        return tf.summary.create_file_writer(storage.join(out_dir, TENSORBOARD_DIR))
    except (tf.errors.OpError, ValueError) as err:  # e.g. a filesystem TF cannot write
        logger.warning("No TensorBoard logs in %s (%s).", out_dir, err)
        return None


def _summary_metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    # What tensorboard's own tf.summary.scalar/image write, without needing the tensorboard package.
    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))


def log_scalars(writer, step: int, loss: float, optimizer) -> None:
    """The step's loss and learning rate as TensorBoard scalars (nothing without a writer)."""
    if writer is None:
        return
    with writer.as_default(step=step):
        for tag, value in (("loss", loss), ("learning_rate", float(optimizer.learning_rate))):
            tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_summary_metadata("scalars"))


def _log_images(writer, step: int, images: np.ndarray) -> None:
    """uint8 (N, H, W, 3) images in TensorBoard's image-summary layout [width, height, png...]."""
    if writer is None:
        return
    height, width = images.shape[1:3]
    pngs = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), *pngs])
    with writer.as_default(step=step):
        tf.summary.write("validation", tensor, metadata=_summary_metadata("images"))


def validate(model, prompts: Sequence[str], config: TrainConfig, out_dir: str, step: int, writer=None) -> str:
    """Generate one image per prompt with a fixed seed; write ``validation/step-N.png`` (and TensorBoard)."""
    from kerasemote.images import save_grid

    images = model.generate(list(prompts), steps=config.validation_steps, seed=config.validation_seed,
                            progress=False)
    path = save_grid(images, storage.join(out_dir, VALIDATION_DIR, f"step-{step:08d}.png"), labels=list(prompts))
    _log_images(writer, step, images)
    return path


def save_loss_curve(losses: Sequence[float], path: str) -> str | None:
    """Loss per step and its running mean as a PNG (matplotlib, no display needed)."""
    if not losses:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps[window - 1 :], smooth, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    storage.write_bytes(path, buffer.getvalue())
    return path
