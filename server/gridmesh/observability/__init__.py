"""Seeing inside the mesh: metrics, the Prometheus server `gridmesh up` runs, alert rules."""
