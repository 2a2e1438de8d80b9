"""Azure components: network, AKS with GPU pools, Key Vault and workload identity."""
