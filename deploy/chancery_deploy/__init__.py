"""Chancery's distributed deployment: one topology, rendered as a local stack and compose.

    from chancery_deploy import Stack, Ports
    stack = Stack("/tmp/var", Ports.find_free())
    stack.up(apps=False)      # PostgreSQL, RabbitMQ, nginx only
    ...
    stack.down()
"""

from .local import ProcessStatus, Stack, missing_infrastructure, throwaway_servers
from .procs import StackError
from .topology import SERVICES, Ports, Secrets, Topology, compose_topology, local_topology

__all__ = ["SERVICES", "Ports", "ProcessStatus", "Secrets", "Stack", "StackError", "Topology",
           "compose_topology", "local_topology", "missing_infrastructure", "throwaway_servers"]
