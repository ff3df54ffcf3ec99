"""IPython magics: %%remote and the %remote_* line magics.

Load with ``%load_ext jupyter_remote``; every magic has ``?`` help with examples.
RemoteMagics (cell.py) holds the client, the defaults and this kernel's session; the
other magics reach them through it. A cell runs as an `Execution` (kernel/execution.py):
the magics only parse and render.
"""

from __future__ import annotations

from jupyter_remote.kernel.execution import EventFold, Execution, RemoteResult
from jupyter_remote.kernel.magics.cell import RemoteCommandFailed, RemoteMagics
from jupyter_remote.kernel.magics.jobs import JobMagics
from jupyter_remote.kernel.magics.nodes import EngineStateMagics, NodeMagics
from jupyter_remote.kernel.magics.output import OutputMagics
from jupyter_remote.kernel.magics.sessions import SessionMagics
from jupyter_remote.kernel.magics.transfers import TransferMagics

MAGICS = (
    RemoteMagics,
    SessionMagics,
    NodeMagics,
    JobMagics,
    TransferMagics,
    EngineStateMagics,
    OutputMagics,
)


def load_ipython_extension(ipython) -> None:
    for magics in MAGICS:
        ipython.register_magics(magics)


__all__ = [
    "EngineStateMagics",
    "EventFold",
    "Execution",
    "JobMagics",
    "NodeMagics",
    "OutputMagics",
    "RemoteCommandFailed",
    "RemoteMagics",
    "RemoteResult",
    "SessionMagics",
    "TransferMagics",
    "load_ipython_extension",
]
