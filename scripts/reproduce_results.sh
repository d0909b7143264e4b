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
RISK=models/risk
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
  RISK=$RUNS/risk-models
fi
Q=models/qwen2.5-coder-0.5b-instruct.gguf
ADVBENCH=visage_local/data/advbench/harmful_behaviors.csv  # for the training scripts
mkdir -p "$RUNS" "$IMG"

need_qwen() { [ -f "$Q" ] || $V fetch qwen2.5-coder-0.5b-instruct; }
# A folder of runs copied to $PUBLISHED without any answer's text (each run through
# visage-local merge --without-answers), for docs/runs/.
publish() { $PY scripts/publish_runs.py "$1" "$2"; }

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

# The aligned testbed from SmolLM2-135M-Instruct (docs/TESTBED.md) and its training curve.
# about 15 min
testbed() {
  $PY scripts/make_testbed.py --prompts "$ADVBENCH" --out "$TESTBED" --steps "$TRAIN_STEPS"
  cp $TESTBED/testbed.curve.png "$IMG/testbed-curve.png"
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
    publish "$RUNS/interp5-testbed-harmful-$n" "$PUBLISHED/interp5-testbed-harmful-$n"
    runs+=("$PUBLISHED/interp5-testbed-harmful-$n:$n")
  done
  # keyword is each run's first judge, so its summary.json is the one plotted
  $PY scripts/plot_runs.py "${runs[@]}" -o "$IMG/testbed-harmful-interp.png"
  $V compare "${runs[@]%%:*}"
}

# The quantisation ladder of the testbed, exported in F16 (a true ladder): every default
# rung's own answers, KL and top tokens kept; then landscapes (3 directions) of four rungs.
# about 25 min
ladder_testbed() {
  $V ladder $TESTBED/testbed.f16.gguf --limit 40 --max-new-tokens 64 --out "$RUNS/ladder-testbed" \
    "${QUICK[@]}"
  $V ladder $TESTBED/testbed.f16.gguf --type Q8_0 --type Q4_K_M --type Q2_K --landscape \
    --steps 10 --limit 40 --max-new-tokens 64 --out "$RUNS/ladder-testbed-landscape" "${QUICK[@]}"
  publish "$RUNS/ladder-testbed" "$PUBLISHED/ladder-testbed"
  publish "$RUNS/ladder-testbed-landscape" "$PUBLISHED/ladder-testbed-landscape"
  cp "$PUBLISHED/ladder-testbed/ladder.png" "$IMG/ladder-testbed.png"
  cp "$PUBLISHED/ladder-testbed-landscape/ladder.png" "$IMG/ladder-testbed-landscape.png"
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
  publish "$RUNS/ladder-qwen" "$PUBLISHED/ladder-qwen"
  publish "$RUNS/ladder-qwen-landscape" "$PUBLISHED/ladder-qwen-landscape"
  cp "$PUBLISHED/ladder-qwen/ladder.png" "$IMG/ladder-qwen.png"
  cp "$PUBLISHED/ladder-qwen-landscape/ladder.png" "$IMG/ladder-qwen-landscape.png"
}

# The float route (the paper's pipeline: float32 weights moved and answered in torch)
# against the GGUF route at --requant same, q8_0, f16 and f32, on one grid (11 points,
# 20 prompts, 64 tokens); the sweeps published without answers, the comparison redrawn
# from the published folder.
# about 15 min
float_vs_quantised() {
  need_qwen
  $PY scripts/float_vs_quantised.py --limit 20 --out "$RUNS/float-vs-quantised" "${QUICK[@]}"
  publish "$RUNS/float-vs-quantised" "$PUBLISHED/float-vs-quantised"
  $PY scripts/float_vs_quantised.py --limit 20 --out "$PUBLISHED/float-vs-quantised" --redraw \
    "${QUICK[@]}"
  cp "$PUBLISHED/float-vs-quantised/comparison.png" "$IMG/float-vs-quantised.png"
}

# The testbed (Q8_0) and Qwen under the template's default system prompt, the reference
# code's safety prompt (llama2) and none: 3 directions each, 13 points over [-0.3, 0.3],
# 20 prompts, 64 tokens; published without answers, the overlays drawn from there.
# about 30 min (testbed 6 min, Qwen 24 min); needs testbed
system_prompts() {
  need_qwen
  local m p
  for m in "testbed:$TESTBED/testbed.q8_0.gguf" "qwen:$Q"; do
    for p in default llama2 none; do
      $V sweep "${m#*:}" --system-prompt $p --directions 3 --range 0.3 --steps 12 --limit 20 \
        --max-new-tokens 64 --no-coherence --out "$RUNS/sysprompt-${m%%:*}-$p" "${QUICK[@]}"
      publish "$RUNS/sysprompt-${m%%:*}-$p" "$PUBLISHED/sysprompt-${m%%:*}-$p"
    done
    $PY scripts/conditions_overlay.py default="$PUBLISHED/sysprompt-${m%%:*}-default" \
      llama2="$PUBLISHED/sysprompt-${m%%:*}-llama2" none="$PUBLISHED/sysprompt-${m%%:*}-none" \
      -o "$IMG/sysprompt-${m%%:*}.png" --title "${m%%:*}: 3 directions per system prompt"
  done
}

# Does VISAGE predict the harm of finetuning? Four more testbeds (20, 30, 45 and 60 training
# steps) beside the 120-step one; each one's VISAGE over 3 directions (11 points, 20
# prompts, 64 tokens) and its ASR after the same harmful finetuning (10, 20, 30 and 50 pairs, 3
# epochs, learning rate 1e-5); Spearman's rho with a bootstrap interval.
# about 35 min (training the four testbeds 10 min); needs testbed
finetuning_risk() {
  local steps models=()
  for steps in 20 30 45 60; do
    [ -f "$RISK/testbed-s$steps/testbed.f16.gguf" ] || $PY scripts/make_testbed.py \
      --prompts "$ADVBENCH" --out "$RISK/testbed-s$steps" --steps $((steps * TRAIN_STEPS / 120)) \
      --no-check
    models+=("testbed-s$steps=$RISK/testbed-s$steps/testbed.f16.gguf")
  done
  models+=("testbed-s120=$TESTBED/testbed.f16.gguf")
  $PY scripts/finetuning_risk.py "${models[@]}" --out "$RUNS/risk" --finetunes "$RISK/finetunes" \
    "${QUICK[@]}"
  publish "$RUNS/risk" "$PUBLISHED/risk"
  $PY scripts/finetuning_risk.py "${models[@]}" --out "$PUBLISHED/risk" --redraw "${QUICK[@]}"
  cp "$PUBLISHED/risk/risk.png" "$IMG/finetuning-risk.png"
}

SECTIONS=(qwen_reference early_stop qwen_directions float_vs_quantised testbed harmful
  system_prompts finetuning_risk ladder_testbed ladder_qwen)

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
