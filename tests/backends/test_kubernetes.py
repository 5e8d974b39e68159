"""ftc/backends/kubernetes.py: the Kubernetes pieces targets share (names, quantities, containers, GPU placement)."""

from __future__ import annotations

import re

import pytest
from pydantic import TypeAdapter, ValidationError

from ftc.backends import kubernetes as k8s
from ftc.backends.registry import backends


def test_dns_label() -> None:
    assert k8s.dns_label("Text_Classification finetune") == "text-classification-finetune"
    assert k8s.dns_label("9lives") == "ftc-9lives"  # a letter first
    assert k8s.dns_label("__") == "ftc"
    assert k8s.dns_label("x" * 80) == "x" * 63
    assert k8s.dns_label("a" * 9 + "_b", max_length=10) == "a" * 9  # no trailing '-'
    for name in ("Text_Classification finetune", "9lives", "-a-", "é"):
        assert re.match(k8s.DNS_LABEL, k8s.dns_label(name))


@pytest.mark.parametrize(("memory", "quantity"), [("64G", "64Gi"), ("512M", "512Mi"), ("2T", "2Ti"), ("4096", "4096Mi")])
def test_memory_quantity(memory: str, quantity: str) -> None:
    assert k8s.memory_quantity(memory) == quantity
    assert k8s.QUANTITY.match(quantity)


def test_pod_resources_are_checked_and_written_as_text() -> None:
    adapter = TypeAdapter(k8s.PodResources)
    assert adapter.validate_python({"cpu": 8, "memory": "64Gi", "nvidia.com/gpu": 1, "ephemeral-storage": 1.5}) == {
        "cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "1.5",
    }  # fmt: skip
    with pytest.raises(ValidationError, match="not a Kubernetes quantity"):
        adapter.validate_python({"cpu": "lots"})
    with pytest.raises(ValidationError, match="not a Kubernetes resource name"):
        adapter.validate_python({"bad name!": 1})


def test_container_requests_its_limits_and_reads_secrets_by_name() -> None:
    container = k8s.container("w", "img:1", {"cpu": "2"}, ["HF_TOKEN"], "job-secrets")
    assert container == {
        "name": "w",
        "image": "img:1",
        "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}},
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "job-secrets", "key": "HF_TOKEN"}}}],
    }
    assert "env" not in k8s.container("w", "img:1", {"cpu": "2"})


def test_gpu_placement() -> None:
    toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    products = k8s.GPU_PRODUCTS["A100-80G"]
    placed = k8s.gpu_placement(products, None)
    term = placed["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term == {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": list(products)}]}
    assert placed["tolerations"] == toleration
    assert k8s.gpu_placement(products, {"pool": "a100"}) == {"nodeSelector": {"pool": "a100"}, "tolerations": toleration}
    assert k8s.gpu_placement((), None) == {"tolerations": toleration}


def test_shared_module_is_not_a_target() -> None:
    """A module of ftc/backends without BACKEND is not registered (nor does it break the registry)."""
    assert "kubernetes" not in backends()
    assert not hasattr(k8s, "BACKEND")
