"""Where a training run's memory goes: resident memory over one run, phase by phase.

    python bench/train.py --memory --sizes 512 --runs ours --keep /tmp/sd     # writes the model once
    python bench/train_timeline.py --root /tmp/sd --task ti --size 512 --checkpointing

Loads the sd-v1 model directory of a ``bench/train.py --keep`` folder (random weights) in this process and
runs ``--steps`` steps of textual inversion or LoRA (the same settings as ``bench/train.py --memory``) while a
thread samples the resident set size (RSS) every 20 ms. Prints, at each phase mark (imported, loaded, latent
caching start and end, every step), the RSS then and the highest RSS since the previous mark, and the whole
run's peak. TensorFlow's environment comes from the caller: ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`` is set unless
given (as ``kerasemote`` commands do); ``TF_ENABLE_ONEDNN_OPTS=0`` compares TensorFlow's own kernels.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train import our_config, our_task, rss_mib  # noqa: E402


class Timeline:
    """RSS sampled on a thread, and named marks."""

    def __init__(self, every: float = 0.02):
        self.samples: list[tuple[float, float]] = []  # (seconds, MiB)
        self.marks: list[tuple[float, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)
        self.start = time.perf_counter()
        self._thread.start()

    def _sample(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.start, rss_mib()))
            time.sleep(every)

    def mark(self, name: str) -> None:
        self.marks.append((time.perf_counter() - self.start, name, rss_mib()))

    def report(self) -> None:
        self._stop.set()
        self._thread.join()
        previous = 0.0
        print(f"{'seconds':>8}  {'mark':16} {'RSS GiB':>8} {'peak since previous mark':>26}")
        for at, name, rss in self.marks:
            window = [value for t, value in self.samples if previous <= t <= at] or [rss]
            print(f"{at:8.1f}  {name:16} {rss / 1024:8.2f} {max(window) / 1024:26.2f}")
            previous = at
        print(f"peak RSS of the run: {max(value for _, value in self.samples) / 1024:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="a bench/train.py --keep folder (ours/, images/)")
    parser.add_argument("--task", choices=("ti", "lora"), default="ti")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--no-cache", action="store_true", help="encode every step instead of caching latents")
    args = parser.parse_args()

    timeline = Timeline()
    from kerasemote.training import loop
    from kerasemote.model import StableDiffusion
    from kerasemote.training import train

    timeline.mark("imported")
    model = StableDiffusion.load(os.path.join(args.root, "ours"))
    timeline.mark("loaded")
    strategy, images = our_task(args.task, args.root, args.size)
    encode = loop.encode_latent_cache

    def marked_encode(*a, **k):
        timeline.mark("caching latents")
        result = encode(*a, **k)
        timeline.mark("latents cached")
        return result

    loop.encode_latent_cache = marked_encode
    config = our_config(args.task, args.steps, not args.no_cache, args.checkpointing)
    with tempfile.TemporaryDirectory() as out:
        timeline.mark("training starts")
        train(model, strategy, images, config, out, callbacks=[lambda step, loss: timeline.mark(f"step {step}")])
    timeline.report()


if __name__ == "__main__":
    main()
