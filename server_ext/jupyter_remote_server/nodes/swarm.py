"""Following a Docker Swarm: its nodes that run our agent service are nodes of the pool.

The swarm manager's API (docker-py, on one thread of its own: never on the event loop) is
read every `swarm_poll_interval` seconds. A swarm node whose agent task runs joins the pool
(named by its hostname, reached at its address on the agent port, with its labels); Swarm's
word on it outranks our polls: Down (or disconnected) makes it lost at once, drain or pause
makes it drained (no new work; what runs there is left alone). A node removed from the swarm
leaves the pool. Health and resource polls go on as for any node; what a lost node did while
it was cut off is reconciled when it answers again, as for any node (reconcile.py).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from traitlets import Float, HasTraits, Int, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from jupyter_remote_server.nodes.registry import NodeRegistry

log = logging.getLogger("jupyter_remote_server")

SOURCE = "swarm"
DOWN = ("down", "disconnected")  # Swarm's node states that make a node lost at once
NO_NEW_WORK = ("drain", "pause")  # Swarm's availabilities that stop new work
API_TIMEOUT = 10.0  # seconds for one call to the manager's API


class SwarmTraits(HasTraits):
    """The server's Swarm settings (c.RemoteApp.swarm_*): where the swarm's manager is."""

    swarm_url = Unicode(
        "",
        help="Docker API URL of a swarm manager (unix:///var/run/docker.sock, "
        "tcp://manager:2376; TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, as for the "
        "docker CLI); its nodes that run the agent service join the pool. Empty: no swarm.",
    ).tag(config=True)
    swarm_agent_port = Int(
        9527, help="The port the swarm's agents listen on (jupyter-remote swarm deploy --port)."
    ).tag(config=True)
    swarm_token_file = Unicode(
        "",
        help="File holding the swarm agents' token: the value of the Swarm secret that "
        "jupyter-remote swarm deploy made from its --token-file.",
    ).tag(config=True)
    swarm_poll_interval = Float(
        1.0, help="Seconds between reads of the swarm's nodes and agent tasks."
    ).tag(config=True)
    swarm_service = Unicode(
        "jupyter-remote-agent", help="The agents' global service in the swarm."
    ).tag(config=True)

    @validate("swarm_agent_port")
    def _port(self, proposal):
        if not 1 <= proposal["value"] <= 65535:
            raise TraitError(f"swarm_agent_port must be 1-65535; got {proposal['value']}")
        return proposal["value"]

    @validate("swarm_poll_interval")
    def _interval(self, proposal):
        if not 0.05 <= proposal["value"] <= 3600:
            raise TraitError(
                f"swarm_poll_interval must be 0.05-3600 seconds; got {proposal['value']}"
            )
        return proposal["value"]


@dataclass
class SwarmNode:
    """One node of the swarm as its manager describes it."""

    swarm_id: str
    hostname: str
    addr: str
    state: str  # Swarm's: ready | down | disconnected | unknown
    availability: str  # active | pause | drain
    labels: dict[str, str] = field(default_factory=dict)
    agent: bool = False  # our agent's task runs there

    def url(self, port: int) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{port}"

    def verdict(self) -> tuple[str, str] | None:
        """Swarm's word on the node, which outranks our polls: (state, reason) or None."""
        if self.state in DOWN:
            return "lost", f"Swarm marks node {self.hostname!r} {self.state}"
        if self.availability in NO_NEW_WORK:
            return "drained", (
                f"availability {self.availability} in the swarm: no new work; "
                "what runs there is left alone"
            )
        return None


def node_addr(attrs: dict) -> str:
    """The node's address: Status.Addr, or its manager address where a manager says
    0.0.0.0 (Docker reports that for managers that listen on every address)."""
    addr = (attrs.get("Status") or {}).get("Addr") or ""
    if addr in ("", "0.0.0.0"):
        manager = (attrs.get("ManagerStatus") or {}).get("Addr") or ""
        addr = manager.rsplit(":", 1)[0].strip("[]") if manager else addr
    return addr


def read_nodes(nodes: list[dict], tasks: list[dict]) -> dict[str, SwarmNode]:
    """The swarm's nodes by hostname, from the API's node list and the agent service's
    tasks (docker-py's `nodes()` and `tasks()` answers)."""
    running = {
        t.get("NodeID")
        for t in tasks
        if (t.get("Status") or {}).get("State") == "running" and t.get("DesiredState") == "running"
    }
    out: dict[str, SwarmNode] = {}
    for attrs in nodes:
        spec = attrs.get("Spec") or {}
        desc = attrs.get("Description") or {}
        hostname = desc.get("Hostname") or attrs["ID"]
        engine = (desc.get("Engine") or {}).get("Labels") or {}
        out[hostname] = SwarmNode(
            swarm_id=attrs["ID"],
            hostname=hostname,
            addr=node_addr(attrs),
            state=(attrs.get("Status") or {}).get("State") or "unknown",
            availability=spec.get("Availability") or "active",
            labels={**engine, **(spec.get("Labels") or {})},  # the node's own win
            agent=attrs["ID"] in running,
        )
    return out


