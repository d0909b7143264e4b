#!/usr/bin/env bash
# Regenerate docs/RESULTS.md's runs and figures from main, section by section.
#
#   bash scripts/reproduce_results.sh                 # every section (many hours on 2 cores)
#   bash scripts/reproduce_results.sh qwen_reference  # one or more sections by name
#   bash scripts/reproduce_results.sh --list          # the sections and what each costs
#   bash scripts/reproduce_results.sh --quick [SECTION ...]   # a smaller version of each
#
# --quick runs every measurement with 8 prompts and 32 new tokens (and trains the testbed
# for 30 steps) into runs/quick/, to see that each section works end to end: its numbers
# are not RESULTS.md's, its figures are not copied to docs/img/ and no run to docs/runs/.
# Run folders go to $RUNS (default runs/, git-ignored) and are resumed when run again;
# figures are copied to docs/img/ under the names RESULTS.md shows, and the reference
# runs, merged without their answers' text (visage-local merge --without-answers), are
# written to docs/runs/, where RESULTS.md's reference tables are read from. AdvBench is the copy
# shipped in the package (the same file as the reference code's), so no path is needed.
# Each section prints the tables RESULTS.md quotes (visage-local compare).
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/visage-local
PY=.venv/bin/python
QUICK=()
TRAIN_STEPS=120
RUNS=${RUNS:-runs}
IMG=docs/img
PUBLISHED=docs/runs  # run folders without their answers' text, committed
SHORT=64  # the shorter answers the reference runs are read off at
TESTBED=models/testbed
HARMFUL=models/harmful
if [ "${1:-}" = "--quick" ]; then
  shift
  QUICK=(--limit 8 --max-new-tokens 32)
  SHORT=16
  TRAIN_STEPS=30
  RUNS=$RUNS/quick
  IMG=$RUNS/img
  PUBLISHED=$RUNS/published
  TESTBED=$RUNS/testbed-model
  HARMFUL=$RUNS/harmful-models
fi
Q=models/qwen2.5-coder-0.5b-instruct.gguf
ADVBENCH=visage_local/data/advbench/harmful_behaviors.csv  # for the training scripts
mkdir -p "$RUNS" "$IMG"

need_qwen() { [ -f "$Q" ] || $V fetch qwen2.5-coder-0.5b-instruct; }

# The reference setting in two shards (each the origin and half of the other points), for
# two sittings or two machines; qwen_reference runs both and merges them.
# about 1 h 20 min on 2 cores (a broken point: 80 answers of 512 tokens, up to 16 min)
qwen_reference_1() {
  need_qwen
  $V sweep "$Q" --shard 1/2 --out "$RUNS/qwen-1d-ref-1" "${QUICK[@]}"
  $V merge "$RUNS/qwen-1d-ref-1" --without-answers --overwrite --out "$PUBLISHED/qwen-1d-ref-1"
  $PY scripts/shorter_answers.py "$PUBLISHED/qwen-1d-ref-1" --max-new-tokens $SHORT
}

# about 1 h 20 min
qwen_reference_2() {
  need_qwen
  $V sweep "$Q" --shard 2/2 --out "$RUNS/qwen-1d-ref-2" "${QUICK[@]}"
  $V merge "$RUNS/qwen-1d-ref-2" --without-answers --overwrite --out "$PUBLISHED/qwen-1d-ref-2"
  $PY scripts/shorter_answers.py "$PUBLISHED/qwen-1d-ref-2" --max-new-tokens $SHORT
}

# The reference setting (both shards, merged without the answers' text), and its
# 64-token landscape read off the same answers. A shard made elsewhere can stand in for
# its folder (SHARD1=DIR or SHARD2=DIR, e.g. docs/runs/qwen-1d-ref-1, a shard merged
# --without-answers).
# about 2 h 40 min (both shards, unless given)
qwen_reference() {
  local one=${SHARD1:-} two=${SHARD2:-}
  [ -n "$one" ] || { qwen_reference_1; one=$RUNS/qwen-1d-ref-1; }
  [ -n "$two" ] || { qwen_reference_2; two=$RUNS/qwen-1d-ref-2; }
  $V merge "$one" "$two" --without-answers --overwrite --out "$PUBLISHED/qwen-1d-ref"
  cp "$PUBLISHED/qwen-1d-ref/landscape.png" "$IMG/qwen-1d-ref.png"
  $PY scripts/shorter_answers.py "$PUBLISHED/qwen-1d-ref" --max-new-tokens $SHORT \
    --plot "$IMG/qwen-1d-tokens.png"
}

# about 5 min: early stop against whole answers on Qwen's origin, same batch size
early_stop() {
  need_qwen
  $PY scripts/early_stop_effect.py "$Q"
}

