#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The GPU session behind the BiTAT table in docs/bitat.md: both suites of scripts/bench_bitat.py at once, each
# training run its own process, on a CUDA machine with torch and the Brevitas wheels on PYTHONPATH.
#
#   bash scripts/gpu_bitat.sh DATA_DIR DEADLINE_SECONDS [OUT_DIR]
#
# DATA_DIR holds cifar10-jpeg/ and mnist/. Environment: SUITES (default "cifar10 mnist"), CIFAR_EPOCHS (10),
# MNIST_EPOCHS (15), METHODS (the binary runs; default: plain, BiTAT and its ablations), DEVICE (cuda). Every 30 s, and when both suites end or the deadline passes, the runs
# so far are tabulated (bench_bitat.py --collect: unfinished runs are marked so) into benchmarks/bitat_<suite>.
# {json,md} and copied with the logs to OUT_DIR, so a session that runs out of device time keeps what it
# measured.
set -u
DATA=$1
DEADLINE=$2
OUT_DIR=${3:-${OUT:-/tmp/out}}
CIFAR_EPOCHS=${CIFAR_EPOCHS:-10}
MNIST_EPOCHS=${MNIST_EPOCHS:-15}
SUITES=${SUITES:-cifar10 mnist}
METHODS=${METHODS:-plain,bitat,bitat_no_transform,bitat_no_importance,bitat_no_progressive,bitat_no_penalty,bitat_importance_codes}
mkdir -p "$OUT_DIR/logs"

suite_args() {  # suite -> the bench arguments shared by the run and its --collect
    local epochs=$CIFAR_EPOCHS
    [ "$1" = mnist ] && epochs=$MNIST_EPOCHS
    echo --suites "$1" --device "${DEVICE:-cuda}" --epochs "$epochs" --fp-epochs "$epochs" --methods "$METHODS" \
        --data-dir "$DATA" --runs runs/bench-bitat --results "benchmarks/bitat_$1"
}

declare -A pid_of
collect() {
    for suite in $SUITES; do
        # A finished bench has written its own table (with its wall time); tabulate only one still running.
        if kill -0 "${pid_of[$suite]}" 2>/dev/null; then
            # shellcheck disable=SC2046
            python3 scripts/bench_bitat.py $(suite_args "$suite") --collect > /dev/null 2>&1
        fi
        cp benchmarks/bitat_"$suite".* "$OUT_DIR"/ 2>/dev/null
        find "runs/bench-bitat/$suite" -name '*.log' -exec cp --parents {} "$OUT_DIR/logs" \; 2>/dev/null
    done
    cp /tmp/bench-bitat-*.log "$OUT_DIR/logs" 2>/dev/null
}

for suite in $SUITES; do
    # shellcheck disable=SC2046
    setsid nohup python3 scripts/bench_bitat.py $(suite_args "$suite") --jobs 7 \
        > "/tmp/bench-bitat-$suite.log" 2>&1 < /dev/null &
    pid_of[$suite]=$!
done

start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$DEADLINE" ]; do
    sleep 30
    collect
    running=0
    for suite in $SUITES; do kill -0 "${pid_of[$suite]}" 2>/dev/null && running=1; done
    [ "$running" = 0 ] && break
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
done
collect
for suite in $SUITES; do kill -- -"${pid_of[$suite]}" 2>/dev/null; done  # past the deadline: stop them
cat "$OUT_DIR"/bitat_*.md
