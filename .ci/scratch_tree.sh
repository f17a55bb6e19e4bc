# Sourced by the CI jobs that build alexnet_c a second way (sanitize.sh, emulated_cuda.sh):
# the build happens in a scratch copy of the source tree, so the normal in-place build
# and any pip-installed alexnet_c are left alone.
#
# scratch_tree NAME KEEP: sets WORK to a new temporary folder holding the source tree at
# the repository root (tracked files plus untracked, not-ignored ones: what `git status`
# would show; tracked files deleted in the work tree are skipped; outside a git
# checkout, everything but build outputs), removed when the shell exits unless KEEP is 1;
# then makes sure $PYTHON can run setup.py there (an in-place build, unlike `pip install .`,
# uses this environment's setuptools).
scratch_tree() {
    local name=$1 keep=$2
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")"
    if [[ "$keep" == "1" ]]; then
        echo "$name: keeping $WORK"
    else
        trap 'rm -rf "$WORK"' EXIT
    fi
    (
        cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
        if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git ls-files -z --cached --others --exclude-standard \
                | while IFS= read -r -d '' f; do [[ -f "$f" ]] && printf '%s\0' "$f"; done \
                | tar --null -T - -cf - | tar -xf - -C "$WORK"
        else
            tar --exclude=./build --exclude='*.so' --exclude='*.o' --exclude=.git -cf - . | tar -xf - -C "$WORK"
        fi
    )
    "$PYTHON" -c "import setuptools, numpy" 2>/dev/null || "$PYTHON" -m pip install -q setuptools
}
