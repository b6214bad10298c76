"""Time to build a model's Keras parts, each case in its own fresh process.

Cases:

* ``load_model()``: the shipped ``kerasemote-tiny`` (build every part, then assign the saved weights);
* ``StableDiffusion(<config>)``: a fresh randomly initialized model of each ``--configs`` entry
  (default ``tiny`` and ``sd-v1``; sd-v1 needs about 4 GiB of memory for its float32 weights);
* ``... to be loaded``: the same built inside ``skip_random_init()``, as ``StableDiffusion.load``
  builds it before assigning the saved arrays (the build part of a load, without reading files).

Each child imports kerasemote (and TensorFlow) first, then times only the call, and reports the
seconds spent building each part; the import time is printed apart.

    python bench/build.py
    python bench/build.py --configs tiny --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
LOAD_MODEL = "load_model()"
TO_LOAD = " to be loaded"


def child(case: str) -> dict[str, float]:
    """Build one case in this process; returns seconds per phase (import, each part, total)."""
    start = time.perf_counter()
    import kerasemote
    from kerasemote.config import get_config
    from kerasemote.model import StableDiffusion
    from kerasemote.models.skip_init import skip_random_init

    times = {"import": time.perf_counter() - start}
    # Each part's build is timed by wrapping its ``build_with_dummy``: the total stays the real call's.
    for part_class in _part_classes():
        _timed(part_class, times)
    start = time.perf_counter()
    if case == LOAD_MODEL:
        kerasemote.load_model()
    elif case.endswith(TO_LOAD):
        with skip_random_init():
            StableDiffusion(get_config(case[: -len(TO_LOAD)]))
    else:
        StableDiffusion(get_config(case))
    times["total"] = time.perf_counter() - start
    return times


def _part_classes() -> list[type]:
    from kerasemote.models.text_encoder import TextEncoder
    from kerasemote.models.unet import UNet
    from kerasemote.models.vae import VAEDecoder, VAEEncoder

    return [TextEncoder, UNet, VAEEncoder, VAEDecoder]


def _timed(part_class: type, times: dict[str, float]) -> None:
    build = part_class.build_with_dummy

    def timed_build(self, *args, **kwargs):
        start = time.perf_counter()
        result = build(self, *args, **kwargs)
        times[part_class.__name__] = times.get(part_class.__name__, 0.0) + time.perf_counter() - start
        return result

    part_class.build_with_dummy = timed_build


def run_case(case: str) -> dict[str, float]:
    """``child(case)`` in a fresh Python process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"bench/build.py --child {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _label(case: str) -> str:
    if case == LOAD_MODEL:
        return case
    return f"StableDiffusion({case.removesuffix(TO_LOAD)})" + (TO_LOAD if case.endswith(TO_LOAD) else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="*", default=["tiny", "sd-v1"], help="configs built with random weights")
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per case")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    for case in [LOAD_MODEL, *(c + suffix for c in args.configs for suffix in ("", TO_LOAD))]:
        for _ in range(args.repeat):
            times = run_case(case)
            parts = "  ".join(f"{name} {times[name]:.2f}" for name in ("TextEncoder", "UNet", "VAEEncoder", "VAEDecoder")
                              if name in times)
            print(f"{_label(case):40s} {times['total']:6.2f} s   (builds: {parts}; import {times['import']:.1f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
