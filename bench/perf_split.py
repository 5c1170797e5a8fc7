#!/usr/bin/env python3
"""Splits `perf record -g` profiles of proxies (`compare.py --perf-record DIR`)
into where a relayed message's CPU goes. Each sample counts once, in the
first of these its stack holds: the wait for events (`io_uring_enter` or
`epoll_wait`, with what they run inside), a send (`sendto`, `sendmsg`,
`write`, `splice`: with the loopback TCP work and the peer's softirq it
carries), a receive (`recvfrom`, `recvmsg`, `read`), io_uring task work run
on the way out of another system call, other kernel time, user space.

usage: python3 bench/perf_split.py DIR [--per-msg N]
  --per-msg N: relayed messages per profile; prints µs per message (at
  perf's default 4000 Hz) instead of shares of the samples.
"""
import argparse
import collections
import glob
import os
import subprocess

CLASSES = [
    ("wait (io_uring_enter / epoll_wait)", ("__do_sys_io_uring_enter", "do_epoll_wait")),
    ("send (loopback TCP, peer softirq)", ("__sys_sendto", "__sys_sendmsg", "ksys_write", "do_splice")),
    ("recv", ("__sys_recvfrom", "__sys_recvmsg", "ksys_read")),
    ("io_uring task work on syscall exit", ("task_work_run",)),
]


def classify(path):
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym,dso"], capture_output=True, text=True).stdout
    counts = collections.Counter()
    frames = []

    def flush():
        if not frames:
            return
        syms = {s for s, _ in frames}
        for label, keys in CLASSES:
            if any(k in syms for k in keys):
                counts[label] += 1
                break
        else:
            counts["other kernel" if "kernel" in frames[0][1] else "user space"] += 1
        frames.clear()

    for line in out.splitlines():
        parts = line.split()
        if not parts:
            flush()
            continue
        frames.append((parts[1] if len(parts) > 1 else "", parts[-1]))
    flush()
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--per-msg", type=float, default=0, help="relayed messages per profile")
    ap.add_argument("--hz", type=float, default=4000)
    a = ap.parse_args()
    split = {os.path.basename(p)[:-5]: classify(p) for p in sorted(glob.glob(os.path.join(a.dir, "*.data")))}
    names = list(split)
    print(f"| {'µs per relayed message' if a.per_msg else '% of samples'} | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label in [c[0] for c in CLASSES] + ["other kernel", "user space", "total"]:
        cells = []
        for n in names:
            c, total = split[n], sum(split[n].values())
            v = total if label == "total" else c[label]
            cells.append(f"{v / a.hz * 1e6 / a.per_msg:.2f}" if a.per_msg else f"{100 * v / total:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