class SwarmWatch(LoggingConfigurable):
    """Keeps the pool's swarm nodes in step with the swarm (made by the RemoteApp)."""

    url = Unicode(help="The manager's Docker API URL.")
    agent_port = Int(9527, help="The agents' port.")
    token = Unicode(help="The agents' token.")
    poll_interval = Float(1.0, help="Seconds between reads of the swarm.")
    service = Unicode("jupyter-remote-agent", help="The agents' service.")

    def __init__(self, registry: NodeRegistry, **kwargs) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self.problem: str | None = None  # why the last read failed
        self.swarm: dict[str, SwarmNode] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="jupyter-remote-swarm")
        self._client = None  # docker-py's, made and used on that thread only
        self._task: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()  # clients of nodes that moved

    @classmethod
    def from_settings(cls, settings: SwarmTraits, registry: NodeRegistry, **kwargs) -> SwarmWatch:
        """The watch for the app's swarm_* settings; a clear ValueError for a bad token file."""
        try:
            with open(settings.swarm_token_file) as fh:
                token = fh.readline().strip()
        except OSError as exc:
            raise ValueError(
                f"c.RemoteApp.swarm_token_file: cannot read {settings.swarm_token_file!r} "
                f"({exc.strerror or exc}); it holds the swarm agents' token"
            ) from None
        if not token:
            raise ValueError(f"c.RemoteApp.swarm_token_file {settings.swarm_token_file!r} is empty")
        return cls(
            registry,
            url=settings.swarm_url,
            agent_port=settings.swarm_agent_port,
            token=token,
            poll_interval=settings.swarm_poll_interval,
            service=settings.swarm_service,
            **kwargs,
        )

    # -- life cycle --------------------------------------------------------------------
    async def start(self, first_wait: float = 5.0) -> None:
        """Read the swarm once (up to `first_wait` s: the pool has its nodes before the
        first cell), then keep following it in the background."""
        try:
            await asyncio.wait_for(self.step(), first_wait)
        except asyncio.TimeoutError:
            log.warning("swarm %s: no answer within %g s; still trying", self.url, first_wait)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - a bad round must not end the watch
                log.exception("swarm %s: a round failed", self.url)

    async def step(self) -> None:
        """One read of the swarm, applied to the pool."""
        loop = asyncio.get_running_loop()
        try:
            nodes, tasks = await loop.run_in_executor(self._thread, self._read)
        except Exception as exc:  # noqa: BLE001 - docker-py raises many kinds; all mean "no read"
            why = f"{type(exc).__name__}: {exc}"
            if why != self.problem:
                log.warning(
                    "swarm %s: cannot read the swarm (%s); the pool stays as it is", self.url, why
                )
            self.problem = why
            return
        if self.problem:
            log.info("swarm %s: read again", self.url)
        self.problem = None
        self.apply(read_nodes(nodes, tasks))

    def _read(self) -> tuple[list[dict], list[dict]]:
        """The manager's node list and the agent service's tasks (on the watch's thread)."""
        import docker
        from docker.errors import NotFound

        if self._client is None:  # TLS as the docker CLI: DOCKER_TLS_VERIFY, DOCKER_CERT_PATH
            tls = docker.utils.kwargs_from_env().get("tls", False)
            self._client = docker.APIClient(base_url=self.url, timeout=API_TIMEOUT, tls=tls)
        nodes = self._client.nodes()
        try:
            tasks = self._client.tasks(filters={"service": self.service})
        except NotFound:  # no such service (yet): no agent runs anywhere
            tasks = []
        return nodes, tasks

    # -- the pool ----------------------------------------------------------------------
    def apply(self, swarm: dict[str, SwarmNode]) -> None:
        """Bring the pool's swarm nodes in step with `swarm` (no I/O, no wait)."""
        registry = self.registry
        for name, snode in swarm.items():
            node = registry.nodes.get(name)
            if node is None:
                if not snode.agent or not snode.addr:
                    continue  # joins once its agent runs
                node = registry.add_known(snode.url(self.agent_port), self.token, SOURCE, name)
                log.info("swarm: node %s joined the pool at %s", name, node.url)
            elif node.source != SOURCE:
                if name not in self.swarm:
                    log.warning(
                        "swarm: node %s is in the pool already (source %s); left as it is",
                        name,
                        node.source,
                    )
                continue
            node.labels = snode.labels
            url = snode.url(self.agent_port)
            if node.url != url and snode.addr:  # its address changed: reach it there
                self._move(node, url)
            registry.set_verdict(node, snode.verdict())
        for name in [n for n, node in registry.nodes.items() if node.source == SOURCE]:
            if name not in swarm:
                node = registry.nodes[name]
                registry.set_verdict(node, ("lost", f"node {name!r} was removed from the swarm"))
                registry.remove(name)
                log.info("swarm: node %s left the swarm and the pool", name)
        self.swarm = swarm

    def _move(self, node, url: str) -> None:
        old, node.url = node.client, url
        node.client = self.registry.make_client(url, node.token)
        closing = asyncio.get_running_loop().create_task(old.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
