"""A local HTTPS emulator of the Salesforce REST API, with Salesforce's own per-org API limits.

Start it in-process with ``EmulatorServer`` (a context manager) or as ``crmsync emulator``; steer it
through ``EmulatorServer.control`` or, from another process, ``AdminClient``.
"""

from __future__ import annotations

from emulator.admin import AdminClient
from emulator.control import Control
from emulator.faults import FAULT_KINDS
from emulator.orgs import OrgInfo
from emulator.server import EmulatorServer

__all__ = ["FAULT_KINDS", "AdminClient", "Control", "EmulatorServer", "OrgInfo"]
