"""Rules on resources: the settings of one target written where the systems ftc reads keep them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.spec.model import MOVED_TO_TARGETS
from ftc.spec.rules.registry import KeyPath, rule

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


@rule("FTC148", "warning", "a target's setting under resources")
def _target_setting_in_resources(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """resources.worker_resources and trainer_resources (Ray), compute and instance_type (Azure ML) belong to
    targets.ray and targets.azureml: they are read from there, and accepted under resources (Anyscale and Azure ML
    keep them there), with this note."""
    resources = r.doc.data.get("resources") if isinstance(r.doc.data, dict) else None
    for key in resources if isinstance(resources, dict) else ():
        if key in MOVED_TO_TARGETS:
            target = MOVED_TO_TARGETS[key]
            yield ("resources", key), f"is a setting of the {target} target: it is read as targets.{target}.{key}; move it there"
