# The local platform: MLflow, Prefect and a Ray head as daemons on this machine.
# Each service is a null_resource whose create-time provisioner starts it (and waits until it is healthy)
# and whose destroy-time provisioner stops it. The helper cleans up after itself when a start fails, so
# a half-failed apply can always be destroyed.

locals {
  ray_extra = join(" ", concat(
    ["dashboard=${var.ports["ray_dashboard"]}"],
    [for k, v in var.ray_internal_ports : "${k}=${v}"],
  ))

  services = {
    mlflow  = { port = var.ports["mlflow"], extra = "" }
    prefect = { port = var.ports["prefect"], extra = "" }
    ray     = { port = var.ports["ray"], extra = local.ray_extra }
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
  }

  provisioner "local-exec" {
    interpreter = concat(
      [self.triggers.python, "-m", "steep.stack.daemons", "--home", self.triggers.home, "--host", self.triggers.host,
      "--port", self.triggers.port, "--timeout", self.triggers.timeout],
      flatten([for kv in compact(split(" ", self.triggers.extra)) : ["--extra-port", kv]]),
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
