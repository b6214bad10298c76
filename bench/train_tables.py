"""The tables ``bench/train.py`` prints from its workers' results."""

from __future__ import annotations


def memory_table(results: dict[tuple[int, str, str], dict], sizes: list[int], tasks: tuple[str, ...],
                 labels: tuple[str, str, str], precision: str) -> None:
    """Peaks in GiB, ours / diffusers, what checkpointing saves and its step-time cost; "-" where not measured.

    ``results``: (size, task, label) -> a worker's result; ``labels``: ours, ours with checkpointing, diffusers.
    """
    def peak(r):
        return r["peak_rss_mib"] / 1024 if r and not r.get("killed") else None

    def ratio(a, b, fmt):
        return fmt.format(a / b) if a and b else "-"

    print(f"\n{precision}, batch 1")
    print("  px  task  peak GiB: ours  ours ckpt  diffusers  ours/diffusers  ckpt/diffusers  ckpt saves  "
          "ckpt step time")
    for size in sizes:
        for task in tasks:
            plain, ckpt, theirs_r = (results.get((size, task, label)) for label in labels)
            p, c, d = peak(plain), peak(ckpt), peak(theirs_r)
            saves = f"{1 - c / p:.0%}" if p and c else "-"
            time_cost = ratio(c and ckpt["median_s"], p and plain["median_s"], "{:.2f}x")
            cells = [f"{x:.2f}" if x else ("killed" if r and r.get("killed") else "-")
                     for x, r in ((p, plain), (c, ckpt), (d, theirs_r))]
            print(f"{size:4d}  {task:4s}  {cells[0]:>14s}  {cells[1]:>9s}  {cells[2]:>9s}  "
                  f"{ratio(p, d, '{:.2f}'):>14s}  {ratio(c, d, '{:.2f}'):>14s}  {saves:>10s}  {time_cost:>13s}")


def report(all_results: dict[tuple[str, int], dict[str, dict]]) -> None:
    """Step times of each config's runs (``bench/train.py`` without ``--memory``), ours / diffusers, peak RSS."""
    print("\nconfig     px  task  ours s/step  diffusers s/step  ours/diffusers  "
          "no-cache/cache  peak RSS ours/diffusers (MiB)")
    for (name, size), r in all_results.items():
        for task in ("ti", "lora"):
            ours_r, theirs_r = r[f"{task} ours"], r[f"{task} diffusers"]
            speedup = (f"{r['lora ours no-cache']['median_s'] / ours_r['median_s']:14.2f}"
                       if task == "lora" else f"{'-':>14s}")
            print(f"{name:8s} {size:4d}  {task:4s}  {ours_r['median_s']:11.3f}  {theirs_r['median_s']:16.3f}  "
                  f"{ours_r['median_s'] / theirs_r['median_s']:14.2f}  {speedup}  "
                  f"{ours_r['peak_rss_mib']:8.0f} / {theirs_r['peak_rss_mib']:.0f}")
