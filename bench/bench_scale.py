#!/usr/bin/env python3
"""How mixforge's corpus run scales: 10 MB, 100 MB and 1 GB corpora built from the real
benchmark corpus, wall time, MB/s per core and peak RSS at each size, and the fitted exponents
of time and memory against size (log-log least squares).

Usage: python bench/bench_scale.py MIXFORGE_BINARY BASE.jsonl WORKDIR [SIZES_MB]

The corpora are one generated stream cut at 10, 100 and 1000 MB (so each is a prefix of the
next). The base is 2,000 documents drawn (seeded) from BASE.jsonl; document j is base document
j mod 2,000. The first 2,000 are the base itself; after that each is, by a seeded draw, an exact copy of its base document (10 %), a
light edit of it (10 %: one word in 100 replaced, 5-gram Jaccard ≈ 0.9, a near duplicate) or a
heavy edit (80 %: one word in 4 replaced, Jaccard ≈ 0.1, a new document). Planted duplicate
counts are written beside the corpus, so the run's removals can be checked against them.
Replacement words are drawn from the base's own words. Each size runs the default pipeline
(profile, filters, exact + MinHash dedup verified at Jaccard 0.8) on one thread (--threads 1).
"""
import json
import math
import os
import random
import shutil
import sys

from timing import timed

SEED = 17
BASE_DOCS = 2000
EXACT, LIGHT = 0.10, 0.10


def generate(base_path, out_dir, sizes_mb):
    """Writes corpus-<MB>.jsonl for every size and planted.json; reuses them when present."""
    paths = {mb: os.path.join(out_dir, f"corpus-{mb}.jsonl") for mb in sizes_mb}
    planted_path = os.path.join(out_dir, "planted.json")
    if all(os.path.exists(p) for p in paths.values()) and os.path.exists(planted_path):
        with open(planted_path) as f:
            return paths, json.load(f)
    with open(base_path, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    rng = random.Random(SEED)
    vocab = sorted({w for text in docs for w in text.split(" ") if w.isalpha()})
    # A shuffled 2,000 (~3.5 MB): every size, even the smallest, has planted duplicates.
    base = rng.sample(docs, min(BASE_DOCS, len(docs)))
    words = [text.split(" ") for text in base]
    targets = sorted((mb * 1_000_000, mb) for mb in sizes_mb)
    files = {mb: open(paths[mb] + ".tmp", "w", encoding="utf-8") for mb in sizes_mb}
    planted = {str(mb): {"docs": 0, "exact": 0, "light": 0} for mb in sizes_mb}
    written, j = 0, 0
    while targets and written < targets[-1][0]:
        b = j % len(base)
        if j < len(base):
            kind, text = "base", base[b]
        else:
            draw = rng.random()
            if draw < EXACT:
                kind, text = "exact", base[b]
            else:
                kind, every = ("light", 100) if draw < EXACT + LIGHT else ("heavy", 4)
                edited = list(words[b])
                start = rng.randrange(min(every, len(edited)))
                picks = rng.choices(vocab, k=len(edited[start::every]))
                edited[start::every] = picks
                text = " ".join(edited)
        line = json.dumps({"id": f"s{j}", "text": text}, ensure_ascii=False) + "\n"
        size = len(line.encode("utf-8"))
        for limit, mb in targets:
            if written + size <= limit:
                files[mb].write(line)
                planted[str(mb)]["docs"] += 1
                if kind in ("exact", "light"):
                    planted[str(mb)][kind] += 1
        written += size
        j += 1
        targets = [(limit, mb) for limit, mb in targets if written < limit]
    for mb, f in files.items():
        f.close()
        os.replace(paths[mb] + ".tmp", paths[mb])
    with open(planted_path, "w") as f:
        json.dump(planted, f, indent=2)
    return paths, planted


def fit_exponent(xs, ys):
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main():
    binary, base, work = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    sizes_mb = [int(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "10,100,1000").split(",")]
    os.makedirs(work, exist_ok=True)
    paths, planted = generate(base, work, sizes_mb)
    rows = []
    for mb in sizes_mb:
        corpus = paths[mb]
        out = os.path.join(work, f"run-{mb}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [binary, "--threads", "1", "corpus", "run", "--source", f"scale={corpus}", "--out", out, "--json"]
        stdout, wall, rss = timed(cmd)
        manifest = json.loads(stdout)
        reasons = manifest["totals"]["dropped"]
        size = os.path.getsize(corpus)
        rows.append({
            "mb": mb, "bytes": size, "docs": manifest["totals"]["docs_in"], "wall_s": wall,
            "mb_per_s_per_core": size / 1e6 / wall, "peak_rss_mib": rss,
            "removed_exact": reasons.get("exact_dup", 0), "removed_near": reasons.get("near_dup", 0),
            "planted": planted[str(mb)], "timings": manifest["timings"], "command": " ".join(cmd),
        })
        shutil.rmtree(out, ignore_errors=True)
    xs = [r["bytes"] for r in rows]
    report = {"rows": rows}
    if len(rows) > 1:
        report["time_exponent"] = fit_exponent(xs, [r["wall_s"] for r in rows])
        report["memory_exponent"] = fit_exponent(xs, [r["peak_rss_mib"] for r in rows])
        a, b = rows[0], rows[-1]
        report["rss_mib_per_million_docs_marginal"] = (b["peak_rss_mib"] - a["peak_rss_mib"]) / ((b["docs"] - a["docs"]) / 1e6)
    # Removals are labelled by each cluster's keeper (the longest document, often a light edit),
    # so totals are compared: removed exact + near against planted exact copies + light edits.
    print(f"{'size':>6} {'docs':>9} {'wall s':>8} {'MB/s/core':>9} {'peak RSS MiB':>12} {'removed':>9} {'planted copies':>15}")
    for r in rows:
        p = r["planted"]
        print(f"{r['mb']:>4}MB {r['docs']:>9,} {r['wall_s']:>8.2f} {r['mb_per_s_per_core']:>9.1f} {r['peak_rss_mib']:>12.1f} "
              f"{r['removed_exact'] + r['removed_near']:>9,} {p['exact'] + p['light']:>15,}")
    if len(rows) > 1:
        print(f"time exponent {report['time_exponent']:.3f} (target <= 1.05); memory exponent {report['memory_exponent']:.3f}")
        print(f"peak RSS grows {report['rss_mib_per_million_docs_marginal']:.0f} MiB per million documents")
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"raw results: {os.path.join(work, 'results.json')}")


if __name__ == "__main__":
    main()
