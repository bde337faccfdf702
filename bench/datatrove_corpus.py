#!/usr/bin/env python3
"""Run datatrove 0.10.1 dedup on one JSONL corpus file, in one process, and print
one JSON object (timings + results) as the last line of stdout.

Usage: python bench/datatrove_corpus.py minhash|exact INPUT.jsonl WORKDIR

Run it with the peer venv made by bench/setup_peer.sh (.bench/venv/bin/python).
WORKDIR should be fresh: datatrove skips tasks it finds already completed there.
"""
import glob
import gzip
import json
import os
import sys
import time
from importlib.metadata import version

from loguru import logger

import datatrove.executor.base as dt_executor_base
import datatrove.utils.logging as dt_logging
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig


# --- Quiet logging: datatrove re-adds a stderr sink for every task, so patch its
# hooks to log to the per-task file only, and show only warnings on stderr.
def _quiet_task_logger(logging_dir, rank, local_rank=0, node_rank=-1):
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    logger.add(logfile, level="DEBUG")
    return logfile


def _quiet_default_logger():
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


dt_executor_base.add_task_logger = _quiet_task_logger
dt_logging.setup_default_logger = _quiet_default_logger
_quiet_default_logger()


def text_of(doc: Document) -> str:
    # The return annotation matters: datatrove picks the hash input type from it.
    return doc.text


def read_jsonl_dir(folder):
    """All records written by a JsonlWriter into folder (gzip by default)."""
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.jsonl*"), recursive=True)):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def stages(mode, reader, work, kept, removed):
    """The (pipeline, tasks) list for one dedup mode; each runs as its own executor."""
    if mode == "minhash":
        cfg = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8)
        return [
            ([reader, MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg)], 1),
            # datatrove asserts tasks % num_buckets == 0 for the bucket stage.
            ([MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=cfg)],
             cfg.num_buckets),
            ([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=cfg)], 1),
            ([reader,
              MinhashDedupFilter(input_folder=f"{work}/remove_ids", exclusion_writer=JsonlWriter(removed)),
              JsonlWriter(kept)], 1),
        ]
    if mode == "exact":
        cfg = ExactDedupConfig(content_getter=text_of)  # default 64-bit xxhash
        return [
            ([reader, ExactDedupSignature(output_folder=f"{work}/sigs", config=cfg)], 1),
            ([ExactFindDedups(data_folder=f"{work}/sigs", output_folder=f"{work}/dups", config=cfg)], 1),
            ([reader,
              ExactDedupFilter(data_folder=f"{work}/dups", config=cfg, exclusion_writer=JsonlWriter(removed)),
              JsonlWriter(kept)], 1),
        ]
    sys.exit(f"unknown mode {mode!r} (expected minhash or exact)")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    mode, input_path, work = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    reader = JsonlReader(data_folder=os.path.dirname(input_path), glob_pattern=os.path.basename(input_path))
    kept, removed = f"{work}/kept", f"{work}/removed"

    stage_seconds = []
    for i, (pipeline, tasks) in enumerate(stages(mode, reader, work, kept, removed), start=1):
        executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=f"{work}/logs/stage{i}")
        t0 = time.perf_counter()
        executor.run()
        stage_seconds.append(round(time.perf_counter() - t0, 3))

    with open(input_path, encoding="utf-8") as f:
        docs_in = sum(1 for _ in f)
    result = {
        "tool": "datatrove",
        "version": version("datatrove"),
        "mode": mode,
        "input_bytes": os.path.getsize(input_path),
        "docs_in": docs_in,
        "stage_seconds": stage_seconds,
        "total_seconds": round(sum(stage_seconds), 3),
        "removed_ids": sorted(rec["id"] for rec in read_jsonl_dir(removed)),
        "kept": sum(1 for _ in read_jsonl_dir(kept)),
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
