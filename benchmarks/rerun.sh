#!/usr/bin/env bash
# The rerun of profiles/rerun.yaml (issues 23 and 24), one repeat at a time, with a commit after each: every trial of
# one architecture and evaluation for repeat r (all its arms: a whole paired repeat), then the next repeat.
#
# Run it from a worktree of a clean commit, so every trial cites that commit, with the caches of the main checkout
# (the generators are trained once per subset there and shared by every arm and architecture):
#   git worktree add --detach ../runner HEAD && cd ../runner
#   MRI_SYNTH_DATA=$(realpath ../shared/data/alzheimer_mri) PYTHONPATH=$PWD MRI_SYNTH_CACHE=$MAIN/.cache \
#       MAIN=$MAIN bash benchmarks/rerun.sh ARCH SPLIT [FIRST [LAST]]
# Two of these at once (say slice and subject), one thread each, fill the 2 cores. MAIN (the main checkout) receives
# the trial files and a commit after each repeat; without it they stay here. A killed run resumes where it stopped.
# FIRST > LAST runs the repeats downwards, and each repeat first takes MAIN's trial files of it (a trial MAIN holds is
# read, not trained again): a run from 0 up and another from 9 down (in two worktrees) share one evaluation's grid and
# stop training where they meet.
# ARCH may list several architectures (cnn,resnet18,vit_tiny): each repeat then runs all of them in turn, so they
# draw on its generator while the cache holds it (a cache does not outlive a session's machine; retraining a
# generator costs about 26 CPU-minutes).
set -euo pipefail
ARCHS=${1:?usage: rerun.sh ARCH[,ARCH...] SPLIT [FIRST [LAST]] (ARCH: cnn, resnet18, vit_tiny; SPLIT: slice or subject)}
SPLIT=${2:?usage: rerun.sh ARCH[,ARCH...] SPLIT [FIRST [LAST]]}
FIRST=${3:-0}
LAST=${4:-9}
MRI=${MRI:-${MAIN:-.}/.venv/bin/mri-synth}
README=benchmarks/results/rerun/README.md  # the blocks beside the trials; the project's README shows them too
STEP=1; (( FIRST > LAST )) && STEP=-1
for repeat in $(seq "$FIRST" "$STEP" "$LAST"); do
 for ARCH in ${ARCHS//,/ }; do
  OUT=benchmarks/results/rerun/results/$ARCH
  echo "== $ARCH $SPLIT repeat $repeat"
  if [[ -n ${MAIN:-} && -d $MAIN/$OUT/trials ]]; then  # what another run committed is not trained again
    mkdir -p "$OUT/trials" && cp -rn "$MAIN/$OUT/trials/." "$OUT/trials/"
  fi
  OMP_NUM_THREADS=1 $MRI study --profile rerun --arch "$ARCH" --split "$SPLIT" --first-seed "$repeat" --seeds 1
  if [[ -n ${MAIN:-} ]]; then
    mkdir -p "$MAIN/$OUT" && cp -r "$OUT/." "$MAIN/$OUT/"
    $MRI tables "$MAIN/$OUT" >/dev/null  # every trial file there, the other evaluation's included
    for readme in "$README" README.md; do
      $MRI findings --profile rerun --arch "$ARCH" --results "$MAIN/$OUT" --readme "$MAIN/$readme" >/dev/null
    done
    for try in 1 2 3; do  # another run (the other evaluation) may be committing at the same moment
      git -C "$MAIN" add "$OUT" "$README" README.md && {  # nothing new (a repeat MAIN held): nothing to commit
        git -C "$MAIN" diff --cached --quiet -- "$OUT" "$README" README.md || git -C "$MAIN" commit -q -m \
          "rerun ($ARCH, $SPLIT): repeat $repeat, trials and findings blocks" -- "$OUT" "$README" README.md
      } && break || sleep 5
    done
  fi
 done
done
