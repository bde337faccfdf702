# Shared by the scripts: one persistent build directory outside the checkout, so a fresh
# clone (and CI) reuses earlier builds instead of paying the ~15-minute cold build again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/mixforge-target}"
MIXFORGE="$CARGO_TARGET_DIR/release/mixforge"
