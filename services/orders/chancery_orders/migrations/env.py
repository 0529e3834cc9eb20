from chancery_orders.model import metadata
from chancery_shared.migrations import run_env

run_env(metadata)
