"""What llmd-ray exports to Prometheus (the catalog), the Grafana dashboards that show it, and the
PodMonitor that has a Prometheus Operator scrape it. The catalog is the one list: the README's metrics
table, the Prometheus integration test and the dashboards are checked against it."""
