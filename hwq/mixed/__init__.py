# SPDX-License-Identifier: BSD-3-Clause
"""Mixed-precision search under a hardware budget (issue 18): the shared allocator (:mod:`hwq.mixed.allocate`),
the layer sensitivities of the methods (:mod:`hwq.mixed.sensitivity`) and the in-training search that re-solves the
allocation and rebuilds the model (:mod:`hwq.mixed.search`). docs/mixed_precision.md ("Searching bit-widths")."""

from hwq.mixed.allocate import Allocation, allocate

__all__ = ["Allocation", "allocate"]