# about 20 min
smollm2() {
  $V sweep smollm2-135m-instruct --max-new-tokens 64 --out "$RUNS/smollm2-1d" "${QUICK[@]}"
  cp "$RUNS/smollm2-1d/landscape.png" "$IMG/smollm2-1d.png"
}

# about 40 min
requant_modes() {
  need_qwen
  for mode in same q8_0 f16; do
    $V sweep "$Q" --max-new-tokens 64 --range 0.2 --steps 8 --requant $mode \
      --out "$RUNS/qwen-requant-$mode" "${QUICK[@]}"
  done
  $PY scripts/plot_runs.py "$RUNS/qwen-requant-same:same (own types)" \
    "$RUNS/qwen-requant-q8_0:q8_0" "$RUNS/qwen-requant-f16:f16" -o "$IMG/qwen-requant.png"
}

# about 40 min
conditions() {
  need_qwen
  local P=(--limit 40 --range 0.3 --steps 12 --max-new-tokens 64)
  $V sweep "$Q" "${P[@]}" --system-prompt none --system-prompt default --system-prompt safety \
    --out "$RUNS/qwen-system-prompts" "${QUICK[@]}"
  $V sweep "$Q" "${P[@]}" --attack none --attack prefix-injection --out "$RUNS/qwen-attack" "${QUICK[@]}"
  cp "$RUNS/qwen-system-prompts/overlay.png" "$IMG/qwen-system-prompts.png"
  cp "$RUNS/qwen-attack/overlay.png" "$IMG/qwen-attack.png"
  $V compare "$RUNS/qwen-system-prompts" "$RUNS/qwen-attack"
  $PY scripts/check_report.py "$RUNS/qwen-system-prompts/system-default--attack-none" \
    --screenshot "$IMG/report.png"
}

# about 5 min
interpolation_q8_0() {
  need_qwen
  $V perturb "$Q" --alpha 0 --requant q8_0 -o "$RUNS/qwen-q8_0.gguf"
  $V interpolate "$Q" "$RUNS/qwen-q8_0.gguf" --limit 40 --steps 4 --extra 1 \
    --max-new-tokens 64 --out "$RUNS/qwen-interp-q8_0" "${QUICK[@]}"
  cp "$RUNS/qwen-interp-q8_0/landscape.png" "$IMG/qwen-interp-q8_0.png"
}

# about 45 min
directions() {
  need_qwen
  local P=(--limit 40 --range 0.3 --steps 12 --max-new-tokens 64)
  $V sweep "$Q" "${P[@]}" --directions 3 --out "$RUNS/qwen-dirs" "${QUICK[@]}"
  $V sweep "$Q" "${P[@]}" --directions 3 --adaptive --out "$RUNS/qwen-adaptive" "${QUICK[@]}"
  $V compare "$RUNS/qwen-dirs" "$RUNS/qwen-adaptive"
}

# Qwen along 5 random directions (80 AdvBench prompts, 64 tokens), each merged without
# answers; VISAGE's mean and two-level interval for K = 1, 3, 5, each direction's
# fragility and bootstrap modes, and the reference landscape's.
# about 1 h 15 min (5 directions x 21 points, about 45 s a point)
qwen_directions() {
  need_qwen
  $V sweep "$Q" --max-new-tokens 64 --directions 5 --out "$RUNS/qwen-dirs5" "${QUICK[@]}"
  for k in 0 1 2 3 4; do
    $V merge "$RUNS/qwen-dirs5/direction-$k" --without-answers --overwrite \
      --out "$PUBLISHED/qwen-dirs5/direction-$k"
  done
  $PY scripts/directions_table.py "$PUBLISHED/qwen-dirs5"
  $PY scripts/directions_table.py docs/runs/qwen-1d-ref --single
}

# about 1 h: make the testbed (13 min), its landscape, SmolLM2 -> testbed
testbed() {
  $PY scripts/make_testbed.py --prompts "$ADVBENCH" --out "$TESTBED" --steps "$TRAIN_STEPS"
  cp $TESTBED/testbed.curve.png "$IMG/testbed-curve.png"
  $V sweep $TESTBED/testbed.q8_0.gguf --max-new-tokens 64 --capability --benign \
    --judge keyword --judge keyword-paper --out "$RUNS/testbed-1d" "${QUICK[@]}"
  cp "$RUNS/testbed-1d/capability.png" "$IMG/testbed-capability.png"
  $V interpolate smollm2-135m-instruct $TESTBED/testbed.f16.gguf --requant f16 \
    --steps 4 --capability --no-coherence --limit 40 --max-new-tokens 64 \
    --judge keyword --judge keyword-paper --out "$RUNS/interp-smollm2-testbed" "${QUICK[@]}"
  cp "$RUNS/interp-smollm2-testbed/capability.png" "$IMG/interp-smollm2-testbed.png"
}

