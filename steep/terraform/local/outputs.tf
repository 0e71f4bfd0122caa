# The stack contract: every target exports these names (see DESIGN.md).

output "mlflow_tracking_uri" {
  description = "MLflow tracking server URL."
  value       = "http://${null_resource.service["mlflow"].triggers.host}:${null_resource.service["mlflow"].triggers.port}"
}

output "artifact_uri" {
  description = "Where MLflow stores artifacts (proxied by the tracking server)."
  value       = "file://${var.home}/stack/mlflow/artifacts"
}

output "prefect_api_url" {
  description = "Prefect API URL (PREFECT_API_URL)."
  value       = "http://${null_resource.service["prefect"].triggers.host}:${null_resource.service["prefect"].triggers.port}/api"
}

output "ray_address" {
  description = "Ray head address for ray.init(address=...)."
  value       = "${null_resource.service["ray"].triggers.host}:${null_resource.service["ray"].triggers.port}"
}

output "ray_dashboard_url" {
  description = "Ray dashboard URL."
  value       = "http://${var.host}:${var.ports["ray_dashboard"]}"
}

output "serving_url" {
  description = "Where `steep serve` listens on this target."
  value       = "http://${var.host}:${var.ports["serving"]}"
}

output "target" {
  description = "The target this stack runs on."
  value       = "local"
}

output "created_at" {
  description = "When the stack was first provisioned."
  value       = var.created_at
}

output "stack_name" {
  description = "Name of the stack."
  value       = var.stack_name
}

output "work_pool" {
  description = "Prefect work pool flow runs go to (a process pool on this machine)."
  value       = "${var.stack_name}-process"
}

output "namespace" {
  description = "Kubernetes namespace the model is served from: none on the local target."
  value       = null
}
