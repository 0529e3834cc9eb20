"""identity: accounts, business units, users and roles; the only signer of access tokens."""
