#!/usr/bin/env bash
# Creates a throwaway virtualenv at .bench/venv with the peer tool (datatrove)
# used by bench/datatrove_corpus.py. Idempotent: skips the install if it works.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.bench/venv
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import datatrove, pyarrow" 2>/dev/null; then
    echo "datatrove already installed in $VENV"
    exit 0
fi

mkdir -p .bench
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# spacy supplies the English word tokenizer; orjson is needed by JsonlReader;
# pyarrow reads mixforge's profile.parquet to compare the removed sets.
"$VENV/bin/pip" install --quiet "datatrove[processing]==0.10.1" spacy orjson pyarrow
"$VENV/bin/python" -c "import datatrove"
echo "datatrove installed in $VENV"
