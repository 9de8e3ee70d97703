# SPDX-License-Identifier: BSD-3-Clause
"""Board descriptions: one YAML file per board, validated when loaded.

The boards hwq knows ship with the package (``hwq/boards/builtin/``; ``boards/`` in the repository links there).
A user's own folder (``--boards-dir DIR`` or ``$HWQ_BOARDS``) is searched first. Names are case-insensitive.

>>> board = load_board("PYNQ-Z2")
>>> board.name, board.part, board.clock_mhz
('pynq-z2', 'xc7z020clg400-1', 100.0)
"""

from hwq.boards.board import (BOARDS_DIR, BOARDS_ENV, Board, BoardError, Resources, board_dirs, board_path,
                              known_boards, load_board)

__all__ = ["BOARDS_DIR", "BOARDS_ENV", "Board", "BoardError", "Resources", "board_dirs", "board_path",
           "known_boards", "load_board"]
