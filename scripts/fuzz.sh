#!/usr/bin/env bash
# Coverage-guided fuzzing of the sans-IO cores with cargo-fuzz (libFuzzer).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]      e.g. scripts/fuzz.sh session 600
#
# Targets (bodies in proto/src/fuzzing.rs): handshake session amf0 flv_demux segmenter.
# Runs each chosen target for SECONDS (default 60), one after another, on one
# core (in-process libFuzzer: one job, one worker), starting from the committed
# seeds (fuzz/seeds/TARGET, regenerate with fuzz/make_seeds.py) plus the
# growing local corpus (fuzz/corpus/TARGET, not committed). Prints executions
# and exec/s per target and lists findings (fuzz/artifacts/TARGET/); exits 1
# when any target found a crash, hang (>10 s per input) or OOM (>2 GB).
# Reproduce one with: scripts/fuzz.sh repro TARGET FILE
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address, sancov).
# Only the stable toolchain is installed here, so RUSTC_BOOTSTRAP=1 lets
# stable rustc accept them. Installs cargo-fuzz (crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
# The fuzz crate is its own workspace with its own target dir (fuzz/target)
# unless FUZZ_TARGET_DIR says otherwise; instrumented builds never mix with
# the main build's artifacts.
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}
unset CARGO_TARGET_DIR

ALL=(handshake session amf0 flv_demux segmenter)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "${1:-}" = "repro" ]; then
  exec cargo fuzz run --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" "$2" "$3"
fi

what=${1:-all}
secs=${2:-60}
if [ "$what" = "all" ]; then targets=("${ALL[@]}"); else targets=("$what"); fi

summary=()
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  before=$(ls "fuzz/artifacts/$t" | wc -l)
  echo "== $t: ${secs}s"
  set +e
  t0=$(date +%s)
  cargo fuzz run --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" 2>&1 | tee "$log" | grep --line-buffered -E '^(#[0-9]+[[:space:]]+(INITED|DONE|pulse)|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written|stat::)'
  rc=${PIPESTATUS[0]}
  set -e
  took=$(($(date +%s) - t0))
  runs=$(grep -oE '^stat::number_of_executed_units: +[0-9]+' "$log" | awk '{print $2}' | tail -1)
  eps=$(grep -oE '^stat::average_exec_per_sec: +[0-9]+' "$log" | awk '{print $2}' | tail -1)
  after=$(ls "fuzz/artifacts/$t" | wc -l)
  new=$((after - before))
  line="$t: ${runs:-?} execs in ${took}s incl. build (${eps:-?} exec/s), exit $rc, $new new finding(s)"
  if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
    failed=1
    line="$line: $(ls -t "fuzz/artifacts/$t" | head -"$((new > 0 ? new : 1))" | tr '\n' ' ')"
  fi
  summary+=("$line")
  rm -f "$log"
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
