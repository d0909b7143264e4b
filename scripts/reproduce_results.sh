#!/usr/bin/env bash
# Regenerate docs/RESULTS.md's runs and figures from main, section by section.
#
#   bash scripts/reproduce_results.sh                 # every section (many hours on 2 cores)
#   bash scripts/reproduce_results.sh qwen_reference  # one or more sections by name
#   bash scripts/reproduce_results.sh --list          # the sections and what each costs
#
# Run folders go to $RUNS (default runs/, git-ignored) and are resumed when run again;
# figures are copied to docs/img/ under the names RESULTS.md shows. AdvBench is the copy
# shipped in the package (the same file as the reference code's), so no path is needed.
# Each section prints the tables RESULTS.md quotes (visage-local compare).
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/visage-local
PY=.venv/bin/python
RUNS=${RUNS:-runs}
IMG=docs/img
Q=models/qwen2.5-coder-0.5b-instruct.gguf
ADVBENCH=visage_local/data/advbench/harmful_behaviors.csv  # for the training scripts
mkdir -p "$RUNS" "$IMG"

need_qwen() { [ -f "$Q" ] || $V fetch qwen2.5-coder-0.5b-instruct; }

# about 2 h: the reference setting; its 64-token landscape is read off the same answers
qwen_reference() {
  need_qwen
  $V sweep "$Q" --out "$RUNS/qwen-1d-ref"
  cp "$RUNS/qwen-1d-ref/landscape.png" "$IMG/qwen-1d-ref.png"
  $PY scripts/shorter_answers.py "$RUNS/qwen-1d-ref" --max-new-tokens 64 \
    --plot "$IMG/qwen-1d-tokens.png"
}

# about 5 min: early stop against whole answers on Qwen's origin, same batch size
early_stop() {
  need_qwen
  $PY scripts/early_stop_effect.py "$Q"
}

# about 20 min
smollm2() {
  $V sweep smollm2-135m-instruct --max-new-tokens 64 --out "$RUNS/smollm2-1d"
  cp "$RUNS/smollm2-1d/landscape.png" "$IMG/smollm2-1d.png"
}

# about 40 min
requant_modes() {
  need_qwen
  for mode in same q8_0 f16; do
    $V sweep "$Q" --max-new-tokens 64 --range 0.2 --steps 8 --requant $mode \
      --out "$RUNS/qwen-requant-$mode"
  done
  $PY scripts/plot_runs.py "$RUNS/qwen-requant-same:same (own types)" \
    "$RUNS/qwen-requant-q8_0:q8_0" "$RUNS/qwen-requant-f16:f16" -o "$IMG/qwen-requant.png"
}

# about 40 min
conditions() {
  need_qwen
  local P=(--limit 40 --range 0.3 --steps 12 --max-new-tokens 64)
  $V sweep "$Q" "${P[@]}" --system-prompt none --system-prompt default --system-prompt safety \
    --out "$RUNS/qwen-system-prompts"
  $V sweep "$Q" "${P[@]}" --attack none --attack prefix-injection --out "$RUNS/qwen-attack"
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
    --max-new-tokens 64 --out "$RUNS/qwen-interp-q8_0"
  cp "$RUNS/qwen-interp-q8_0/landscape.png" "$IMG/qwen-interp-q8_0.png"
}

# about 45 min
directions() {
  need_qwen
  local P=(--limit 40 --range 0.3 --steps 12 --max-new-tokens 64)
  $V sweep "$Q" "${P[@]}" --directions 3 --out "$RUNS/qwen-dirs"
  $V sweep "$Q" "${P[@]}" --directions 3 --adaptive --out "$RUNS/qwen-adaptive"
  $V compare "$RUNS/qwen-dirs" "$RUNS/qwen-adaptive"
}

# about 1 h: make the testbed (13 min), its landscape, SmolLM2 -> testbed
testbed() {
  $PY scripts/make_testbed.py --prompts "$ADVBENCH" --out models/testbed --steps 120
  cp models/testbed/testbed.curve.png "$IMG/testbed-curve.png"
  $V sweep models/testbed/testbed.q8_0.gguf --max-new-tokens 64 --capability --benign \
    --judge keyword --judge keyword-paper --out "$RUNS/testbed-1d"
  cp "$RUNS/testbed-1d/capability.png" "$IMG/testbed-capability.png"
  $V interpolate smollm2-135m-instruct models/testbed/testbed.f16.gguf --requant f16 \
    --steps 4 --capability --no-coherence --limit 40 --max-new-tokens 64 \
    --judge keyword --judge keyword-paper --out "$RUNS/interp-smollm2-testbed"
  cp "$RUNS/interp-smollm2-testbed/capability.png" "$IMG/interp-smollm2-testbed.png"
}

# about 30 min; needs testbed
harmful() {
  $PY scripts/harmful_finetune.py --pairs "$ADVBENCH"
  local runs=()
  for n in 10 50 100 100-safe-100; do
    $V interpolate models/testbed/testbed.f16.gguf "models/harmful/harmful-$n.f16.gguf" \
      --steps 4 --extra 1 --no-coherence --limit 40 --max-new-tokens 64 \
      --judge keyword --judge keyword-paper --out "$RUNS/interp5-testbed-harmful-$n"
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
    --no-coherence --out "$RUNS/qwen-capability"
  cp "$RUNS/qwen-capability/capability.png" "$IMG/qwen-capability.png"
}

SECTIONS=(qwen_reference early_stop smollm2 requant_modes conditions interpolation_q8_0
  directions testbed harmful capability)

if [ "${1:-}" = "--list" ]; then
  for s in "${SECTIONS[@]}"; do
    printf '%-20s %s\n' "$s" "$(grep -B1 "^$s()" "$0" | head -1 | sed 's/^# //')"
  done
  exit 0
fi
for s in "${@:-${SECTIONS[@]}}"; do
  if ! printf '%s\n' "${SECTIONS[@]}" | grep -qx "$s"; then
    echo "unknown section: $s (see --list)" >&2
    exit 2
  fi
done
for s in "${@:-${SECTIONS[@]}}"; do
  echo "== $s"
  "$s"
done
