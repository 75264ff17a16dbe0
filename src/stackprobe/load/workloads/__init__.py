"""One module per kind: its load workloads (see stackprobe.load.workload)."""
