# SPDX-License-Identifier: BSD-3-Clause
"""Nothing lost: a build writes into a staging folder next to its target and replaces the target only on success.

``runs/NAME/build-pynq-z2`` stays the last good build (with its ``measure/`` reports) while a rebuild runs in
``runs/NAME/build-pynq-z2.partial-XXXX``. On success the staging folder takes the target's place (the old build is
removed). On failure or interruption it becomes ``runs/NAME/build-pynq-z2.failed`` (an older ``.failed`` is
replaced), to be inspected, and the target is untouched. A process killed outright (SIGKILL) leaves only its
``.partial-XXXX`` folder; the target is still the last good build.

FINN writes absolute paths into what it generates (``code_gen_dir_ipgen`` node attributes, ``$readmemh`` paths in
the memstream wrappers, HLS Tcl scripts), so after the move :func:`relocate_paths` rewrites the staging folder's
path to the final one in the folder's text files and ONNX graphs.

>>> stage = StagedOutput.begin(Path("runs/tfc/build-pynq-z2"))     # doctest: +SKIP
>>> ...  # write everything under stage.staging
>>> stage.commit()                                                 # doctest: +SKIP
PosixPath('runs/tfc/build-pynq-z2')
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hwq.errors import ConfigError, HwqError, os_error_message

#: Files whose text may hold an absolute path of the build (FINN's generated sources, scripts and reports).
TEXT_SUFFIXES = (".v", ".sv", ".vh", ".tcl", ".cpp", ".h", ".hpp", ".sh", ".json", ".yaml", ".txt", ".log",
                 ".py", ".xdc", ".mk")
MANIFEST_FILE = "manifest.json"


def _is_build_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


@dataclass(frozen=True)
class StagedOutput:
    """A build's target folder and the staging folder it is written into."""

    target: Path
    staging: Path

    @property
    def failed(self) -> Path:
        """Where a failed attempt is kept: ``<target>.failed``."""
        return self.target.with_name(self.target.name + ".failed")

    @classmethod
    def begin(cls, target: Path, flag: str = "--out") -> "StagedOutput":
        """Check that ``target`` may be replaced and create the staging folder beside it.

        Before any work: ``target`` must be absent, empty or a build folder (it holds ``manifest.json``), and its
        parent must be writable; otherwise a one-line :class:`~hwq.errors.ConfigError` naming ``flag``.
        """
        target = Path(target)
        if target.exists() and not target.is_dir():
            raise ConfigError(f"{flag} {target}: exists and is not a folder; choose another {flag}")
        if target.is_dir() and any(target.iterdir()) and not _is_build_dir(target):
            raise ConfigError(f"{flag} {target}: exists and is not a build directory (no {MANIFEST_FILE}); "
                              f"choose another {flag}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=target.parent))
        except OSError as err:  # a read-only folder, a full disk: say so before the build starts
            raise ConfigError(f"{flag} {target}: cannot write there ({os_error_message(err)})") from None
        return cls(target, staging)

    def commit(self) -> Path:
        """Put the finished build in the target's place; the previous build and an old ``.failed`` go."""
        previous = None
        if self.target.exists():
            previous = Path(tempfile.mkdtemp(prefix=f"{self.target.name}.old-", dir=self.target.parent))
            os.replace(self.target, previous / "build")
        os.replace(self.staging, self.target)
        relocate_paths(self.target, self.staging, self.target)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        if self.failed.exists():  # an earlier failed attempt: superseded by this build
            shutil.rmtree(self.failed, ignore_errors=True)
        return self.target

    def keep_failed(self) -> Path:
        """Keep the unfinished build as ``<target>.failed`` (replacing an older one); the target is untouched."""
        if self.failed.exists():
            shutil.rmtree(self.failed)
        os.replace(self.staging, self.failed)
        relocate_paths(self.failed, self.staging, self.failed)
        return self.failed

    def where_kept(self) -> str:
        """The end of a failed build's error message: where the attempt is, and that nothing else changed."""
        kept = f"the failed build is in {self.failed}"
        return kept + (f" ({self.target} is unchanged)" if _is_build_dir(self.target) else "")

    def fail(self, err: HwqError) -> HwqError:
        """Keep the attempt as ``.failed`` and return ``err`` with its paths and message pointing there."""
        self.keep_failed()
        message = _relocated(str(err), self.staging, self.failed)
        err.args = (f"{message}; {self.where_kept()}",)
        return err


def _path_pairs(old: Path, new: Path) -> list[tuple[str, str]]:
    """``(old, new)`` in each spelling that may appear in files: as given, absolute, resolved; longest first, so
    that an absolute path is rewritten whole before its relative tail is looked for."""
    pairs = {(str(old), str(new)), (os.path.abspath(old), os.path.abspath(new)),
             (str(Path(old).resolve()), str(Path(new).resolve()))}
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def _relocated(text: str, old: Path, new: Path) -> str:
    for before, after in _path_pairs(old, new):
        text = text.replace(before, after)
    return text


def relocate_paths(root: Path, old: Path, new: Path) -> None:
    """Rewrite ``old`` (the staging path, in any of its spellings) to ``new`` in ``root``'s text files and ONNX
    graphs (string node attributes), which FINN fills with absolute paths."""
    old_forms = [(o.encode(), n.encode()) for o, n in _path_pairs(old, new)]
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix in TEXT_SUFFIXES:
            data = path.read_bytes()
            if any(o in data for o, _ in old_forms):
                for o, n in old_forms:
                    data = data.replace(o, n)
                path.write_bytes(data)
        elif path.suffix == ".onnx" and any(o in path.read_bytes() for o, _ in old_forms):
            _relocate_onnx(path, old_forms)


def _relocate_onnx(path: Path, forms: list[tuple[bytes, bytes]]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.STRING:
                for o, n in forms:
                    attr.s = attr.s.replace(o, n)
    onnx.save(model, str(path))
