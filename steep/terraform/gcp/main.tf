# GKE with a CPU node pool and a GPU node pool (optionally spot), a GCS artifact bucket and a Cloud SQL
# Postgres for MLflow, then the shared platform module on top.

locals {
  name = var.stack_name
  labels = {
    "steep-stack" = var.stack_name
    "managed-by"  = "terraform"
  }
}

data "google_project" "current" {}

resource "google_compute_network" "this" {
  name                    = local.name
  auto_create_subnetworks = false
}

resource "google_compute_firewall" "internal" {
  name      = "${local.name}-internal"
  network   = google_compute_network.this.id
  direction = "INGRESS"
  # nodes, pods and services talk to each other; nothing else gets in (private nodes, NAT egress only)
  source_ranges = ["10.42.0.0/20", "10.44.0.0/14", "10.48.0.0/20", "172.16.0.0/28"]

  allow {
    protocol = "tcp"
  }
  allow {
    protocol = "udp"
  }
  allow {
    protocol = "icmp"
  }
}

resource "google_compute_subnetwork" "this" {
  name                     = local.name
  network                  = google_compute_network.this.id
  region                   = var.region
  ip_cidr_range            = "10.42.0.0/20"
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.44.0.0/14"
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.48.0.0/20"
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
  }
}

resource "google_compute_router" "this" {
  name    = local.name
  network = google_compute_network.this.id
  region  = var.region
}

resource "google_compute_router_nat" "this" {
  name                               = local.name
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
}

resource "google_service_account" "nodes" {
  account_id   = "${local.name}-nodes"
  display_name = "${local.name} GKE nodes"
}

resource "google_container_cluster" "this" {
  name                        = local.name
  location                    = var.region
  network                     = google_compute_network.this.id
  subnetwork                  = google_compute_subnetwork.this.id
  remove_default_node_pool    = true
  initial_node_count          = 1
  deletion_protection         = false # `steep destroy` must be able to delete it
  resource_labels             = local.labels
  enable_intranode_visibility = true
  #checkov:skip=CKV_GCP_69:Workload Identity metadata is set on each node pool below
  #checkov:skip=CKV_GCP_65:Google Groups RBAC needs an organisation; single-user stacks use IAM
  #checkov:skip=CKV_GCP_66:Binary Authorization needs a signed-image pipeline that steep does not require
  #checkov:skip=CKV_GCP_20:the control plane is restricted to var.admin_cidrs through master_authorized_networks_config

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = "172.16.0.0/28"
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.admin_cidrs
      content {
        cidr_block = cidr_blocks.value
      }
    }
  }

  workload_identity_config {
    workload_pool = "${data.google_project.current.project_id}.svc.id.goog"
  }

  network_policy {
    enabled = true
  }

  # Node pools with an autoscaling block scale under GKE's cluster autoscaler; this profile removes
  # unneeded nodes sooner than the default one. No node auto-provisioning: the pools below are the only ones.
  cluster_autoscaling {
    enabled             = false
    autoscaling_profile = "OPTIMIZE_UTILIZATION"
  }

  # the REGULAR channel upgrades the control plane from this version on: var.kubernetes_version is a floor
  min_master_version = var.kubernetes_version
  release_channel {
    channel = "REGULAR"
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

}

# Node pools: a small always-on system pool in one zone for the platform (MLflow, Prefect, KubeRay, the Ray
# head), and CPU and GPU worker pools that start empty and scale 0..max (totals across the region's zones)
# under GKE's cluster autoscaler, as KubeRay adds and removes Ray worker pods.
data "google_compute_zones" "available" {
  region = var.region
}

