#!/usr/bin/env python3
"""How a sharded corpus run divides its work: the SIZE_MB corpus of bench_scale.py (100 MB by
default) cut into FILES files, run as one process and as N tasks, with the kept documents written by the reduce
(`corpus reduce`) or by the tasks (`corpus reduce --finish-by-shard`, `corpus finish --shard
I/N`, `corpus finish`). Every command runs on one thread (--threads 1).

Usage: python bench/bench_sharded.py MIXFORGE_BINARY BASE.jsonl WORKDIR [N] [FILES] [REPEATS] [SIZE_MB]

Two figures per arm:
- measured: with 2 tasks at once on this 2-core machine (N = 2), the wall time of each stage
  (the tasks of a stage started together), summed along the chain;
- per task: every command of the N-task chain run alone, one after another, and the chain's
  critical path on N cores (the slowest task of each array plus the one-node jobs): what N
  cores would see without contention for disk and memory bandwidth.
Each figure is the median of REPEATS runs. The kept files of every arm are checked against the
single process's, byte for byte.
"""
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from bench_scale import generate
from timing import timed


def split(corpus, out_dir, files):
    """Cuts corpus into `files` contiguous runs of lines (duplicates stay spread across files)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(corpus, encoding="utf-8") as f:
        lines = f.readlines()
    for k in range(files):
        with open(os.path.join(out_dir, f"part-{k:02d}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(lines[k * len(lines) // files:(k + 1) * len(lines) // files])


def together(cmds):
    """Runs cmds at once; returns the wall time until the last ends."""
    started = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in cmds]
    for p, c in zip(procs, cmds):
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"command failed: {' '.join(c)}\n{err[-3000:]}")
    return time.monotonic() - started


def kept_bytes(run):
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(run, "kept", "*.parquet")))}


def main():
    binary, base, work = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    files = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    repeats = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    size_mb = int(sys.argv[7]) if len(sys.argv) > 7 else 100
    os.makedirs(work, exist_ok=True)
    paths, _ = generate(base, work, [size_mb])
    data = os.path.join(work, f"split-{size_mb}-{files}")
    if not os.path.isdir(data):
        split(paths[size_mb], data, files)
    source = f"scale={data}/*.jsonl"
    mf = [binary, "--threads", "1", "corpus"]
    runs = {}

    def chain(tasks, by_shard, out, parallel):
        """One sharded run; returns {stage: seconds}: stage wall times (parallel) or per-command times."""
        shutil.rmtree(out, ignore_errors=True)
        t = {}
        maps = [mf + ["run", "--source", source, "--out", out, "--shard", f"{i}/{tasks}"] for i in range(tasks)]
        # The settings file is written by the first task: write it before tasks race for it.
        subprocess.run(maps[0], check=True, capture_output=True)
        if parallel:
            t["map"] = together(maps)
        else:
            t["map"] = max(timed(c)[1] for c in maps)
        t["reduce"] = timed(mf + ["reduce", "--out", out] + (["--finish-by-shard"] if by_shard else []))[1]
        if by_shard:
            finishes = [mf + ["finish", "--out", out, "--shard", f"{i}/{tasks}"] for i in range(tasks)]
            if parallel:
                t["finish"] = together(finishes)
            else:
                t["finish"] = max(timed(c)[1] for c in finishes)
            t["merge"] = timed(mf + ["finish", "--out", out])[1]
        return t

    single_out = os.path.join(work, "single")
    arms = {"single process": [], }
    details = {}
    for _ in range(repeats):
        shutil.rmtree(single_out, ignore_errors=True)
        arms["single process"].append(timed(mf + ["run", "--source", source, "--out", single_out])[1])
    reference = kept_bytes(single_out)
    for label, tasks, by_shard, parallel in [
        ("2 tasks at once, reduce writes kept/", 2, False, True),
        ("2 tasks at once, kept/ by task", 2, True, True),
        (f"{n} tasks' critical path, reduce writes kept/", n, False, False),
        (f"{n} tasks' critical path, kept/ by task", n, True, False),
    ]:
        out = os.path.join(work, f"run-{tasks}-{'finish' if by_shard else 'reduce'}")
        stages = [chain(tasks, by_shard, out, parallel) for _ in range(repeats)]
        if kept_bytes(out) != reference:
            sys.exit(f"{label}: kept files differ from the single process's")
        arms[label] = [sum(s.values()) for s in stages]
        details[label] = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    single = statistics.median(arms["single process"])
    print(f"{os.path.getsize(paths[size_mb]) / 1e6:.0f} MB in {files} files, one thread per command, median of {repeats}")
    print(f"{'arm':<48} {'seconds':>8} {'speed-up':>8}  stages (median s)")
    for label, walls in arms.items():
        med = statistics.median(walls)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in details.get(label, {}).items())
        print(f"{label:<48} {med:>8.2f} {single / med:>7.2f}x  {stages}")
    with open(os.path.join(work, f"sharded-{size_mb}.json"), "w") as f:
        json.dump({"arms": arms, "stages": details, "files": files, "tasks": n, "mb": size_mb}, f, indent=2)
    print(f"raw results: {os.path.join(work, f'sharded-{size_mb}.json')}")


if __name__ == "__main__":
    main()
