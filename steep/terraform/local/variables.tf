variable "stack_name" {
  type        = string
  description = "Names the stack (steep.yaml project.name)."
  default     = "steep"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.stack_name))
    error_message = "The stack_name must be 3-40 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "home" {
  type        = string
  description = "Absolute path of the steep state folder (project.home); pid files, logs and data go under it."

  validation {
    condition     = substr(var.home, 0, 1) == "/"
    error_message = "The home must be an absolute path."
  }
}

variable "python" {
  type        = string
  description = "The Python interpreter that has steep installed; it runs the daemon helper."
}

variable "host" {
  type        = string
  description = "Interface the local services bind to."
  default     = "127.0.0.1"
}

variable "ports" {
  type        = map(number)
  description = "Ports of the local services: mlflow, prefect, ray, ray_dashboard, serving."
  default = {
    mlflow        = 5000
    prefect       = 4200
    ray           = 6379
    ray_dashboard = 8265
    serving       = 3000
  }

  validation {
    condition     = alltrue([for k in ["mlflow", "prefect", "ray", "ray_dashboard", "serving"] : contains(keys(var.ports), k)])
    error_message = "The ports map needs mlflow, prefect, ray, ray_dashboard and serving."
  }

  validation {
    condition     = alltrue([for p in values(var.ports) : p >= 1024 && p <= 65535])
    error_message = "Every port must be between 1024 and 65535."
  }
}

variable "ray_internal_ports" {
  type        = map(number)
  description = "Ray head's internal ports (client server, agents, metrics, workers), picked free by steep."
  default     = {}
}

variable "ray_worker_nodes" {
  type        = number
  description = "Ray worker nodes besides the head (stack.local.ray_worker_nodes); 0: the head does the work."
  default     = 0

  validation {
    condition     = var.ray_worker_nodes >= 0 && var.ray_worker_nodes <= 8
    error_message = "The ray_worker_nodes must be between 0 and 8."
  }
}

variable "ray_worker_cpus" {
  type        = number
  description = "CPUs each Ray worker node offers."
  default     = 1

  validation {
    condition     = var.ray_worker_cpus >= 1
    error_message = "The ray_worker_cpus must be at least 1."
  }
}

variable "ray_worker_ports" {
  type        = list(map(number))
  description = "Each Ray worker node's internal ports (agents, metrics, raylet, worker range), picked free by steep."
  default     = []
}

variable "start_timeout" {
  type        = number
  description = "Seconds to wait for each service to become healthy."
  default     = 180
}

variable "created_at" {
  type        = string
  description = "RFC 3339 time the stack was first provisioned (kept across re-applies)."
}
