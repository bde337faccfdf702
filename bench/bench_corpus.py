#!/usr/bin/env python3
"""mixforge vs datatrove on the same real corpus, same settings, one core each.

Usage: python bench/bench_corpus.py MIXFORGE_BINARY CORPUS.jsonl WORKDIR [RUNS]

Measures, for each tool: MB/s per core for profile + exact dedup and for MinHash dedup
(word 5-grams, 112 hashes = 14 bands x 8 rows, no candidate verification, as datatrove),
peak RSS, documents removed, and the overlap of the two removed sets. MB/s is the JSONL
file size over the whole process's wall time. Prints a table and writes WORKDIR/results.json.
"""
import json
import os
import shutil
import statistics
import sys

import pyarrow.parquet as pq

from timing import timed

HERE = os.path.dirname(os.path.abspath(__file__))


def mixforge_removed(out):
    table = pq.read_table(os.path.join(out, "profile.parquet"), columns=["source_id", "drop_reason"]).to_pylist()
    return sorted(row["source_id"] for row in table if row["drop_reason"] is not None)


def mixforge_clustered(out):
    """Every document in a duplicate cluster, keepers included: removed sets also differ by
    keeper policy (mixforge keeps the longest, datatrove the first seen)."""
    table = pq.read_table(os.path.join(out, "profile.parquet"), columns=["source_id", "dup_cluster"]).to_pylist()
    return {row["source_id"] for row in table if row["dup_cluster"] is not None}


def run_mixforge(binary, corpus, work, name, args, runs):
    results = []
    for i in range(runs):
        out = os.path.join(work, f"mf-{name}-{i}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [binary, "--threads", "1", "corpus", *args, "--source", f"bench={corpus}", "--out", out, "--json"]
        stdout, wall, rss = timed(cmd)
        manifest = json.loads(stdout)
        results.append({"wall": wall, "rss_mib": rss, "timings": manifest["timings"], "out": out})
    return results, mixforge_removed(results[-1]["out"]), " ".join(cmd)


def run_datatrove(corpus, work, mode, runs):
    results = []
    for i in range(runs):
        out = os.path.join(work, f"dt-{mode}-{i}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, os.path.join(HERE, "datatrove_corpus.py"), mode, corpus, out]
        stdout, wall, rss = timed(cmd)
        report = json.loads(stdout.strip().splitlines()[-1])
        results.append({"wall": wall, "rss_mib": rss, "pipeline_seconds": report["total_seconds"], "removed": report["removed_ids"]})
    return results, results[-1]["removed"], " ".join(cmd)


def summarize(results, size):
    walls = sorted(r["wall"] for r in results)
    return {
        "wall_s": {"min": walls[0], "median": statistics.median(walls), "max": walls[-1]},
        "mb_per_s_per_core": round(size / 1e6 / statistics.median(walls), 2),
        "peak_rss_mib": round(max(r["rss_mib"] for r in results), 1),
    }


def main():
    binary, corpus, work = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    os.makedirs(work, exist_ok=True)
    size = os.path.getsize(corpus)
    same_minhash = ["--no-exact", "--num-perm", "112", "--bands", "14", "--rows", "8", "--ngram", "5", "--no-verify"]
    cases = {
        "profile+exact": {
            "mixforge": run_mixforge(binary, corpus, work, "exact", ["run", "--filter-mode", "off", "--no-minhash"], runs),
            "datatrove": run_datatrove(corpus, work, "exact", runs),
        },
        "minhash": {
            "mixforge": run_mixforge(binary, corpus, work, "minhash", ["dedup", *same_minhash], runs),
            "datatrove": run_datatrove(corpus, work, "minhash", max(1, runs - 2)),
        },
    }
    # Start-up: `mixforge` links no libtorch; `mixforge-torch` beside it does (as every command
    # did before the split), so the pair shows what a corpus command no longer pays.
    torch = os.path.join(os.path.dirname(binary), "mixforge-torch")
    startup = {}
    for name, exe in (("mixforge", binary), ("mixforge-torch", torch)):
        samples = [timed([exe, "corpus", "--help"])[1:] for _ in range(10)]
        startup[name] = {
            "wall_s_median": statistics.median(w for w, _ in samples),
            "peak_rss_mib": max(r for _, r in samples),
        }
    # Our default (verified candidates, 16 x 8 of 128) for reference; not the like-for-like row.
    verified = run_mixforge(binary, corpus, work, "minhash-verified", ["dedup", "--no-exact"], 1)
    report = {"corpus": corpus, "bytes": size, "runs": runs, "cases": {}, "startup_corpus_help": startup}
    print(f"corpus: {corpus} ({size:,} bytes); one core each; MB/s = file bytes / whole-process wall time\n")
    print(f"{'case':<15} {'tool':<10} {'wall median s':>13} {'MB/s/core':>10} {'peak RSS MiB':>13} {'removed':>8}")
    for case, tools in cases.items():
        entry = {}
        for tool, (results, removed, cmd) in tools.items():
            s = summarize(results, size)
            s.update({"removed": len(removed), "removed_ids": removed, "command": cmd})
            if tool == "mixforge":
                s["stage_timings_last_run"] = results[-1]["timings"]
            entry[tool] = s
            print(f"{case:<15} {tool:<10} {s['wall_s']['median']:>13.3f} {s['mb_per_s_per_core']:>10.2f} {s['peak_rss_mib']:>13.1f} {len(removed):>8}")
        a, b = set(entry["mixforge"]["removed_ids"]), set(entry["datatrove"]["removed_ids"])
        clustered = mixforge_clustered(tools["mixforge"][0][-1]["out"])
        entry["overlap"] = {
            "both": len(a & b),
            "only_mixforge": sorted(a - b),
            "only_datatrove": sorted(b - a),
            "datatrove_removed_in_a_mixforge_cluster": len(b & clustered),
        }
        entry["speedup"] = round(entry["mixforge"]["mb_per_s_per_core"] / entry["datatrove"]["mb_per_s_per_core"], 1)
        report["cases"][case] = entry
        print(f"{'':<15} speed-up {entry['speedup']}x; removed by both: {len(a & b)}, only mixforge: {len(a - b)}, "
              f"only datatrove: {len(b - a)}; datatrove's removed in a mixforge cluster: {len(b & clustered)} of {len(b)}")
    v_results, v_removed, v_cmd = verified
    v = summarize(v_results, size)
    v.update({"removed": len(v_removed), "removed_ids": v_removed, "command": v_cmd})
    report["minhash_default_verified"] = v
    for name, s in startup.items():
        print(f"`{name} corpus --help`: {s['wall_s_median'] * 1000:.0f} ms (median of 10), peak RSS {s['peak_rss_mib']:.0f} MiB")
    print(f"\nmixforge default MinHash (128 perms, 16x8, verified at Jaccard 0.8): {v['mb_per_s_per_core']} MB/s/core, removed {len(v_removed)}")
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"raw results: {os.path.join(work, 'results.json')}")


if __name__ == "__main__":
    main()
