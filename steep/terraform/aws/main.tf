# EKS with a CPU node group and a GPU node group (optionally spot), an S3 artifact bucket and an RDS
# Postgres for MLflow, then the shared platform module on top.

locals {
  name = var.stack_name
  tags = {
    "steep:stack"      = var.stack_name
    "steep:created-at" = var.created_at
    "managed-by"       = "terraform"
  }
  azs = slice(data.aws_availability_zones.available.names, 0, 2)
}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:the first two zones are read once at create time; the subnets then pin them in state
  state = "available"
}

data "aws_caller_identity" "current" {}

data "aws_eks_cluster_auth" "this" {
  name = aws_eks_cluster.this.name
}

# ------------------------------------------------------------------------------------------ network
resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  enable_dns_support   = true
  tags                 = { Name = local.name }
}

resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_flow_log" "this" {
  vpc_id               = aws_vpc.this.id
  traffic_type         = "REJECT"
  log_destination_type = "s3"
  log_destination      = "${aws_s3_bucket.artifacts.arn}/vpc-flow-logs/"
}

resource "aws_subnet" "public" {
  count             = 2
  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  availability_zone = local.azs[count.index]
  tags              = { Name = "${local.name}-public-${count.index}", "kubernetes.io/role/elb" = "1" }
}

resource "aws_subnet" "private" {
  count             = 2
  vpc_id            = aws_vpc.this.id
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index + 8)
  availability_zone = local.azs[count.index]
  tags              = { Name = "${local.name}-private-${count.index}", "kubernetes.io/role/internal-elb" = "1" }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_eip" "nat" {
  domain = "vpc"
}

resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = aws_subnet.public[0].id
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this.id
  }
}

resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "private" {
  count          = 2
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# ------------------------------------------------------------------------------------------ encryption
resource "aws_kms_key" "this" {
  description         = "${local.name}: EKS secrets, S3 artifacts, RDS"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdmin"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::${data.aws_caller_identity.current.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

# ------------------------------------------------------------------------------------------ EKS
resource "aws_iam_role" "cluster" {
  name = "${local.name}-eks-cluster"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "eks.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "this" {
  name                      = local.name
  role_arn                  = aws_iam_role.cluster.arn
  version                   = var.kubernetes_version
  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = aws_subnet.private[*].id
    endpoint_private_access = true
    #checkov:skip=CKV_AWS_38:the endpoint is reachable only from var.admin_cidrs, which users narrow to their network
    #checkov:skip=CKV_AWS_39:steep's CLI and CI reach the API from outside the VPC; access is limited by var.admin_cidrs
    endpoint_public_access = true
    public_access_cidrs    = var.admin_cidrs
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.this.arn
    }
  }

  depends_on = [aws_iam_role_policy_attachment.cluster]
}

resource "aws_iam_role" "node" {
  name = "${local.name}-eks-node"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ec2.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
  ])
  role       = aws_iam_role.node.name
  policy_arn = each.value
}

