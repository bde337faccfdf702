#!/usr/bin/env python3
"""Build the benchmark corpus: one JSONL file of {"id", "text"} lines made from
the real data in shared/data/corpus (web, wiki, books, math, code, in that order).

Usage: python bench/make_corpus.py OUT.jsonl [DATA_DIR]
"""
import json
import re
import sys
from pathlib import Path

# A wikitext top-level heading (" = Title = ") starts a new document.
HEADING = re.compile(r"^ = [^=].* = $")


def web(data):
    for name in ("cc_en_head-0091.jsonl", "cc_en_head-0174.jsonl"):
        with open(data / "web" / name, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                yield rec["id"], rec["text"]


def wiki(data):
    for name in ("wikitext-2-test.txt", "wikitext-2-valid.txt"):
        lines = (data / "wiki" / name).read_text(encoding="utf-8").split("\n")
        docs, cur = [], []
        for line in lines:
            if HEADING.match(line) and cur:
                docs.append(cur)
                cur = []
            cur.append(line)
        docs.append(cur)
        # Drop a whitespace-only preamble before the first heading.
        if docs and not HEADING.match(docs[0][0]) and all(not l.strip() for l in docs[0]):
            docs = docs[1:]
        for i, doc in enumerate(docs):
            text = "\n".join(doc)
            if not text.endswith("\n"):
                text += "\n"
            yield f"{name}:{i}", text


def books(data):
    yield "tinyshakespeare.txt", (data / "books" / "tinyshakespeare.txt").read_text(encoding="utf-8")


def math(data):
    with open(data / "math" / "gsm8k-train.jsonl", encoding="utf-8") as f:
        for row, line in enumerate(f):
            rec = json.loads(line)
            yield f"gsm8k-train:{row}", rec["question"] + "\n" + rec["answer"]


def code(data):
    with open(data / "code" / "rust-crates.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            yield rec["id"], rec["text"]


def main():
    out = Path(sys.argv[1])
    data = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared/data/corpus"
    n = 0
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        for source in (web, wiki, books, math, code):
            for doc_id, text in source(data):
                f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                n += 1
    print(f"{out}: {n} documents, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
