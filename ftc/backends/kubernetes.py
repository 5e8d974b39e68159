"""What targets that write Kubernetes objects share: names, quantities, pod containers, GPU placement, secret refs.

Not a target (it defines no BACKEND). The ray target builds its KubeRay RayJob with it; a target that
writes other Kubernetes objects (a PyTorchJob, a JobSet) would use the same pieces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator

# A resource quantity (the API's pattern): 1, 500m, 4Gi, 1.5, 2e3
QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
# A resource name: cpu, memory, nvidia.com/gpu (an optional DNS prefix, then a name)
RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # RFC 1123 label (at most 63 characters): a namespace
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # at most 253: a Secret
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's resource, and the taint of GPU nodes
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # GPU feature discovery's node label: the GPU's name, spaces as '-'
# nvidia.com/gpu.product values (GPU feature discovery) of ftc's accelerator types (Ray's names).
GPU_PRODUCTS: dict[str, tuple[str, ...]] = {
    "T4": ("Tesla-T4",),
    "V100": ("Tesla-V100-SXM2-16GB", "Tesla-V100-SXM2-32GB", "Tesla-V100-PCIE-16GB", "Tesla-V100-PCIE-32GB"),
    "A10G": ("NVIDIA-A10G",),
    "A10": ("NVIDIA-A10",),
    "L4": ("NVIDIA-L4",),
    "L40S": ("NVIDIA-L40S",),
    "A100": ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB", "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
    "A100-40G": ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
    "A100-80G": ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
    "H100": ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL"),
    "H200": ("NVIDIA-H200", "NVIDIA-H200-NVL"),
    "B200": ("NVIDIA-B200",),
}


def dns_label(name: str, max_length: int = DNS_LABEL_MAX) -> str:
    """`name` as a DNS-1035 label: lower case, '-' for other characters, a letter first (`ftc-` put before
    a name without one), at most `max_length` characters and no '-' at the end."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not text[:1].isalpha():
        text = f"ftc-{text}"
    return text[:max_length].rstrip("-")


def memory_quantity(memory: str) -> str:
    """A SLURM-style size (64G: binary units, a bare number is megabytes) as a Kubernetes quantity (64Gi)."""
    if memory[-1].isdigit():
        return f"{memory}Mi"
    return f"{memory[:-1]}{memory[-1]}i"


def _resources(value: dict[str, Any]) -> dict[str, str]:
    """Requests or limits of a container: resource names and quantities, the quantities as text."""
    out = {}
    for name, quantity in value.items():
        if not RESOURCE_NAME.match(name):
            raise ValueError(f"{name!r} is not a Kubernetes resource name (cpu, memory, nvidia.com/gpu, ...)")
        text = str(quantity)
        if isinstance(quantity, bool) or not QUANTITY.match(text):
            raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
        out[name] = text
    return out


# An option holding a container's requests and limits: {cpu: 8, memory: 64Gi, nvidia.com/gpu: 1}.
PodResources = Annotated[dict[str, str | int | float], AfterValidator(_resources)]


def secret_env(names: Sequence[str], secret: str) -> list[dict[str, Any]]:
    """Environment variables `names`, each read from the key of its name in the Secret `secret`."""
    return [{"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": n}}} for n in names]


def container(
    name: str, image: str, resources: Mapping[str, str], secrets: Sequence[str] = (), secret: str = ""
) -> dict[str, Any]:
    """A container that requests and is limited to `resources`, with `secrets` from the Secret `secret` in its env."""
    out: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
    }
    if secrets:
        out["env"] = secret_env(secrets, secret)
    return out


def gpu_placement(products: Sequence[str], node_selector: Mapping[str, str] | None) -> dict[str, Any]:
    """What a GPU pod's spec adds: `node_selector`, else a node affinity on GPU feature discovery's product
    label (none without `products`), and a toleration of the nvidia.com/gpu taint of GPU nodes."""
    out: dict[str, Any] = {}
    if node_selector:
        out["nodeSelector"] = dict(node_selector)
    elif products:
        term = {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(products)}]}
        out["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    out["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return out
