# The stack contract (DESIGN.md): the same names on every target.

output "mlflow_tracking_uri" {
  description = "MLflow tracking server (in-cluster; `kubectl port-forward` from outside)."
  value       = module.platform.mlflow_tracking_uri
}

output "artifact_uri" {
  description = "S3 location of MLflow artifacts."
  value       = "s3://${aws_s3_bucket.artifacts.bucket}/mlflow"
}

output "prefect_api_url" {
  description = "Prefect API URL."
  value       = module.platform.prefect_api_url
}

output "ray_address" {
  description = "Ray client address of the KubeRay head."
  value       = module.platform.ray_address
}

output "serving_url" {
  description = "Kubernetes namespace the model is served from."
  value       = "k8s://${aws_eks_cluster.this.name}/${module.platform.serving_namespace}"
}

output "ray_dashboard_url" {
  description = "In-cluster Ray dashboard URL."
  value       = module.platform.ray_dashboard_url
}

output "work_pool" {
  description = "Prefect work pool flow runs go to (Kubernetes jobs)."
  value       = module.platform.work_pool
}

output "namespace" {
  description = "Kubernetes namespace the model is served from."
  value       = module.platform.serving_namespace
}

output "target" {
  description = "The target this stack runs on."
  value       = "aws"
}

output "created_at" {
  description = "When the stack was first provisioned."
  value       = var.created_at
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.this.name
}

output "region" {
  description = "AWS region."
  value       = var.region
}
