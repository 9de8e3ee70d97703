# SPDX-License-Identifier: BSD-3-Clause
"""Board descriptions: one YAML file per board in ``boards/``, validated when loaded.

>>> board = load_board("pynq-z2")
>>> board.part, board.clock_mhz
('xc7z020clg400-1', 100.0)
"""

from hwq.boards.board import BOARDS_DIR, Board, BoardError, Resources, known_boards, load_board

__all__ = ["BOARDS_DIR", "Board", "BoardError", "Resources", "known_boards", "load_board"]
