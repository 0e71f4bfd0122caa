variable "stack_name" {
  type        = string
  description = "Names the stack; every resource is labelled steep-stack = stack_name."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.stack_name))
    error_message = "The stack_name must be 3-40 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "project_id" {
  type        = string
  description = "Google Cloud project to create the stack in (defaults to GOOGLE_PROJECT when empty)."
  default     = null
}

variable "region" {
  type        = string
  description = "Google Cloud region, e.g. us-central1."
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[1-9][0-9]?$", var.region))
    error_message = "The region must be a Google Cloud region name such as us-central1 or europe-west4."
  }
}

variable "created_at" {
  type        = string
  description = "RFC 3339 time the stack was first provisioned."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the GKE control plane (the lowest: the REGULAR release channel upgrades it); the Helm charts and serving manifests are validated against it (tests/terraform/test_helm.py)."
  default     = "1.35"

  validation {
    condition     = can(regex("^1[.][0-9]+$", var.kubernetes_version))
    error_message = "The kubernetes_version must be a minor version such as 1.35."
  }
}

variable "cpu_instance_type" {
  type        = string
  description = "Machine type of the CPU node pool."
  default     = "e2-standard-4"
}

variable "cpu_nodes" {
  type        = number
  description = "Most nodes of the CPU worker pool (all zones together); it scales between 0 and this under the cluster autoscaler."
  default     = 2

  validation {
    condition     = var.cpu_nodes >= 1 && var.cpu_nodes <= 256
    error_message = "The cpu_nodes must be between 1 and 256."
  }
}

variable "gpu_instance_type" {
  type        = string
  description = "Machine type of the GPU node pool (g2 carries NVIDIA L4, a2 carries A100)."
  default     = "g2-standard-4"

  validation {
    condition     = can(regex("^(g2|a2|a3|n1)-", var.gpu_instance_type))
    error_message = "The gpu_instance_type must be a GPU machine family (g2, a2, a3 or n1 with an attached GPU)."
  }
}

variable "gpu_accelerator" {
  type        = string
  description = "Accelerator type attached to each GPU node."
  default     = "nvidia-l4"
}

variable "gpu_nodes" {
  type        = number
  description = "Most nodes of the GPU pool (all zones together); it scales from 0 under the cluster autoscaler (0: no Ray GPU workers)."
  default     = 0

  validation {
    condition     = var.gpu_nodes >= 0 && var.gpu_nodes <= 64
    error_message = "The gpu_nodes must be between 0 and 64."
  }
}

variable "gpu_spot" {
  type        = bool
  description = "Run the GPU node pool on spot VMs."
  default     = true
}

variable "db_tier" {
  type        = string
  description = "Cloud SQL tier of the MLflow Postgres database."
  default     = "db-f1-micro"
}

variable "admin_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the GKE control plane."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "Every admin_cidrs entry must be a valid CIDR block."
  }
}

variable "system_instance_type" {
  type        = string
  description = "Machine type of the always-on system node pool (MLflow, Prefect, KubeRay operator, Ray head)."
  default     = "e2-standard-4"
}

variable "system_nodes" {
  type        = number
  description = "Nodes of the system node pool (one zone); they stay up while the stack exists (the worker pools scale to zero)."
  default     = 1

  validation {
    condition     = var.system_nodes >= 1 && var.system_nodes <= 10
    error_message = "The system_nodes must be between 1 and 10."
  }
}
