# SPDX-License-Identifier: BSD-3-Clause
"""Time the adder layer's kernel on one CNV-sized im2col block (one CPU thread): the exportable broadcast
``adder_distance`` (chunked as the layer was before) against the training forward (``torch.cdist``, p=1), and
the training forward + backward (AdderNet's gradients). Prints a JSON line; docs/methods.md quotes it.

    OMP_NUM_THREADS=1 python scripts/bench_adder_kernel.py --rows 9000 --filters 64 --k 576
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hwq.quant.adder import AdderFunction, _chunks, adder_distance


def _seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=9000, help="im2col rows (batch x output positions)")
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--k", type=int, default=576, help="filter size (in channels x kernel x kernel)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, w = torch.randn(args.rows, args.k), torch.randn(args.filters, args.k)
    broadcast = _seconds(lambda: torch.cat([adder_distance(x[r], w) for r in _chunks(len(x), *w.shape)]),
                         args.repeats)
    cdist = _seconds(lambda: -torch.cdist(x, w, p=1), args.repeats)

    def step():
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        AdderFunction.apply(xr, wr, 0.2).sum().backward()

    print(json.dumps({"rows": args.rows, "filters": args.filters, "k": args.k, "threads": 1,
                      "forward_broadcast_s": round(broadcast, 3), "forward_cdist_s": round(cdist, 3),
                      "forward_speedup": round(broadcast / cdist, 2),
                      "forward_backward_s": round(_seconds(step, 1), 3)}))


if __name__ == "__main__":
    main()
