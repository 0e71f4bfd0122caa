# The local platform: MLflow, Prefect, a Ray head and `ray_worker_nodes` Ray worker nodes as daemons here.
# Each service is a null_resource whose create-time provisioner starts it (and waits until it is healthy)
# and whose destroy-time provisioner stops it. The helper cleans up after itself when a start fails, so
# a half-failed apply can always be destroyed.

locals {
  ray_extra = join(" ", concat(
    ["dashboard=${var.ports["ray_dashboard"]}"],
    [for k, v in var.ray_internal_ports : "${k}=${v}"],
  ))

  # with worker nodes the head only coordinates (as a cloud head does); alone, it offers this machine's CPUs
  head_cpus = var.ray_worker_nodes > 0 ? "0" : ""

  services = {
    mlflow  = { port = var.ports["mlflow"], extra = "", cpus = "" }
    prefect = { port = var.ports["prefect"], extra = "", cpus = "" }
    ray     = { port = var.ports["ray"], extra = local.ray_extra, cpus = local.head_cpus }
  }
}

resource "null_resource" "service" {
  for_each = local.services

  # Destroy-time provisioners may only read self, so everything they need is kept in the triggers.
  triggers = {
    python  = var.python
    home    = var.home
    host    = var.host
    port    = each.value.port
    extra   = each.value.extra
    timeout = var.start_timeout
    stack   = var.stack_name
    cpus    = each.value.cpus
  }

  provisioner "local-exec" {
    interpreter = concat(
      [self.triggers.python, "-m", "steep.stack.daemons", "--home", self.triggers.home, "--host", self.triggers.host,
      "--port", self.triggers.port, "--timeout", self.triggers.timeout],
      flatten([for kv in compact(split(" ", self.triggers.extra)) : ["--extra-port", kv]]),
      self.triggers.cpus == "" ? [] : ["--cpus", self.triggers.cpus],
      ["start"],
    )
    command = each.key
  }

  provisioner "local-exec" {
    when = destroy
    interpreter = [self.triggers.python, "-m", "steep.stack.daemons", "--home", self.triggers.home,
    "--host", self.triggers.host, "--port", self.triggers.port, "stop"]
    command = each.key
  }
}

# Ray worker nodes: real raylets joined to the head, each with its own CPUs and ports (Ray Train places
# workers on them as on a cloud cluster's nodes). A replaced head takes its worker nodes with it.
resource "null_resource" "ray_worker" {
  count = var.ray_worker_nodes

  triggers = {
    python  = var.python
    home    = var.home
    host    = var.host
    head    = null_resource.service["ray"].triggers.port
    name    = "ray-worker-${count.index + 1}"
    cpus    = var.ray_worker_cpus
    extra   = join(" ", [for k, v in var.ray_worker_ports[count.index] : "${k}=${v}"])
    timeout = var.start_timeout
    head_id = null_resource.service["ray"].id # a new head (a replaced one) gets new worker nodes
  }

  provisioner "local-exec" {
    interpreter = concat(
      [self.triggers.python, "-m", "steep.stack.daemons", "--home", self.triggers.home, "--host", self.triggers.host,
      "--port", self.triggers.head, "--timeout", self.triggers.timeout, "--cpus", self.triggers.cpus],
      flatten([for kv in compact(split(" ", self.triggers.extra)) : ["--extra-port", kv]]),
      ["start"],
    )
    command = self.triggers.name
  }

  provisioner "local-exec" {
    when = destroy
    interpreter = [self.triggers.python, "-m", "steep.stack.daemons", "--home", self.triggers.home,
    "--host", self.triggers.host, "--port", self.triggers.head, "stop"]
    command = self.triggers.name
  }
}
