variable "stack_name" {
  type        = string
  description = "Names the stack; every resource is tagged steep:stack = stack_name."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.stack_name))
    error_message = "The stack_name must be 3-40 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "AWS region, e.g. us-east-1."
  default     = "us-east-1"

  validation {
    condition     = can(regex("^(us|ca|sa|eu|ap|me|af|il|mx)-(north|south|east|west|central|northeast|southeast|southwest)-[1-9]$", var.region))
    error_message = "The region must be an AWS region name such as us-east-1 or eu-west-2."
  }
}

variable "created_at" {
  type        = string
  description = "RFC 3339 time the stack was first provisioned."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the EKS cluster; the cluster-autoscaler chart (cluster_autoscaler_chart_version) must ship the same minor, and the Helm charts and serving manifests are validated against it (tests/terraform/test_helm.py)."
  default     = "1.35"

  validation {
    condition     = can(regex("^1[.][0-9]+$", var.kubernetes_version))
    error_message = "The kubernetes_version must be a minor version such as 1.35."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR of the stack's VPC."
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "The vpc_cidr must be a valid IPv4 CIDR block."
  }
}

variable "cpu_instance_type" {
  type        = string
  description = "Instance type of the CPU node group."
  default     = "m6i.xlarge"
}

variable "cpu_nodes" {
  type        = number
  description = "Most nodes of the CPU worker node group; it scales between 0 and this under the cluster autoscaler."
  default     = 2

  validation {
    condition     = var.cpu_nodes >= 1 && var.cpu_nodes <= 256
    error_message = "The cpu_nodes must be between 1 and 256."
  }
}

variable "gpu_instance_type" {
  type        = string
  description = "Instance type of the GPU node group."
  default     = "g5.xlarge"

  validation {
    condition     = can(regex("^(g4dn|g5|g6|g6e|p3|p4d|p5)\\.", var.gpu_instance_type))
    error_message = "The gpu_instance_type must be an NVIDIA GPU instance family (g4dn, g5, g6, g6e, p3, p4d, p5)."
  }
}

variable "gpu_nodes" {
  type        = number
  description = "Most nodes of the GPU node group; it scales from 0 under the cluster autoscaler (0: no Ray GPU workers)."
  default     = 0

  validation {
    condition     = var.gpu_nodes >= 0 && var.gpu_nodes <= 64
    error_message = "The gpu_nodes must be between 0 and 64."
  }
}

variable "gpu_spot" {
  type        = bool
  description = "Run the GPU node group on spot capacity."
  default     = true
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class of the MLflow Postgres database."
  default     = "db.t4g.micro"
}

variable "admin_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the EKS API endpoint."
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "Every admin_cidrs entry must be a valid CIDR block."
  }
}

variable "system_instance_type" {
  type        = string
  description = "Instance type of the always-on system node group (MLflow, Prefect, KubeRay operator, Ray head, cluster autoscaler)."
  default     = "m6i.xlarge"
}

variable "system_nodes" {
  type        = number
  description = "Nodes of the system node group; they stay up while the stack exists (the worker groups scale to zero)."
  default     = 1

  validation {
    condition     = var.system_nodes >= 1 && var.system_nodes <= 10
    error_message = "The system_nodes must be between 1 and 10."
  }
}

variable "cluster_autoscaler_chart_version" {
  type        = string
  description = "Version of the cluster-autoscaler Helm chart (kubernetes/autoscaler) that scales the worker node groups; its app version must have the cluster's minor (9.59.0 ships 1.35.0)."
  default     = "9.59.0"
}