# Node groups: a small always-on system group for the platform (MLflow, Prefect, KubeRay, the Ray head,
# the cluster autoscaler), and CPU and GPU worker groups that start empty and scale 0..max under the
# cluster autoscaler below, as KubeRay adds and removes Ray worker pods. Terraform sets the worker groups'
# desired size only at creation; afterwards it is the autoscaler's.
resource "aws_eks_node_group" "system" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "system"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  instance_types  = [var.system_instance_type]
  labels          = { "steep-pool" = "system" }

  scaling_config {
    desired_size = var.system_nodes
    min_size     = var.system_nodes
    max_size     = var.system_nodes
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "cpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  instance_types  = [var.cpu_instance_type]
  labels          = { "steep-pool" = "cpu" }

  scaling_config {
    desired_size = 0
    min_size     = 0
    max_size     = var.cpu_nodes
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "gpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  instance_types  = [var.gpu_instance_type]
  # NVIDIA driver and container toolkit, not the device plugin (modules/platform installs it). EKS publishes
  # no Amazon Linux 2 AMIs for Kubernetes 1.33 and later: AL2_x86_64_GPU would not create.
  ami_type      = "AL2023_x86_64_NVIDIA"
  capacity_type = var.gpu_spot ? "SPOT" : "ON_DEMAND"
  labels        = { "steep-pool" = "gpu" }

  taint {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  scaling_config {
    desired_size = 0
    min_size     = 0
    max_size     = max(var.gpu_nodes, 1)
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# ------------------------------------------------------------------------------------------ cluster autoscaler
# EKS does not scale managed node groups by itself: the Kubernetes cluster autoscaler does, from its Helm
# chart, with an IAM role for its service account (IRSA). It finds the groups by the tags EKS puts on their
# Auto Scaling groups (k8s.io/cluster-autoscaler/enabled, k8s.io/cluster-autoscaler/<cluster>), may change
# the desired size of the CPU and GPU groups only, and learns what a node of an empty group would look like
# from the node-template tags below (and eks:DescribeNodegroup), so it can scale a group up from zero.
locals {
  worker_asgs = {
    cpu = aws_eks_node_group.cpu.resources[0].autoscaling_groups[0].name
    gpu = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name
  }
  cluster_autoscaler_sa = "cluster-autoscaler"
  oidc_issuer           = replace(aws_iam_openid_connect_provider.eks.url, "https://", "")
}

resource "aws_autoscaling_group_tag" "node_template" {
  for_each = {
    cpu_label = { group = "cpu", key = "label/steep-pool", value = aws_eks_node_group.cpu.labels["steep-pool"] }
    gpu_label = { group = "gpu", key = "label/steep-pool", value = aws_eks_node_group.gpu.labels["steep-pool"] }
    gpu_taint = { group = "gpu", key = "taint/nvidia.com/gpu", value = "true:NoSchedule" }
  }
  autoscaling_group_name = local.worker_asgs[each.value.group]

  tag {
    key                 = "k8s.io/cluster-autoscaler/node-template/${each.value.key}"
    value               = each.value.value
    propagate_at_launch = false
  }
}

resource "aws_iam_role" "cluster_autoscaler" {
  name = "${local.name}-cluster-autoscaler"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.eks.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_issuer}:sub" = "system:serviceaccount:kube-system:${local.cluster_autoscaler_sa}"
          "${local.oidc_issuer}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  role = aws_iam_role.cluster_autoscaler.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid    = "Discover"
        Effect = "Allow"
        Action = [
          "autoscaling:DescribeAutoScalingGroups",
          "autoscaling:DescribeAutoScalingInstances",
          "autoscaling:DescribeLaunchConfigurations",
          "autoscaling:DescribeScalingActivities",
          "autoscaling:DescribeTags",
          "ec2:DescribeImages",
          "ec2:DescribeInstanceTypes",
          "ec2:DescribeLaunchTemplateVersions",
          "ec2:GetInstanceTypesFromInstanceRequirements",
        ]
        Resource = ["*"]
      },
      {
        Sid      = "NodeGroupTemplates"
        Effect   = "Allow"
        Action   = ["eks:DescribeNodegroup"]
        Resource = [aws_eks_node_group.cpu.arn, aws_eks_node_group.gpu.arn]
      },
      {
        Sid    = "ScaleTheWorkerGroups"
        Effect = "Allow"
        Action = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
        Resource = [
          for asg in values(local.worker_asgs) :
          "arn:aws:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${asg}"
        ]
      },
    ]
  })
}

resource "helm_release" "cluster_autoscaler" {
  name       = "cluster-autoscaler"
  repository = "https://kubernetes.github.io/autoscaler"
  chart      = "cluster-autoscaler"
  version    = var.cluster_autoscaler_chart_version
  namespace  = "kube-system"
  atomic     = true

  values = [templatefile("${path.module}/values/cluster-autoscaler.yaml.tftpl", {
    region             = var.region
    cluster_name       = aws_eks_cluster.this.name
    kubernetes_version = var.kubernetes_version
    service_account    = local.cluster_autoscaler_sa
    role_arn           = aws_iam_role.cluster_autoscaler.arn
    node_selector      = aws_eks_node_group.system.labels
  })]

  depends_on = [aws_eks_node_group.system, aws_iam_role_policy.cluster_autoscaler]
}

# ------------------------------------------------------------------------------------------ volumes
# Persistent volumes on EKS need the EBS CSI driver (Kubernetes' in-tree EBS provisioner is gone) and a
# default StorageClass (EKS marks none as default from 1.30 on). prefect-server's bundled Postgres keeps its
# data on a PersistentVolumeClaim without a class: without both, the claim never binds and Prefect never
# starts (tests/terraform/test_helm.py checks every claim the releases render). The driver is the EKS add-on
# with an IAM role for its controller's service account (IRSA); its controller runs on the system group.
locals {
  ebs_csi_sa = "ebs-csi-controller-sa" # the add-on's controller service account, in kube-system
}

resource "aws_iam_role" "ebs_csi" {
  name = "${local.name}-ebs-csi"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.eks.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_issuer}:sub" = "system:serviceaccount:kube-system:${local.ebs_csi_sa}"
          "${local.oidc_issuer}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

resource "aws_eks_addon" "ebs_csi" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "aws-ebs-csi-driver"
  service_account_role_arn    = aws_iam_role.ebs_csi.arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  configuration_values = jsonencode({
    controller = { nodeSelector = aws_eks_node_group.system.labels } # never keeps a worker node up
  })

  depends_on = [aws_eks_node_group.system, aws_iam_role_policy_attachment.ebs_csi]
}

