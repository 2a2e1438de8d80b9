"""Monitoring as code: scrape configuration, alert and recording rules, dashboards.

Built once here and consumed by both targets (edge bundles and the Pulumi stacks)."""