# about 30 min; needs testbed
harmful() {
  $PY scripts/harmful_finetune.py --pairs "$ADVBENCH" --base "$TESTBED/testbed.f16.gguf" \
    --out "$HARMFUL"
  local runs=()
  for n in 10 50 100 100-safe-100; do
    $V interpolate $TESTBED/testbed.f16.gguf "$HARMFUL/harmful-$n.f16.gguf" \
      --steps 4 --extra 1 --no-coherence --limit 40 --max-new-tokens 64 \
      --judge keyword --judge keyword-paper --out "$RUNS/interp5-testbed-harmful-$n" "${QUICK[@]}"
    runs+=("$RUNS/interp5-testbed-harmful-$n:$n")
  done
  # keyword is each run's first judge, so its summary.json is the one plotted
  $PY scripts/plot_runs.py "${runs[@]}" -o "$IMG/testbed-harmful-interp.png"
  $V compare "${runs[@]%%:*}"
}

# about 10 min
capability() {
  need_qwen
  $V sweep "$Q" --limit 40 --steps 8 --range 0.4 --max-new-tokens 64 --capability \
    --no-coherence --out "$RUNS/qwen-capability" "${QUICK[@]}"
  cp "$RUNS/qwen-capability/capability.png" "$IMG/qwen-capability.png"
}

# The testbed's Q8_0 export and the four harmful finetunes screened against the testbed
# (F16), with landscapes; the leaderboard and its screenshot.
# about 20 min; needs testbed and harmful
screen_testbed() {
  $V screen $TESTBED/testbed.q8_0.gguf $HARMFUL/harmful-{10,50,100,100-safe-100}.f16.gguf \
    --base $TESTBED/testbed.f16.gguf --landscape --limit 40 --max-new-tokens 64 --steps 10 \
    --interpolation-steps 4 --out "$RUNS/screen-testbed" "${QUICK[@]}"
  $PY scripts/check_report.py "$RUNS/screen-testbed" --screenshot "$IMG/leaderboard.png"
}

# The quantisation ladder of the testbed, exported in F16 (a true ladder): every default
# rung's own answers, KL and top tokens kept; then landscapes (3 directions) of four rungs.
# about 25 min
ladder_testbed() {
  $V ladder $TESTBED/testbed.f16.gguf --limit 40 --max-new-tokens 64 --out "$RUNS/ladder-testbed" \
    "${QUICK[@]}"
  $V ladder $TESTBED/testbed.f16.gguf --type Q8_0 --type Q4_K_M --type Q2_K --landscape \
    --steps 10 --limit 40 --max-new-tokens 64 --out "$RUNS/ladder-testbed-landscape" "${QUICK[@]}"
  cp "$RUNS/ladder-testbed/ladder.png" "$IMG/ladder-testbed.png"
  cp "$RUNS/ladder-testbed-landscape/ladder.png" "$IMG/ladder-testbed-landscape.png"
}

# Qwen from its own file (mostly Q5_0) down: the rungs are requantised from a quant. Every
# rung's own answers (80 prompts), then landscapes (3 directions, 20 prompts) of four rungs.
# about 50 min
ladder_qwen() {
  need_qwen
  $V ladder "$Q" --requantize --type Q4_K_M --type IQ4_XS --type Q3_K_M --type Q2_K \
    --max-new-tokens 64 --out "$RUNS/ladder-qwen" "${QUICK[@]}"
  $V ladder "$Q" --requantize --type Q4_K_M --type Q3_K_M --type Q2_K --landscape --steps 10 \
    --limit 20 --max-new-tokens 64 --out "$RUNS/ladder-qwen-landscape" "${QUICK[@]}"
  cp "$RUNS/ladder-qwen/ladder.png" "$IMG/ladder-qwen.png"
  cp "$RUNS/ladder-qwen-landscape/ladder.png" "$IMG/ladder-qwen-landscape.png"
}

SECTIONS=(qwen_reference early_stop smollm2 requant_modes conditions interpolation_q8_0
  directions qwen_directions testbed harmful screen_testbed capability ladder_testbed ladder_qwen)

PARTS=(qwen_reference_1 qwen_reference_2)  # run by name only

if [ "${1:-}" = "--list" ]; then
  for s in "${SECTIONS[@]}" "${PARTS[@]}"; do
    printf '%-20s %s\n' "$s" "$(grep -B1 "^$s()" "$0" | head -1 | sed 's/^# //')"
  done
  exit 0
fi
for s in "${@:-${SECTIONS[@]}}"; do
  if ! printf '%s\n' "${SECTIONS[@]}" "${PARTS[@]}" | grep -qx "$s"; then
    echo "unknown section: $s (see --list)" >&2
    exit 2
  fi
done
for s in "${@:-${SECTIONS[@]}}"; do
  echo "== $s"
  "$s"
done
