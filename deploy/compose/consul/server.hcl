# Consul agent of the reference stack: a single server that elects itself.
# Only keys Consul 1.8.7 knows (the pinned image, and `consul validate` in the tests).
datacenter       = "dc1"
server           = true
bootstrap_expect = 1
ui               = true
client_addr      = "0.0.0.0"
log_level        = "INFO"
data_dir         = "/consul/data"   # the image passes the same -data-dir

ports {
  http = 8500
  dns  = 8600
}

telemetry {
  # /v1/agent/metrics?format=prometheus for the Prometheus scrape job
  prometheus_retention_time = "60s"
  disable_hostname          = true
}

performance {
  raft_multiplier = 1
}
