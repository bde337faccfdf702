# Shared by the scripts: one persistent build directory outside the checkout, so a fresh
# clone (and CI) reuses earlier builds instead of paying the ~15-minute cold build again,
# and one persistent virtualenv holding PyPI's torch==2.11.0 (libtorch for tch) and
# transformers, gguf and torchao (test references).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/mixforge-target}"
export MIXFORGE_VENV="${MIXFORGE_VENV:-${HOME:-/tmp}/.cache/mixforge-venv}"
MIXFORGE="$CARGO_TARGET_DIR/release/mixforge"

# Creates the virtualenv once (about a minute from PyPI); later calls only check it.
ensure_venv() {
    local stamp="$MIXFORGE_VENV/.mixforge-ready-torch2.11.0-gguf-torchao"
    if [ ! -f "$stamp" ]; then
        echo "setting up $MIXFORGE_VENV (torch==2.11.0, transformers, gguf, torchao) ..." >&2
        python3 -m venv "$MIXFORGE_VENV"
        "$MIXFORGE_VENV/bin/pip" install --quiet --disable-pip-version-check \
            torch==2.11.0 'transformers>=4.57' 'gguf>=0.17' torchao==0.18.0 safetensors numpy
        touch "$stamp"
    fi
    # torch-sys finds libtorch through the venv's python; the binaries get an rpath to it.
    export PATH="$MIXFORGE_VENV/bin:$PATH"
    export LIBTORCH_USE_PYTORCH=1
    export MIXFORGE_PYTHON="$MIXFORGE_VENV/bin/python"
}
ensure_venv