resource "google_container_node_pool" "system" {
  name           = "system"
  cluster        = google_container_cluster.this.id
  node_locations = slice(data.google_compute_zones.available.names, 0, 1)
  node_count     = var.system_nodes

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.system_instance_type
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = merge(local.labels, { "steep-pool" = "system" })
    image_type      = "COS_CONTAINERD"

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "cpu" {
  name               = "cpu"
  cluster            = google_container_cluster.this.id
  initial_node_count = 0

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.cpu_nodes
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.cpu_instance_type
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = merge(local.labels, { "steep-pool" = "cpu" })
    image_type      = "COS_CONTAINERD"

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "gpu" {
  name               = "gpu"
  cluster            = google_container_cluster.this.id
  initial_node_count = 0

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = max(var.gpu_nodes, 1)
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.gpu_instance_type
    spot            = var.gpu_spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = merge(local.labels, { "steep-pool" = "gpu" })
    image_type      = "COS_CONTAINERD"

    guest_accelerator {
      type  = var.gpu_accelerator
      count = 1
      gpu_driver_installation_config {
        gpu_driver_version = "DEFAULT"
      }
    }

    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_storage_bucket" "artifacts" {
  name                        = "${local.name}-artifacts-${data.google_project.current.number}"
  location                    = var.region
  force_destroy               = true # `steep destroy` must leave nothing behind
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels
  #checkov:skip=CKV_GCP_62:access logging would need a second bucket that outlives destroy; Cloud Audit Logs cover access

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 3
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_service_account" "artifacts" {
  account_id   = "${local.name}-artifacts"
  display_name = "${local.name} MLflow and Ray bucket access"
}

resource "google_storage_bucket_iam_member" "artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.artifacts.email}"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each           = toset(["mlflow", "default"])
  service_account_id = google_service_account.artifacts.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${data.google_project.current.project_id}.svc.id.goog[steep/${each.key}]"
}

resource "random_password" "db" {
  length  = 32
  special = false
}

resource "google_sql_database_instance" "mlflow" {
  name                = "${local.name}-mlflow"
  database_version    = "POSTGRES_16"
  region              = var.region
  deletion_protection = false # destroy must be able to delete it
  #checkov:skip=CKV_GCP_79:POSTGRES_16 is the current major version; the check lags behind releases
  #checkov:skip=CKV2_GCP_20:point-in-time recovery costs extra for a disposable training stack; daily backups are on

  settings {
    tier        = var.db_tier
    user_labels = local.labels

    #checkov:skip=CKV_GCP_6:ssl_mode = ENCRYPTED_ONLY enforces TLS; the check reads only the deprecated require_ssl
    ip_configuration {
      ipv4_enabled = false
      ssl_mode     = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled = true
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_error_verbosity"
      value = "default"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
  }
}

resource "google_sql_database" "mlflow" {
  name     = "mlflow"
  instance = google_sql_database_instance.mlflow.name
}

resource "google_sql_user" "mlflow" {
  name     = "mlflow"
  instance = google_sql_database_instance.mlflow.name
  password = random_password.db.result
}

module "platform" {
  source     = "../modules/platform"
  stack_name = var.stack_name

  artifact_uri = "gs://${google_storage_bucket.artifacts.name}/mlflow"
  database = {
    host     = google_sql_database_instance.mlflow.private_ip_address
    port     = 5432
    name     = google_sql_database.mlflow.name
    user     = google_sql_user.mlflow.name
    password = random_password.db.result
  }
  service_account_annotations = { "iam.gke.io/gcp-service-account" = google_service_account.artifacts.email }
  # Ray asks for at most as many workers as the node pools can hold: one per node
  # (e2-standard-4, g2-standard-4)
  cpu_workers          = { min = 0, max = var.cpu_nodes, cpu = "2", memory = "8Gi" }
  gpu_workers          = { min = 0, max = var.gpu_nodes, gpus = 1, cpu = "3", memory = "12Gi" }
  gpu_node_selector    = { "steep-pool" = "gpu" }
  cpu_node_selector    = { "steep-pool" = "cpu" }
  system_node_selector = { "steep-pool" = "system" }
  nvidia_device_plugin = false # GKE runs its own device plugin on GPU nodes; a second would fight it
  labels               = { "steep.dev/target" = "gcp" }
  # a spot VM goes 30 s after its preemption notice; GKE's graceful node shutdown (on by default) shuts its
  # pods down on it and gives non-system pods the first 15 s of those 30
  reclaim_notice_s = 15

  depends_on = [google_container_node_pool.system]
}
