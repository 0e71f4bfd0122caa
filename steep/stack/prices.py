"""Hourly list prices of what the cloud targets create, and the regions each target knows.

SOURCE and AS_OF say where the numbers come from; update them together. Prices are on-demand Linux list
prices in the reference region (us-east-1 / us-central1 / eastus); other regions differ by a few percent,
spot prices move daily, so the estimate is a guard against surprises, not an invoice.
"""

from __future__ import annotations

AS_OF = "2024-06"
SOURCE = {
    "aws": "AWS on-demand pricing pages for EC2, EKS, RDS PostgreSQL and VPC NAT (us-east-1)",
    "gcp": "Google Cloud pricing pages for Compute Engine, GKE and Cloud SQL (us-central1)",
    "azure": "Azure pricing pages for Linux VMs, AKS and PostgreSQL flexible server (eastus)",
}
# spot/preemptible price as a share of on-demand: the typical discount seen on the vendors' spot pages.
SPOT_FACTOR = {"aws": 0.35, "gcp": 0.35, "azure": 0.30}

# USD per hour.
PRICES: dict[str, dict[str, float]] = {
    "aws": {
        "eks-control-plane": 0.10,
        "nat-gateway": 0.045,
        "db.t4g.micro": 0.016,
        "m6i.large": 0.096,
        "m6i.xlarge": 0.192,
        "m6i.2xlarge": 0.384,
        "g5.xlarge": 1.006,
        "g5.2xlarge": 1.212,
        "g6.xlarge": 0.805,
        "p4d.24xlarge": 32.773,
    },
    "gcp": {
        "gke-control-plane": 0.10,
        "cloud-nat": 0.044,
        "db-f1-micro": 0.0105,
        "e2-standard-2": 0.067,
        "e2-standard-4": 0.134,
        "n2-standard-4": 0.194,
        "g2-standard-4": 0.707,
        "g2-standard-8": 0.854,
        "a2-highgpu-1g": 3.673,
    },
    "azure": {
        "aks-control-plane": 0.0,
        "nat-gateway": 0.045,
        "B_Standard_B1ms": 0.0207,
        "Standard_D2s_v5": 0.096,
        "Standard_D4s_v5": 0.192,
        "Standard_NC4as_T4_v3": 0.526,
        "Standard_NC8as_T4_v3": 0.752,
        "Standard_NC24ads_A100_v4": 3.673,
    },
}

# Machine types the Terraform modules use unless steep.yaml names others (keep in sync with their defaults).
DEFAULTS: dict[str, dict[str, str]] = {
    "aws": {"control": "eks-control-plane", "nat": "nat-gateway", "db": "db.t4g.micro", "cpu": "m6i.xlarge",
            "gpu": "g5.xlarge"},
    "gcp": {"control": "gke-control-plane", "nat": "cloud-nat", "db": "db-f1-micro", "cpu": "e2-standard-4",
            "gpu": "g2-standard-4"},
    "azure": {"control": "aks-control-plane", "nat": "nat-gateway", "db": "B_Standard_B1ms",
              "cpu": "Standard_D4s_v5", "gpu": "Standard_NC4as_T4_v3"},
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
