#!/usr/bin/env bash
# Fuzz one target with AFL++ for SECONDS, or until EXECS executions when given first:
# ci/fuzz.sh TARGET SECONDS [EXECS]
#
# Targets are pxelab::fuzz::TARGETS (dhcp, tftp_wire, tftp_transfer, rpc_records, nfs_stream,
# framing, varstore, paths, http). The corpus starts from fuzz/corpus/TARGET plus inputs taken from
# the scenarios' captures (target/pxelab-runs/*/segment.pcap, OVMF_VARS.fd) when there are
# any. Prints the executions done and the crashes found; a crash's input is kept under
# target/fuzz/TARGET/default/crashes: turn each one into a unit test. Exits 1 on a crash.
# RESUME=1 goes on from the last run's queue and counts (AFL++ keeps execs_done across a
# resume), so 10 M executions may be reached in several sittings.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: ci/fuzz.sh TARGET SECONDS}
seconds=${2:?usage: ci/fuzz.sh TARGET SECONDS [EXECS]}
execs_goal=${3:-}
command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
(cd fuzz && cargo afl build --release --quiet)
work=target/fuzz/$target
input=$work/in
if [ "${RESUME:-}" = 1 ] && [ -f "$work/default/fuzzer_stats" ]; then
  input=-
else
  rm -rf "$work" && mkdir -p "$work/in"
  cp fuzz/corpus/"$target"/* "$work/in/"
  if [ -d target/pxelab-runs ]; then
    fuzz/target/release/seed target/pxelab-runs "$work/seeds" >/dev/null
    if [ -d "$work/seeds/$target" ]; then cp "$work/seeds/$target"/* "$work/in/"; fi
  fi
fi
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
cargo afl fuzz -i "$input" -o "$work" -V "$seconds" ${execs_goal:+-E "$execs_goal"} -- fuzz/target/release/target "$target" >"$work/afl.log" 2>&1 || true
stats=$work/default/fuzzer_stats
[ -f "$stats" ] || { tail -n 30 "$work/afl.log"; exit 2; }
execs=$(awk -F' *: *' '$1=="execs_done"{print $2}' "$stats")
rate=$(awk -F' *: *' '$1=="execs_per_sec"{print $2}' "$stats")
crashes=$(find "$work/default/crashes" -type f -name 'id:*' | wc -l)
took=$(awk -F' *: *' '$1=="run_time"{print $2}' "$stats")
echo "$target: $execs execs in ${took:-$seconds}s ($rate/s), $crashes crashes"
[ "$crashes" -eq 0 ]
