"""deployer stage."""
