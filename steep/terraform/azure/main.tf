# AKS with a CPU node pool and a GPU node pool (optionally spot), a Blob container for artifacts and a
# PostgreSQL flexible server for MLflow, then the shared platform module on top.

locals {
  name = var.stack_name
  tags = {
    "steep-stack"      = var.stack_name
    "steep-created-at" = var.created_at
    "managed-by"       = "terraform"
  }
  storage_name = substr(replace("${var.stack_name}art${random_string.suffix.result}", "-", ""), 0, 24)
}

resource "random_string" "suffix" {
  length  = 6
  special = false
  upper   = false
}

resource "azurerm_resource_group" "this" {
  name     = "${local.name}-rg"
  location = var.region
  tags     = local.tags
}

resource "azurerm_virtual_network" "this" {
  name                = local.name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = ["10.42.0.0/16"]
  tags                = local.tags
}

resource "azurerm_subnet" "nodes" {
  name                 = "nodes"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = ["10.42.0.0/20"]
  service_endpoints    = ["Microsoft.Storage"]
}

resource "azurerm_subnet" "db" {
  name                 = "db"
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = ["10.42.16.0/24"]

  delegation {
    name = "postgres"
    service_delegation {
      name    = "Microsoft.DBforPostgreSQL/flexibleServers"
      actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
  }
}

resource "azurerm_network_security_group" "this" {
  name                = local.name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_subnet_network_security_group_association" "this" {
  for_each                  = { nodes = azurerm_subnet.nodes.id, db = azurerm_subnet.db.id }
  subnet_id                 = each.value
  network_security_group_id = azurerm_network_security_group.this.id
}

resource "azurerm_kubernetes_cluster" "this" {
  name                              = local.name
  location                          = azurerm_resource_group.this.location
  resource_group_name               = azurerm_resource_group.this.name
  dns_prefix                        = local.name
  sku_tier                          = "Free"
  oidc_issuer_enabled               = true
  workload_identity_enabled         = true
  role_based_access_control_enabled = true
  local_account_disabled            = false
  azure_policy_enabled              = true
  kubernetes_version                = var.kubernetes_version # a minor version: the patch channel picks the patch
  automatic_channel_upgrade         = "patch"
  tags                              = local.tags
  #checkov:skip=CKV_AZURE_115:a private cluster would need a jump host; the API is limited to var.admin_cidrs
  #checkov:skip=CKV_AZURE_116:Azure Policy is enabled through azure_policy_enabled
  #checkov:skip=CKV_AZURE_117:disk encryption sets need a Key Vault that outlives destroy; platform-managed keys encrypt disks
  #checkov:skip=CKV_AZURE_141:the provider's kubeconfig uses the local admin account; Entra ID integration is left to the user
  #checkov:skip=CKV_AZURE_170:the Free tier has no uptime SLA by design: this is a disposable training stack
  #checkov:skip=CKV_AZURE_226:ephemeral OS disks are not offered on every GPU VM size
  #checkov:skip=CKV_AZURE_227:host encryption must be enabled per subscription first; it is not on by default
  #checkov:skip=CKV_AZURE_232:a CriticalAddonsOnly taint would keep the platform pods off the system pool, where they belong

  # The system pool: always on, sized for the platform (MLflow, Prefect, KubeRay, the Ray head). The CPU and
  # GPU worker pools below scale 0..max under AKS's cluster autoscaler (auto_scaler_profile).
  default_node_pool {
    name                        = "system"
    vm_size                     = var.system_instance_type
    node_count                  = var.system_nodes
    vnet_subnet_id              = azurerm_subnet.nodes.id
    max_pods                    = 50
    temporary_name_for_rotation = "systmp"
    node_labels                 = { "steep-pool" = "system" }
    upgrade_settings {
      max_surge = "10%"
    }
  }

  auto_scaler_profile {
    scale_down_unneeded           = "10m"
    scale_down_delay_after_add    = "5m"
    skip_nodes_with_system_pods   = false # coredns or metrics-server on a worker node must not keep it up
    skip_nodes_with_local_storage = false # nor a pod with an emptyDir (Ray's /tmp/ray)
    balance_similar_node_groups   = true
    expander                      = "least-waste"
  }

  api_server_access_profile {
    authorized_ip_ranges = var.admin_cidrs
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin = "azure"
    network_policy = "azure"
  }

  oms_agent {
    log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  }

  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }
}

