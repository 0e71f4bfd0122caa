output "mlflow_tracking_uri" {
  description = "In-cluster URL of the MLflow tracking server."
  value       = "http://${helm_release.mlflow.name}.${local.svc_domain}:5000"
}

output "prefect_api_url" {
  description = "In-cluster Prefect API URL."
  value       = local.prefect_api_url
}

output "ray_address" {
  description = "Ray client address of the head service."
  value       = "ray://${helm_release.ray_cluster.name}-kuberay-head-svc.${local.svc_domain}:10001"
}

output "ray_dashboard_url" {
  description = "In-cluster Ray dashboard URL."
  value       = "http://${helm_release.ray_cluster.name}-kuberay-head-svc.${local.svc_domain}:8265"
}

output "serving_namespace" {
  description = "Namespace `steep serve` deploys into."
  value       = kubernetes_namespace.serving.metadata[0].name
}

output "work_pool" {
  description = "Prefect Kubernetes work pool served by the worker."
  value       = local.work_pool
}
