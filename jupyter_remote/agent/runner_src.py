"""The runner's code as session containers mount it: a copy under the data directory.

A runner container bind-mounts the runner package (and the record format beside it) from
the node's filesystem. The agent's own package path is not always there: an agent running
as a container (a Swarm service, deploy/swarm/) sees its package inside its image, which
the node's engine cannot see (it would mount empty directories it creates on the host). The
data directory is mounted at the same path on the node and in the agent's container, so a
copy there works in both cases; a copy also keeps running sessions' code unchanged when the
package is upgraded under a live agent. Copies are named by a digest of their contents.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

SOURCES = "runner-src"


def _files(src: str) -> list[str]:
    out = []
    for root, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    return out


def digest(*srcs: str) -> str:
    h = hashlib.sha256()
    for src in srcs:
        for path in _files(src):
            h.update(os.path.relpath(path, src).encode() + b"\0")
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def stage(data_dir: str, runner_src: str, protocol_src: str) -> tuple[str, str]:
    """(runner dir, protocol dir) under DATA_DIR/runner-src/DIGEST, made once per digest
    (atomically: a copy is renamed into place whole); older copies are left for
    sessions that still mount them."""
    base = os.path.join(data_dir, SOURCES)
    final = os.path.join(base, digest(runner_src, protocol_src))
    if not os.path.isdir(final):
        os.makedirs(base, mode=0o755, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".staging-", dir=base)
        for name, src in (("runner", runner_src), ("protocol", protocol_src)):
            for path in _files(src):
                target = os.path.join(staging, name, os.path.relpath(path, src))
                os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                shutil.copyfile(path, target)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, final)
        except OSError:  # another agent start made it first
            shutil.rmtree(staging, ignore_errors=True)
    return os.path.join(final, "runner"), os.path.join(final, "protocol")