resource "azurerm_log_analytics_workspace" "this" {
  name                = local.name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = local.tags
}

resource "azurerm_kubernetes_cluster_node_pool" "cpu" {
  name                  = "cpu"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.this.id
  mode                  = "User"
  vm_size               = var.cpu_instance_type
  enable_auto_scaling   = true
  min_count             = 0
  max_count             = var.cpu_nodes
  node_count            = 0
  vnet_subnet_id        = azurerm_subnet.nodes.id
  max_pods              = 50
  node_labels           = { "steep-pool" = "cpu" }
  tags                  = local.tags
  #checkov:skip=CKV_AZURE_227:host encryption must be enabled per subscription first

  lifecycle {
    ignore_changes = [node_count] # the cluster autoscaler's from creation on
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "gpu" {
  name                  = "gpu"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.this.id
  mode                  = "User"
  vm_size               = var.gpu_instance_type
  enable_auto_scaling   = true
  min_count             = 0
  max_count             = max(var.gpu_nodes, 1)
  node_count            = 0
  vnet_subnet_id        = azurerm_subnet.nodes.id
  max_pods              = 50
  priority              = var.gpu_spot ? "Spot" : "Regular"
  eviction_policy       = var.gpu_spot ? "Delete" : null
  spot_max_price        = var.gpu_spot ? -1 : null
  node_labels           = merge({ "steep-pool" = "gpu" }, var.gpu_spot ? { "kubernetes.azure.com/scalesetpriority" = "spot" } : {})
  # AKS puts the scalesetpriority taint on every spot pool itself; stating it keeps plans free of drift.
  node_taints = concat(["nvidia.com/gpu=present:NoSchedule"], var.gpu_spot ? ["kubernetes.azure.com/scalesetpriority=spot:NoSchedule"] : [])
  tags        = local.tags
  #checkov:skip=CKV_AZURE_168:50 pods per node is the platform's sizing; the check wants 50 or more and reads it wrong on spot pools
  #checkov:skip=CKV_AZURE_227:host encryption must be enabled per subscription first

  lifecycle {
    ignore_changes = [node_count] # the cluster autoscaler's from creation on
  }
}

resource "azurerm_storage_account" "artifacts" {
  name                            = local.storage_name
  resource_group_name             = azurerm_resource_group.this.name
  location                        = azurerm_resource_group.this.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  min_tls_version                 = "TLS1_2"
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  public_network_access_enabled   = true
  tags                            = local.tags
  #checkov:skip=CKV_AZURE_206:geo-replication doubles the cost of a disposable training stack
  #checkov:skip=CKV_AZURE_33:queue logging does not apply: the account holds blobs only
  #checkov:skip=CKV_AZURE_59:the cluster reaches the account through the service endpoint and network rules below
  #checkov:skip=CKV2_AZURE_1:customer-managed keys need a Key Vault that outlives destroy; Microsoft-managed keys encrypt at rest
  #checkov:skip=CKV2_AZURE_33:a private endpoint needs private DNS zones; the service endpoint restricts access to the node subnet
  #checkov:skip=CKV2_AZURE_40:shared keys are disabled; this check misreads shared_access_key_enabled = false
  #checkov:skip=CKV2_AZURE_41:no SAS tokens are issued: workload identity grants access

  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  network_rules {
    default_action             = "Deny"
    bypass                     = ["AzureServices"]
    virtual_network_subnet_ids = [azurerm_subnet.nodes.id]
    ip_rules                   = [for c in var.admin_cidrs : c if c != "0.0.0.0/0"]
  }
}

resource "azurerm_storage_container" "artifacts" {
  #checkov:skip=CKV2_AZURE_21:read-request logs would need a sink that outlives destroy; writes and deletes are in the activity log
  name                  = "mlflow"
  storage_account_name  = azurerm_storage_account.artifacts.name
  container_access_type = "private"
}

resource "azurerm_user_assigned_identity" "artifacts" {
  name                = "${local.name}-artifacts"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "artifacts" {
  scope                = azurerm_storage_account.artifacts.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.artifacts.principal_id
}

resource "azurerm_federated_identity_credential" "artifacts" {
  for_each            = toset(["mlflow", "default"])
  name                = "${local.name}-${each.key}"
  resource_group_name = azurerm_resource_group.this.name
  parent_id           = azurerm_user_assigned_identity.artifacts.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.this.oidc_issuer_url
  subject             = "system:serviceaccount:steep:${each.key}"
}

resource "random_password" "db" {
  length  = 32
  special = false
}

resource "azurerm_private_dns_zone" "db" {
  name                = "${local.name}.postgres.database.azure.com"
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "db" {
  name                  = "${local.name}-db"
  private_dns_zone_name = azurerm_private_dns_zone.db.name
  virtual_network_id    = azurerm_virtual_network.this.id
  resource_group_name   = azurerm_resource_group.this.name
}

resource "azurerm_postgresql_flexible_server" "mlflow" {
  name                          = "${local.name}-mlflow-${random_string.suffix.result}"
  resource_group_name           = azurerm_resource_group.this.name
  location                      = azurerm_resource_group.this.location
  version                       = "16"
  sku_name                      = var.db_sku
  storage_mb                    = 32768
  delegated_subnet_id           = azurerm_subnet.db.id
  private_dns_zone_id           = azurerm_private_dns_zone.db.id
  public_network_access_enabled = false
  administrator_login           = "mlflow"
  administrator_password        = random_password.db.result
  backup_retention_days         = 7
  tags                          = local.tags
  #checkov:skip=CKV_AZURE_136:geo-redundant backups double the cost of a disposable training stack
  #checkov:skip=CKV2_AZURE_57:the server is reached through VNet integration (delegated subnet), not a private endpoint

  depends_on = [azurerm_private_dns_zone_virtual_network_link.db]

  lifecycle {
    ignore_changes = [zone]
  }
}

resource "azurerm_postgresql_flexible_server_database" "mlflow" {
  name      = "mlflow"
  server_id = azurerm_postgresql_flexible_server.mlflow.id
}

module "platform" {
  source     = "../modules/platform"
  stack_name = var.stack_name

  artifact_uri = "wasbs://${azurerm_storage_container.artifacts.name}@${azurerm_storage_account.artifacts.name}.blob.core.windows.net/mlflow"
  database = {
    host     = azurerm_postgresql_flexible_server.mlflow.fqdn
    port     = 5432
    name     = azurerm_postgresql_flexible_server_database.mlflow.name
    user     = azurerm_postgresql_flexible_server.mlflow.administrator_login
    password = random_password.db.result
  }
  service_account_annotations = { "azure.workload.identity/client-id" = azurerm_user_assigned_identity.artifacts.client_id }
  # Ray asks for at most as many workers as the node pools can hold: one per node
  # (Standard_D4s_v5, Standard_NC4as_T4_v3)
  cpu_workers          = { min = 0, max = var.cpu_nodes, cpu = "2", memory = "8Gi" }
  gpu_workers          = { min = 0, max = var.gpu_nodes, gpus = 1, cpu = "3", memory = "24Gi" }
  gpu_node_selector    = { "steep-pool" = "gpu" }
  cpu_node_selector    = { "steep-pool" = "cpu" }
  system_node_selector = { "steep-pool" = "system" }
  nvidia_device_plugin = true # AKS installs the driver on GPU pools, not the device plugin
  labels               = { "steep.dev/target" = "azure" }
  # a spot VM's Preempt scheduled event comes at least 30 s ahead; AKS's node auto-drain (on by default)
  # cordons and drains the node on it
  reclaim_notice_s = 30

  depends_on = [azurerm_kubernetes_cluster_node_pool.gpu]
}
