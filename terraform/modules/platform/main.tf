# The platform on any Kubernetes cluster: MLflow (Postgres + bucket), KubeRay with a RayCluster
# (CPU group, optional GPU group), a Prefect server and worker with a Kubernetes work pool, and a
# serving namespace with metrics-server so the model's HPA can scale.

locals {
  labels = merge(var.labels, {
    "app.kubernetes.io/part-of"    = "steep"
    "app.kubernetes.io/managed-by" = "terraform"
    "steep.dev/stack"              = var.stack_name
  })
  work_pool = "${var.stack_name}-k8s"

  gpu_group = var.gpu_workers.max > 0 ? [{
    groupName      = "gpu"
    replicas       = var.gpu_workers.min
    minReplicas    = var.gpu_workers.min
    maxReplicas    = var.gpu_workers.max
    rayStartParams = { "num-gpus" = tostring(var.gpu_workers.gpus) }
    nodeSelector   = var.gpu_node_selector
    tolerations    = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
    resources = {
      limits   = { cpu = var.gpu_workers.cpu, memory = var.gpu_workers.memory, "nvidia.com/gpu" = var.gpu_workers.gpus }
      requests = { cpu = var.gpu_workers.cpu, memory = var.gpu_workers.memory, "nvidia.com/gpu" = var.gpu_workers.gpus }
    }
  }] : []
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

resource "kubernetes_secret" "mlflow_db" {
  metadata {
    name      = "${var.stack_name}-mlflow-db"
    namespace = kubernetes_namespace.platform.metadata[0].name
    labels    = local.labels
  }
  data = {
    password = var.database.password
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

  values = [yamlencode({
    commonLabels   = local.labels
    serviceAccount = { create = true, name = "mlflow", annotations = var.service_account_annotations }
    backendStore = {
      databaseMigration = true
      postgres = {
        enabled  = true
        host     = var.database.host
        port     = var.database.port
        database = var.database.name
        user     = var.database.user
      }
      existingDatabaseSecret = { name = kubernetes_secret.mlflow_db.metadata[0].name, passwordKey = "password" }
    }
    artifactRoot = {
      proxiedArtifactStorage      = true
      defaultArtifactsDestination = var.artifact_uri
    }
    extraEnvVars = { MLFLOW_SERVER_ENABLE_JOB_EXECUTION = "false", MLFLOW_DISABLE_TELEMETRY = "true" }
  })]
}

resource "helm_release" "kuberay_operator" {
  name       = "kuberay-operator"
  repository = "https://ray-project.github.io/kuberay-helm/"
  chart      = "kuberay-operator"
  version    = var.chart_versions["kuberay"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  atomic     = true
}

resource "helm_release" "ray_cluster" {
  name       = "${var.stack_name}-ray"
  repository = "https://ray-project.github.io/kuberay-helm/"
  chart      = "ray-cluster"
  version    = var.chart_versions["kuberay"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  depends_on = [helm_release.kuberay_operator]

  values = [yamlencode({
    image = {
      repository = split(":", var.ray_image)[0]
      tag        = split(":", var.ray_image)[1]
    }
    commonLabels = local.labels
    head = {
      serviceAccountName = "mlflow"
      rayStartParams     = { "dashboard-host" = "0.0.0.0", "num-cpus" = "0" }
      containerEnv       = [{ name = "RAY_USAGE_STATS_ENABLED", value = "0" }]
      resources          = { limits = { cpu = "2", memory = "4Gi" }, requests = { cpu = "1", memory = "4Gi" } }
    }
    worker = {
      groupName   = "cpu"
      replicas    = var.cpu_workers.min
      minReplicas = var.cpu_workers.min
      maxReplicas = var.cpu_workers.max
      resources = {
        limits   = { cpu = var.cpu_workers.cpu, memory = var.cpu_workers.memory }
        requests = { cpu = var.cpu_workers.cpu, memory = var.cpu_workers.memory }
      }
    }
    additionalWorkerGroups = { for g in local.gpu_group : g.groupName => g }
  })]
}

resource "helm_release" "prefect_server" {
  name       = "prefect-server"
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-server"
  version    = var.chart_versions["prefect_server"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  atomic     = true

  values = [yamlencode({
    commonLabels = local.labels
    server       = { env = [{ name = "PREFECT_SERVER_ANALYTICS_ENABLED", value = "false" }] }
  })]
}

resource "helm_release" "prefect_worker" {
  name       = "prefect-worker"
  repository = "https://prefecthq.github.io/prefect-helm"
  chart      = "prefect-worker"
  version    = var.chart_versions["prefect_worker"]
  namespace  = kubernetes_namespace.platform.metadata[0].name
  depends_on = [helm_release.prefect_server]

  values = [yamlencode({
    commonLabels = local.labels
    worker = {
      apiConfig                 = "selfHostedServer"
      selfHostedServerApiConfig = { apiUrl = local.prefect_api_url }
      config                    = { workPool = local.work_pool, type = "kubernetes" }
    }
  })]
}

resource "helm_release" "metrics_server" {
  name       = "metrics-server"
  repository = "https://kubernetes-sigs.github.io/metrics-server/"
  chart      = "metrics-server"
  version    = var.chart_versions["metrics_server"]
  namespace  = "kube-system"
  atomic     = true
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
