"""`ftc import`: other tools' configs as ftc specs. One module per tool defines `IMPORTER` (see base.Importer).

Importers sit between the CLI and the spec: they import `ftc.spec` and `ftc.contract` only, never the
compiler, a backend or the runtime, and nothing heavy (torch, transformers, ray, azure).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ftc.errors import Location
from ftc.importers.base import Imported, Importer, ImportFailed, ImportRefused, Setting, Unmapped

# The tools `--from` names, and the module of each.
SOURCES = {
    "anyscale": "ftc.importers.anyscale",
    "llama-recipes": "ftc.importers.llama_recipes",
    "axolotl": "ftc.importers.axolotl",
    "azureml": "ftc.importers.azureml",
}

__all__ = ["SOURCES", "Imported", "ImportFailed", "ImportRefused", "Importer", "Setting", "Unmapped", "find_importer"]


def _importer(name: str) -> Importer | None:
    """The tool's importer, or None while its module is not written yet."""
    try:
        module = importlib.import_module(SOURCES[name])
    except ModuleNotFoundError as exc:
        if exc.name != SOURCES[name]:
            raise
        return None
    return module.IMPORTER  # type: ignore[no-any-return]


def find_importer(path: Path, source: str | None) -> Importer:
    """The importer `--from source` names, or the one whose `detect` recognises the file when it is None."""
    if source is not None:
        if source not in SOURCES:
            raise ImportFailed(Location("--from"), "", f"{source!r} is not a source; use one of {', '.join(SOURCES)}")
        importer = _importer(source)
        if importer is None:
            raise ImportFailed(Location("--from"), "", f"importing from {source} is not available yet")
        return importer
    text = _text(path)
    for name in SOURCES:
        importer = _importer(name)
        if importer is not None and importer.detect(path, text):
            return importer
    raise ImportFailed(
        Location(str(path)), "", f"does not say which tool it is for; give --from ({', '.join(SOURCES)})"
    )


def _text(path: Path) -> str:
    """The file's text for detection (undecodable bytes replaced; reading it properly reports them)."""
    try:
        return path.read_bytes()[: 1 << 20].decode("utf-8", errors="replace")
    except OSError as exc:
        raise ImportFailed(Location(str(path)), "", f"cannot be read: {exc.strerror or exc}") from None
