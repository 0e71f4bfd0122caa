# The platform on any Kubernetes cluster: MLflow (Postgres + bucket), KubeRay with a RayCluster
# (CPU group, optional GPU group), a Prefect server and worker with a Kubernetes work pool, and a
# serving namespace with metrics-server so the model's HPA can scale.

locals {
  # Helm sets app.kubernetes.io/managed-by itself: the charts get steep's labels without it.
  chart_labels = merge(var.labels, {
    "app.kubernetes.io/part-of" = "steep"
    "steep.dev/stack"           = var.stack_name
  })
  labels    = merge(local.chart_labels, { "app.kubernetes.io/managed-by" = "terraform" })
  work_pool = "${var.stack_name}-k8s"

  # Azure's workload identity webhook only injects its token into pods labelled for it.
  azure_identity = contains(keys(var.service_account_annotations), "azure.workload.identity/client-id")
  artifact_uri   = "^(?P<scheme>s3|gs|wasbs)://(?:(?P<container>[^@/]+)@(?P<account>[^.]+)[.]blob[.]core[.]windows[.]net|(?P<bucket>[^/]+))/?(?P<path>.*)$"

  # The variables of every values/*.yaml.tftpl (one set for all seven); tests/terraform/test_helm.py renders
  # the same files with the same names through `terraform console`.
  values_vars = {
    namespace                   = var.namespace
    labels                      = local.chart_labels
    pod_labels                  = merge(local.chart_labels, local.azure_identity ? { "azure.workload.identity/use" = "true" } : {})
    service_account             = "mlflow" # the mlflow release makes it; Ray pods use it for the bucket too
    service_account_annotations = var.service_account_annotations
    mlflow_image                = var.mlflow_image
    # not secret (the password is, it goes through set_sensitive): keeps the other releases' plans readable
    database = {
      host = nonsensitive(var.database.host), port = nonsensitive(var.database.port)
      name = nonsensitive(var.database.name), user = nonsensitive(var.database.user)
    }
    artifact           = regex(local.artifact_uri, var.artifact_uri) # {scheme, bucket | container + account, path}
    ray_image          = var.ray_image
    ray_idle_timeout_s = var.ray_idle_timeout_s
    reclaim_notice_s   = var.reclaim_notice_s
    cpu_workers        = var.cpu_workers
    gpu_workers        = var.gpu_workers
    gpu_node_selector  = var.gpu_node_selector
    cpu_node_selector  = var.cpu_node_selector
    node_selector      = var.system_node_selector
    prefect_api_url    = local.prefect_api_url
    work_pool          = local.work_pool
  }
}

resource "kubernetes_namespace" "platform" {
  metadata {
    name   = var.namespace
    labels = local.labels
  }
}

resource "kubernetes_namespace" "serving" {
  metadata {
    name   = var.serving_namespace
    labels = local.labels
  }
}

resource "helm_release" "mlflow" {
  name       = "mlflow"
  repository = "https://community-charts.github.io/helm-charts"
  chart      = "mlflow"
  version    = var.chart_versions["mlflow"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  atomic     = true
  timeout    = 600

  values = [templatefile("${path.module}/values/mlflow.yaml.tftpl", local.values_vars)]
  set_sensitive {
    name  = "backendStore.postgres.password"
    value = var.database.password
  }
}

resource "helm_release" "kuberay_operator" {
  name       = "kuberay-operator"
  repository = "https://ray-project.github.io/kuberay-helm/"
  chart      = "kuberay-operator"
  version    = var.chart_versions["kuberay"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  atomic     = true

  values = [templatefile("${path.module}/values/kuberay-operator.yaml.tftpl", local.values_vars)]
}

resource "helm_release" "ray_cluster" {
  name       = "${var.stack_name}-ray"
  repository = "https://ray-project.github.io/kuberay-helm/"
  chart      = "ray-cluster"
  version    = var.chart_versions["kuberay"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  depends_on = [helm_release.kuberay_operator, helm_release.mlflow] # the operator and the service account

  values = [templatefile("${path.module}/values/ray-cluster.yaml.tftpl", local.values_vars)]
}

resource "helm_release" "prefect_server" {
  name       = "prefect-server"
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-server"
  version    = var.chart_versions["prefect_server"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  atomic     = true

  values = [templatefile("${path.module}/values/prefect-server.yaml.tftpl", local.values_vars)]
}

resource "helm_release" "prefect_worker" {
  name       = "prefect-worker"
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-worker"
  version    = var.chart_versions["prefect_worker"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  depends_on = [helm_release.prefect_server]

  values = [templatefile("${path.module}/values/prefect-worker.yaml.tftpl", local.values_vars)]
}

resource "helm_release" "metrics_server" {
  name       = "metrics-server"
  repository = "https://kubernetes-sigs.github.io/metrics-server/"
  chart      = "metrics-server"
  version    = var.chart_versions["metrics_server"]
  namespace  = "kube-system"
  atomic     = true

  values = [templatefile("${path.module}/values/metrics-server.yaml.tftpl", local.values_vars)]
}

# A GPU node offers nvidia.com/gpu (what Ray's GPU workers request) only once a device plugin registers its
# GPUs with the kubelet. EKS's and AKS's GPU images carry the driver but no plugin: without this DaemonSet
# GPU nodes come up, advertise no GPU, and the GPU workers stay Pending. It runs on the GPU pool only.
resource "helm_release" "nvidia_device_plugin" {
  count      = var.nvidia_device_plugin ? 1 : 0
  name       = "nvidia-device-plugin"
  repository = "https://nvidia.github.io/k8s-device-plugin"
  chart      = "nvidia-device-plugin"
  version    = var.chart_versions["nvidia_device_plugin"]
  namespace  = "kube-system"
  atomic     = true

  values = [templatefile("${path.module}/values/nvidia-device-plugin.yaml.tftpl", local.values_vars)]
}

resource "kubernetes_resource_quota" "serving" {
  metadata {
    name      = "serving"
    namespace = kubernetes_namespace.serving.metadata[0].name
    labels    = local.labels
  }
  spec {
    hard = {
      "requests.cpu"            = "32"
      "requests.memory"         = "128Gi"
      "requests.nvidia.com/gpu" = "4"
    }
  }
}

locals {
  svc_domain      = "${kubernetes_namespace.platform.metadata[0].name}.svc.cluster.local"
  prefect_api_url = "http://prefect-server.${kubernetes_namespace.platform.metadata[0].name}.svc.cluster.local:4200/api"
}
