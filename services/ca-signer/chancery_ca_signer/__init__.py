"""ca-signer: the only holder of CA private keys; signs what orders approved."""
