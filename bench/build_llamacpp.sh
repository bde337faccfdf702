#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-perplexity once, from the sources PyPI's
# llama-cpp-python sdist vendors (PyPI is reachable where GitHub may not be), with cmake from
# PyPI. Prints the directory holding the binaries.
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
VERSION=0.3.16
ROOT="${MIXFORGE_LLAMACPP:-${HOME:-/tmp}/.cache/mixforge-llamacpp-$VERSION}"
if [ ! -x "$ROOT/build/bin/llama-bench" ]; then
    mkdir -p "$ROOT"
    "$MIXFORGE_PYTHON" -m pip install --quiet --disable-pip-version-check cmake >&2
    if [ ! -d "$ROOT/src" ]; then
        "$MIXFORGE_PYTHON" -m pip download --quiet --no-deps "llama-cpp-python==$VERSION" -d "$ROOT/sdist" >&2
        mkdir -p "$ROOT/src"
        tar xzf "$ROOT/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$ROOT/src" --strip-components=3 \
            "llama_cpp_python-$VERSION/vendor/llama.cpp"
    fi
    echo "building llama.cpp $VERSION (llama-bench, llama-perplexity; a few minutes) ..." >&2
    "$MIXFORGE_VENV/bin/cmake" -S "$ROOT/src" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF >&2
    "$MIXFORGE_VENV/bin/cmake" --build "$ROOT/build" --target llama-bench llama-perplexity -j "$(nproc)" >&2
fi
echo "$ROOT/build/bin"
