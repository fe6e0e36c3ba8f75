#!/usr/bin/env bash
# Commit the real-data study's finished trials (the main grid and the thesis-budget rows) with the README's findings block made from exactly those files
# (issue 14: commit after each repeat). A snapshot is taken first, so a trial finishing meanwhile waits for the
# next commit instead of landing in git without its README numbers.
#   bash benchmarks/commit_real_results.sh "message"
set -eu
cd "$(dirname "$0")/.."
REAL=benchmarks/results/real
SNAP=$(mktemp -d)
trap 'rm -rf "$SNAP"' EXIT
mkdir -p "$REAL/thesis_budget"
cp -r "$REAL/results" "$REAL/thesis_budget" "$SNAP/"
(cd "$SNAP" && find . -path '*/trials/*.json' | while read -r f; do  # a trial counts once its .json is written
    if [ -f "${f%.json}.npz" ]; then echo "$f"; echo "${f%.json}.npz"; fi; done; find . -name provenance.json -o -name "*.parquet") \
    | sed "s|^\./||" | sort -u > "$SNAP.files"
.venv/bin/mri-synth findings --profile real --results "$SNAP/results/cnn" --thesis-budget "$SNAP/thesis_budget" > /dev/null
sed "s|^|$REAL/|" "$SNAP.files" | xargs git add --
git add README.md
git commit -q -m "${1:-Real-data study: finished trials recorded, findings block regenerated}" && git log --oneline -1
rm -f "$SNAP.files"
