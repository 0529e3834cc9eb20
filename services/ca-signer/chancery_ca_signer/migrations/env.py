from chancery_ca_signer.model import metadata
from chancery_shared.migrations import run_env

run_env(metadata)
