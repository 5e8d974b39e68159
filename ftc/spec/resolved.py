"""A resolved spec: every value decided, where each came from, the derived values, and the runtime's config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ftc import __version__
from ftc.contract import CONFIG_FORMAT, HEADER_KEY
from ftc.spec.derived import Derived
from ftc.spec.loader import SourceDoc
from ftc.spec.model import SpecBase


@dataclass(frozen=True)
class Resolved:
    """A spec with every value decided, where each came from, and the values derived from them."""

    spec: SpecBase
    doc: SourceDoc
    derived: Derived
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.derived["name"])

    def runtime_config(self, base_dir: str) -> dict[str, Any]:
        """The runtime's configuration: every parameter (targets excluded) plus derived values.

        `base_dir` is the spec's folder relative to the folder holding the config, so relative
        data and model paths resolve the same way wherever the build is moved with its spec.
        """
        params = self.spec.model_dump(mode="json", exclude={"targets", "lint"})
        header = {
            "format": CONFIG_FORMAT,
            "version": __version__,
            "spec": self.doc.file.rsplit("/", 1)[-1],
            "spec_sha256": self.doc.sha256,
        }
        return {
            HEADER_KEY: header,
            "base_dir": base_dir,
            "derived": dict(self.derived),
            **params,
        }
