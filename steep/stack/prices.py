"""Hourly list prices of what the cloud targets create, and the regions each target knows.

SOURCE and AS_OF say where the numbers come from; update them together. Prices are on-demand Linux list
prices in the reference region (us-east-1 / us-central1 / eastus); other regions differ by a few percent,
spot prices move daily, so the estimate is a guard against surprises, not an invoice. Storage billed per
GB-month is turned into an hourly price with HOURS_PER_MONTH; charges per GB moved or stored (egress,
bucket contents, logs) are not hourly and are left out (cost.NOT_PRICED lists them).
"""

from __future__ import annotations

AS_OF = "2024-06"
SOURCE = {
    "aws": "AWS on-demand pricing pages for EC2, EBS, EKS, RDS PostgreSQL, VPC NAT, public IPv4 "
    "and KMS (us-east-1)",
    "gcp": "Google Cloud pricing pages for Compute Engine, Persistent Disk, GKE, Cloud NAT and Cloud SQL "
    "(us-central1)",
    "azure": "Azure pricing pages for Linux VMs, Managed Disks, AKS, Load Balancer, public IP and "
    "PostgreSQL flexible server (eastus)",
}
# spot/preemptible price as a share of on-demand: the typical discount seen on the vendors' spot pages.
SPOT_FACTOR = {"aws": 0.35, "gcp": 0.35, "azure": 0.30}
HOURS_PER_MONTH = 730


def per_hour(gb: float, usd_per_gb_month: float) -> float:
    """A disk billed per GB-month, as USD per hour."""
    return gb * usd_per_gb_month / HOURS_PER_MONTH


# USD per hour.
PRICES: dict[str, dict[str, float]] = {
    "aws": {
        "eks-control-plane": 0.10,
        "nat-gateway": 0.045,
        "public-ipv4": 0.005,  # the NAT gateway's Elastic IP
        "kms-key": 1.00 / HOURS_PER_MONTH,
        "db.t4g.micro": 0.016,
        "postgres-storage-20gb": per_hour(20, 0.115),  # allocated_storage = 20 (gp2)
        "node-disk": per_hour(20, 0.10),  # an EKS managed node's default root volume: 20 GiB gp2
        "m6i.large": 0.096,
        "m6i.xlarge": 0.192,
        "m6i.2xlarge": 0.384,
        "g5.xlarge": 1.006,
        "g5.2xlarge": 1.212,
        "g6.xlarge": 0.805,
        "p4d.24xlarge": 32.773,
    },
    "gcp": {
        "gke-control-plane": 0.10,  # regional clusters get no free-tier credit
        "cloud-nat": 0.0014,  # per VM behind the gateway, up to 32 VMs; $0.044 flat above
        "db-f1-micro": 0.0105,
        "postgres-storage-10gb": per_hour(10, 0.17),  # Cloud SQL's default: 10 GB SSD
        "node-disk": per_hour(100, 0.10),  # a GKE node's default boot disk: 100 GB pd-balanced
        "e2-standard-2": 0.067,
        "e2-standard-4": 0.134,
        "n2-standard-4": 0.194,
        "g2-standard-4": 0.707,
        "g2-standard-8": 0.854,
        "a2-highgpu-1g": 3.673,
    },
    "azure": {
        "aks-control-plane": 0.0,  # sku_tier = "Free"
        "outbound-load-balancer": 0.025,  # the Standard Load Balancer AKS creates for egress (first 5 rules)
        "public-ip": 0.005,  # its Standard static IPv4
        "B_Standard_B1ms": 0.0207,
        "postgres-storage-32gb": per_hour(32, 0.115),  # storage_mb = 32768
        "node-disk": 19.71 / HOURS_PER_MONTH,  # an AKS node's default OS disk: 128 GiB Premium SSD (P10)
        "Standard_D2s_v5": 0.096,
        "Standard_D4s_v5": 0.192,
        "Standard_NC4as_T4_v3": 0.526,
        "Standard_NC8as_T4_v3": 0.752,
        "Standard_NC24ads_A100_v4": 3.673,
    },
}

# What a stack pays for while it exists, whether or not anything runs, besides its nodes and the database
# machine (DEFAULTS["db"]): the control plane, the egress gateway and small companions. One of each.
ALWAYS_ON: dict[str, tuple[str, ...]] = {
    "aws": ("eks-control-plane", "nat-gateway", "public-ipv4", "kms-key", "postgres-storage-20gb"),
    "gcp": ("gke-control-plane", "postgres-storage-10gb"),
    "azure": ("aks-control-plane", "outbound-load-balancer", "public-ip", "postgres-storage-32gb"),
}
# The disk each node boots from (PRICES[target]["node-disk"]), as the roots leave it.
NODE_DISK = {"aws": "20 GiB gp2", "gcp": "100 GB pd-balanced", "azure": "128 GiB Premium SSD"}
# Billed per node behind it (Cloud NAT), up to this many nodes.
PER_NODE_GATEWAY = {"gcp": ("cloud-nat", 32)}
# Nodes of the always-on system pool (variable system_nodes of each root).
SYSTEM_NODES = 1

# Machine types the Terraform roots use unless steep.yaml names others (keep in sync with their defaults;
# tests/terraform/test_scale_to_zero.py checks it): the system pool's, the workers', the database's.
DEFAULTS: dict[str, dict[str, str]] = {
    "aws": {"db": "db.t4g.micro", "system": "m6i.xlarge", "cpu": "m6i.xlarge", "gpu": "g5.xlarge"},
    "gcp": {"db": "db-f1-micro", "system": "e2-standard-4", "cpu": "e2-standard-4", "gpu": "g2-standard-4"},
    "azure": {"db": "B_Standard_B1ms", "system": "Standard_D4s_v5", "cpu": "Standard_D4s_v5",
              "gpu": "Standard_NC4as_T4_v3"},
}  # fmt: skip

DEFAULT_REGION = {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}

REGIONS: dict[str, tuple[str, ...]] = {
    "aws": (
        "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
        "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1",
        "ap-south-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-southeast-1",
        "ap-southeast-2", "ap-east-1", "me-south-1", "af-south-1",
    ),
    "gcp": (
        "us-central1", "us-east1", "us-east4", "us-east5", "us-west1", "us-west2", "us-west3", "us-west4",
        "us-south1", "northamerica-northeast1", "southamerica-east1", "europe-west1", "europe-west2",
        "europe-west3", "europe-west4", "europe-west6", "europe-west9", "europe-north1", "europe-central2",
        "asia-east1", "asia-northeast1", "asia-south1", "asia-southeast1", "australia-southeast1",
    ),
    "azure": (
        "eastus", "eastus2", "westus", "westus2", "westus3", "centralus", "northcentralus", "southcentralus",
        "canadacentral", "brazilsouth", "northeurope", "westeurope", "uksouth", "francecentral",
        "germanywestcentral", "swedencentral", "switzerlandnorth", "japaneast", "koreacentral",
        "southeastasia", "australiaeast", "centralindia",
    ),
}  # fmt: skip