resource "kubernetes_storage_class_v1" "gp3" {
  metadata {
    name        = "gp3"
    annotations = { "storageclass.kubernetes.io/is-default-class" = "true" }
    labels      = { "app.kubernetes.io/part-of" = "steep", "steep.dev/stack" = var.stack_name, "steep.dev/target" = "aws" }
  }
  storage_provisioner    = "ebs.csi.aws.com"
  reclaim_policy         = "Delete" # the volume goes with its claim: nothing billable outlives the stack
  volume_binding_mode    = "WaitForFirstConsumer"
  allow_volume_expansion = true
  parameters = {
    type      = "gp3"
    encrypted = "true"
  }

  depends_on = [aws_eks_addon.ebs_csi]
}

# ------------------------------------------------------------------------------------------ storage
resource "aws_s3_bucket" "artifacts" {
  bucket_prefix = "${local.name}-artifacts-"
  force_destroy = true # `steep destroy` must leave nothing behind
  #checkov:skip=CKV_AWS_144:cross-region replication doubles the cost of a disposable training stack
  #checkov:skip=CKV_AWS_18:access logging would need a second bucket that outlives destroy; CloudTrail covers API access
  #checkov:skip=CKV2_AWS_62:no consumer of bucket events; MLflow reads artifacts through its server
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
  }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# ------------------------------------------------------------------------------------------ database
resource "random_password" "db" {
  length  = 32
  special = false
}

resource "aws_db_subnet_group" "this" {
  name       = "${local.name}-db"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_security_group" "db" {
  name        = "${local.name}-db"
  description = "Postgres reachable from the EKS nodes only"
  vpc_id      = aws_vpc.this.id

  ingress {
    description     = "Postgres from the cluster"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_eks_cluster.this.vpc_config[0].cluster_security_group_id]
  }
}

resource "aws_db_instance" "mlflow" {
  identifier_prefix                   = "${local.name}-mlflow-"
  engine                              = "postgres"
  engine_version                      = "16"
  instance_class                      = var.db_instance_class
  allocated_storage                   = 20
  db_name                             = "mlflow"
  username                            = "mlflow"
  password                            = random_password.db.result
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.this.arn
  iam_database_authentication_enabled = true
  backup_retention_period             = 7
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  monitoring_interval                 = 0
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.this.arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  skip_final_snapshot                 = true # destroy must not leave a billable snapshot
  #checkov:skip=CKV_AWS_293:deletion protection would make `steep destroy` fail; the stack is disposable by design
  #checkov:skip=CKV_AWS_157:Multi-AZ doubles the database cost; MLflow metadata of a training stack tolerates a restore
  #checkov:skip=CKV_AWS_118:enhanced monitoring needs an extra IAM role; CloudWatch logs are exported
  #checkov:skip=CKV2_AWS_30:query logging is enabled through enabled_cloudwatch_logs_exports
}

# ------------------------------------------------------------------------------------------ platform
resource "aws_iam_role" "artifacts" {
  name = "${local.name}-artifacts"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.eks.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
    }]
  })
}

resource "aws_iam_role_policy" "artifacts" {
  role = aws_iam_role.artifacts.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
        Resource = [aws_s3_bucket.artifacts.arn, "${aws_s3_bucket.artifacts.arn}/*"]
      },
      {
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = [aws_kms_key.this.arn]
      },
    ]
  })
}

data "tls_certificate" "eks" {
  url = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

resource "aws_iam_openid_connect_provider" "eks" {
  url             = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = [data.tls_certificate.eks.certificates[0].sha1_fingerprint]
}

module "platform" {
  source     = "../modules/platform"
  stack_name = var.stack_name

  artifact_uri = "s3://${aws_s3_bucket.artifacts.bucket}/mlflow"
  database = {
    host     = aws_db_instance.mlflow.address
    port     = aws_db_instance.mlflow.port
    name     = aws_db_instance.mlflow.db_name
    user     = aws_db_instance.mlflow.username
    password = random_password.db.result
  }
  service_account_annotations = { "eks.amazonaws.com/role-arn" = aws_iam_role.artifacts.arn }
  # Ray asks for at most as many workers as the node groups can hold: one per node (m6i.xlarge, g5.xlarge)
  cpu_workers          = { min = 0, max = var.cpu_nodes, cpu = "2", memory = "8Gi" }
  gpu_workers          = { min = 0, max = var.gpu_nodes, gpus = 1, cpu = "3", memory = "12Gi" }
  gpu_node_selector    = { "steep-pool" = "gpu" }
  cpu_node_selector    = { "steep-pool" = "cpu" }
  system_node_selector = { "steep-pool" = "system" }
  nvidia_device_plugin = true # the AL2023 NVIDIA AMI has the driver, not the device plugin
  labels               = { "steep.dev/target" = "aws" }
  # EC2's spot interruption notice comes 2 minutes ahead; the managed node group (capacity_type SPOT) drains
  # the node on it, or earlier on a rebalance recommendation: no node termination handler needed.
  reclaim_notice_s = 120

  # the volumes (prefect-server's Postgres claim) need the CSI driver and the default StorageClass; on
  # destroy the releases and their claims go first, while the driver still runs to delete the volumes
  depends_on = [aws_eks_node_group.system, kubernetes_storage_class_v1.gp3]
}
