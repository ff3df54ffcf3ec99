"""Jobs at the edge: task limits that no node of the pool can give are a 400 at submit,
as an execution's are (the agent's bad_cpus / bad_memory), not a job that fails at once.

From what each node last reported in /v1/resources (cpu count, memory total); a node that
has not reported yet may fit, so nothing is refused on its account.
"""

from __future__ import annotations

from jupyter_remote.protocol.bodies import memory_bytes
from jupyter_remote.protocol.errors import BadRequest


def _gib(size: float) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def _host(node) -> tuple[float | None, int | None]:
    res = getattr(node, "resources", None) or {}
    cpu, mem = res.get("cpu") or {}, res.get("memory") or {}
    count, total = cpu.get("count"), mem.get("total")
    return (
        float(count) if isinstance(count, (int, float)) and count > 0 else None,
        int(total) if isinstance(total, int) and total > 0 else None,
    )


def refuse_unfit(nodes: list, spec: dict, where: str) -> None:
    """400 when every node with a report is too small for `spec`'s cpus or memory."""
    hosts = [_host(n) for n in nodes]
    if not hosts or any(c is None or m is None for c, m in hosts):
        return
    cpus = spec.get("cpus")
    most_cpus = max(c for c, _ in hosts)
    if cpus is not None and float(cpus) > most_cpus:
        raise BadRequest(
            f"{where}: cpus {float(cpus):g} is more than any node's CPUs (the most is "
            f"{most_cpus:g}); ask for at most {most_cpus:g}",
            reason="bad_cpus",
            host_cpus=most_cpus,
        )
    memory = spec.get("memory")
    most_memory = max(m for _, m in hosts)
    if memory is not None and memory_bytes(memory) > most_memory:
        raise BadRequest(
            f"{where}: memory {_gib(memory_bytes(memory))} is more than any node's memory "
            f"in total (the most is {_gib(most_memory)}); ask for less",
            reason="bad_memory",
            host_memory=most_memory,
        )
