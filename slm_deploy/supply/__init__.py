"""Supply chain: image references resolved to digests through the OCI distribution API, kept in a
lock file that every generator reads (`slm-deploy lock` writes it, `--check` guards it in CI)."""
