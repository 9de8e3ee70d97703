#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause
# The GPU benchmark session behind docs/n2uq.md, docs/bitat.md and the trained CNV (docs/dataflow.md).
# Runs on a CUDA machine with torch and the Brevitas wheels on PYTHONPATH; DATA holds cifar10-jpeg/ and mnist/.
# Every job runs in the background (setsid) with its own log in $LOGS; results land in benchmarks/ and runs/.
set -u
DATA=${DATA:-/tmp/data}
LOGS=${LOGS:-/tmp/logs}
mkdir -p "$LOGS"
launch() { name=$1; shift; setsid nohup "$@" > "$LOGS/$name.log" 2>&1 < /dev/null & }

launch cnv python3 -m hwq train --model cnv --dataset cifar10 --wbits 1 --abits 1 --epochs 80 --batch-size 256 \
    --device cuda --data-dir "$DATA" --out runs/cnv-w1a1-cifar10 --overwrite --no-progress
launch n2uq-cifar python3 scripts/bench_n2uq.py --suite cifar10 --cifar-model cnv --epochs 50 --batch-size 256 \
    --device cuda --jobs 4 --data-dir "$DATA" --runs runs/bench-n2uq-cifar --results benchmarks/n2uq_cifar10.json
launch n2uq-mnist python3 scripts/bench_n2uq.py --suite mnist --epochs 30 --distill --device cuda --jobs 5 \
    --data-dir "$DATA" --runs runs/bench-n2uq-mnist --results benchmarks/n2uq_mnist.json
launch bitat python3 scripts/bench_bitat.py --device cuda --jobs 7 --epochs 15 --fp-epochs 15 --data-dir "$DATA" \
    --runs runs/bench-bitat --results benchmarks/bitat
