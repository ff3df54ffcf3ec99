"""The protocol's stdlib-only modules the runner carries (records, rules), wherever it runs.

On the host they are ``jupyter_remote.protocol.records`` and ``.rules``; in a container the
agent mounts the protocol's directory beside the runner's (PROTOCOL_MOUNT), and they are
imported from there as top-level modules. Every runner module gets them from here.
"""

from __future__ import annotations

import os
import sys

try:
    from jupyter_remote.protocol import records, rules
except ImportError:  # in a container: the protocol's stdlib-only modules are mounted beside us
    sys.path.append(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "protocol")
    )
    import records
    import rules

__all__ = ["records", "rules"]
