variable "stack_name" {
  type        = string
  description = "Names the stack; prefixes releases and labels every object."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.stack_name))
    error_message = "The stack_name must be 3-40 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "namespace" {
  type        = string
  description = "Namespace of the platform services (MLflow, KubeRay, Prefect)."
  default     = "steep"
}

variable "serving_namespace" {
  type        = string
  description = "Namespace where `steep serve` deploys the model (Deployment + HPA)."
  default     = "steep-serving"
}

variable "artifact_uri" {
  type        = string
  description = "Bucket URI for MLflow artifacts: s3://..., gs://... or wasbs://..."

  validation {
    condition     = can(regex("^(s3|gs|wasbs)://", var.artifact_uri))
    error_message = "The artifact_uri must start with s3://, gs:// or wasbs://."
  }
}

variable "database" {
  type = object({
    host     = string
    port     = number
    name     = string
    user     = string
    password = string
  })
  description = "Postgres backend store of MLflow."
  sensitive   = true
}

variable "service_account_annotations" {
  type        = map(string)
  description = "Annotations of the MLflow and Ray service accounts (IRSA role, GKE Workload Identity, Azure workload identity) that grant bucket access."
  default     = {}
}

variable "cpu_workers" {
  type        = object({ min = number, max = number, cpu = string, memory = string })
  description = "Ray CPU worker group: replica bounds and per-worker resources. min = 0: no worker runs while Ray is idle."
  default     = { min = 0, max = 4, cpu = "2", memory = "8Gi" }

  validation {
    condition     = var.cpu_workers.min >= 0 && var.cpu_workers.max >= var.cpu_workers.min
    error_message = "The cpu_workers need 0 <= min <= max."
  }
}

variable "gpu_workers" {
  type        = object({ min = number, max = number, gpus = number, cpu = string, memory = string })
  description = "Ray GPU worker group; max = 0 leaves it out."
  default     = { min = 0, max = 0, gpus = 1, cpu = "4", memory = "16Gi" }

  validation {
    condition     = var.gpu_workers.min >= 0 && var.gpu_workers.max >= var.gpu_workers.min && var.gpu_workers.gpus >= 1
    error_message = "The gpu_workers need 0 <= min <= max and gpus >= 1."
  }
}

variable "gpu_node_selector" {
  type        = map(string)
  description = "Node labels that select the GPU node pool."
  default     = {}
}

variable "cpu_node_selector" {
  type        = map(string)
  description = "Node labels that select the CPU worker node pool (Ray CPU workers); {} lets them run anywhere."
  default     = {}
}

variable "system_node_selector" {
  type        = map(string)
  description = "Node labels that select the always-on node pool for the platform pods (MLflow, Prefect, KubeRay, the Ray head, metrics-server), so none of them keeps a worker node from scaling down; {} lets them run anywhere."
  default     = {}
}

variable "ray_image" {
  type        = string
  description = "Container image of the Ray head and workers (steep installed in it), as repository:tag."
  default     = "rayproject/ray:2.60.0-py311"

  validation {
    condition     = can(regex("^.+:[^:/]+$", var.ray_image))
    error_message = "The ray_image must be repository:tag."
  }
}

variable "ray_idle_timeout_s" {
  type        = number
  description = "Seconds a Ray worker pod may sit idle before KubeRay's autoscaler removes it (then the node autoscaler can remove its node)."
  default     = 300

  validation {
    condition     = var.ray_idle_timeout_s >= 30
    error_message = "The ray_idle_timeout_s must be at least 30 seconds."
  }
}

variable "reclaim_notice_s" {
  type        = number
  description = "Seconds a spot reclaim notice leaves a Ray worker pod before its node goes (EKS 120, GKE 15 of the VM's 30, AKS 30). The workers' preStop hook drains their Ray node for preemption with a deadline from it, so Ray Train checkpoints in time."
  default     = 30

  validation {
    condition     = var.reclaim_notice_s >= 10
    error_message = "The reclaim_notice_s must be at least 10 seconds."
  }
}

variable "mlflow_image" {
  type        = string
  description = "Image of the MLflow tracking server, as repository:tag; the server must not be older than steep's MLflow client (the chart's default is MLflow 2.1.1)."
  default     = "burakince/mlflow:3.17.2"

  validation {
    condition     = can(regex("^.+:[^:/]+$", var.mlflow_image))
    error_message = "The mlflow_image must be repository:tag."
  }
}

variable "chart_versions" {
  type        = map(string)
  description = "Pinned Helm chart versions: mlflow, kuberay, prefect_server, prefect_worker, metrics_server, nvidia_device_plugin."
  default = {
    mlflow               = "0.7.19"
    kuberay              = "1.2.2"
    prefect_server       = "2025.9.5"
    prefect_worker       = "2025.9.5"
    metrics_server       = "3.12.2"
    nvidia_device_plugin = "0.20.0"
  }
}

variable "nvidia_device_plugin" {
  type        = bool
  description = "Install NVIDIA's device plugin on the GPU pool (gpu_node_selector), so GPU nodes advertise nvidia.com/gpu and Ray's GPU workers can schedule. EKS (AL2023 NVIDIA AMIs) and AKS need it; GKE runs its own, which a second one would fight."
  default     = false
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every Kubernetes object."
  default     = {}
}
