# SPDX-License-Identifier: BSD-3-Clause
import sys

from hwq.cli import main

sys.exit(main())
