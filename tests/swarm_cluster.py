"""A real Docker Swarm on this one machine: one `dockerd` per network namespace.

The recipe is the measured one in ../shared/notes/swarm.md:

- a "hub" namespace holds a bridge; each node is a namespace with a veth to the hub and an
  address on a private /24 (10.214.X.0/24, a free X) that exists only in these namespaces;
  no default route anywhere, so nothing leaves the machine;
- each node's daemon runs as `unshare --uts --mount` + `nsenter --net=/run/netns/NODE` (not
  `ip netns exec`, which remounts /sys and hides the cgroup v1 hierarchy) with its own
  data root, exec root, pid file, socket, containerd namespaces and cgroup parent,
  `--bridge=none --iptables=false --ip-masq=false`, a local address pool apart from the
  swarm's, and DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 (a task start never tries a pull);
- `swarm init --dispatcher-heartbeat 1s` (a node Down in ~2-3 s, not 11-16 s), workers join,
  the ingress network is removed (faster shutdown); images come from the main engine by
  `docker save` and are loaded on every node.

Two choices beyond the notes:

- The host reaches the nodes through one more veth, host <-> hub, with the address .254 of
  the same /24 and nothing else: the kernel adds only that /24's connected route, the
  default route is untouched. The Jupyter server (host namespace, as a user runs it) then
  reaches each agent at NODE_ADDRESS:PORT, the test reaches the server on 127.0.0.1, and the
  only addresses that see traffic are loopback and the namespaces made here.
- Each daemon also gets a mount namespace of its own in which the node's own directory is
  bound over /run: /var/run/docker.sock, /run/containerd and whatever a service mounts from
  /run are that node's, as on a host of its own. An agent deployed as a global service
  with the production mounts (/var/run/docker.sock) therefore reaches its own node's
  engine, never the machine's main one; the node's mounts (overlay roots, netns files)
  live and die with that namespace. The socket is addressed from the host by its real path,
  NODE_DIR/run/docker.sock. The data root is a tmpfs mounted in that namespace: images load
  in ~2-6 s instead of ~15 s, and the store vanishes with the namespace (an rm of the
  extracted layers took ~20 s).

Teardown follows the notes' order (services and task containers, each dockerd by its pid
file, its containerd, whatever is left in the node's namespaces, leftover mounts, the
namespaces, the cgroups) and never speaks to the main engine; it runs in `finally`, so a
failed test leaves nothing behind. Needs root, iproute2, util-linux and dockerd.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

PREFIX = "jrs"  # namespaces jrs-RUN-..., the host's veth jrsRUNh: easy to spot and remove
PORT_MANAGER = 2377
SECOND = 1_000_000_000  # docker-py's durations are nanoseconds
AGENT_REPO = "jupyter-remote/swarm-agent"
# A node's data root is a tmpfs in its own mount namespace: images load faster, and the
# whole store goes with the namespace instead of an rm of ~10^4 files per node.
DATA_TMPFS = "3g"


def need_swarm() -> None:
    """Root, `ip`, `unshare`, `nsenter`, `dockerd` and the main engine's images, or a skip
    that fails under CI=true (where scripts/setup.sh provides them all)."""
    missing = [] if os.geteuid() == 0 else ["root"]
    tools = ("ip", "unshare", "nsenter", "mount", "hostname", "dockerd")
    missing += [tool for tool in tools if not shutil.which(tool)]
    if missing:
        message = (
            f"a swarm on this machine needs {', '.join(missing)}; "
            "scripts/setup.sh installs iproute2 and docker.io"
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def run(*argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout)


def until(check, timeout: float, what: str, step: float = 0.2):
    """Poll `check` until it returns something true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - not ready yet; named if it never is
            last = exc
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last!r})")


def free_third() -> int:
    """A third octet of 10.214.X.0/24 that no address or route on this machine uses."""
    used = run("ip", "-o", "addr").stdout + run("ip", "route").stdout
    for third in random.sample(range(256), 256):
        if f"10.214.{third}." not in used:
            return third
    raise RuntimeError("no free /24 in 10.214.0.0/16")


def ns_inode(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


class SwarmNode:
    """One node: a namespace, its veth to the hub, and its own dockerd."""

    def __init__(self, cluster: SwarmCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"{PREFIX}-{cluster.run}-n{index}"  # netns, hostname, cgroup parent
        self.hub_end = f"v{index}"  # its veth's end inside the hub namespace
        self.address = f"10.214.{cluster.third}.{index}"
        self.dir = cluster.root / f"n{index}"
        self.socket = self.dir / "run" / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None
        self.mnt_ns: str | None = None
        self.net_ns: str | None = None
        # open handles on both namespaces: while held, their identities cannot be reused by
        # another namespace, so "a process in them" names only this node's processes
        self.ns_fds: list[int] = []
        self.client: docker.DockerClient | None = None
        self.node_id = ""  # the swarm's id for it, once it is in
        self.killed: list[str] = []  # what was still there after dockerd and containerd

    def create_link(self) -> None:
        hub = self.cluster.hub
        run("ip", "netns", "add", self.name)
        run("ip", "-n", hub, "link", "add", self.hub_end, "type", "veth",
            "peer", "name", "eth0", "netns", self.name)  # fmt: skip
        run("ip", "-n", hub, "link", "set", self.hub_end, "master", "br0", "up")
        run("ip", "-n", self.name, "addr", "add", f"{self.address}/24", "dev", "eth0")
        run("ip", "-n", self.name, "link", "set", "eth0", "up")
        run("ip", "-n", self.name, "link", "set", "lo", "up")

    def dockerd_argv(self) -> list[str]:
        d = self.dir
        return [
            "dockerd",
            f"--data-root={d / 'data'}",
            f"--exec-root={d / 'exec'}",
            f"--pidfile={d / 'dockerd.pid'}",
            f"--host=unix://{self.socket}",
            f"--containerd-namespace={self.name}",
            f"--containerd-plugins-namespace={self.name}-plugins",
            f"--cgroup-parent={self.name}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--default-address-pool=base=10.216.0.0/16,size=24",
            "--log-level=warn",
        ]

    def start_daemon(self) -> None:
        """dockerd in its own UTS and mount namespaces (its node's dir over /run) and the
        node's network namespace; the pid we keep is dockerd's own (every step execs)."""
        for sub in ("run", "data", "exec"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in self.cluster.run_dirs:
            (self.dir / "run" / sub).mkdir(parents=True, exist_ok=True)
        script = (
            f'mount --bind "{self.dir / "run"}" /run && '
            f'mount -t tmpfs -o size={DATA_TMPFS} tmpfs "{self.dir / "data"}" && '
            f'hostname "{self.name}" && exec "$@"'
        )
        argv = [
            "unshare", "--uts", "--mount", "--propagation", "private",
            "nsenter", f"--net=/run/netns/{self.name}", "--",
            "sh", "-c", script, "sh", *self.dockerd_argv(),
        ]  # fmt: skip
        env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
        env.pop("DOCKER_HOST", None)
        with open(self.dir / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_daemon(self, timeout: float = 30) -> None:
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd of {self.name} exited {self.proc.returncode}; "
                    f"see {self.dir / 'dockerd.log'}"
                )
            if not self.socket.exists():
                return False
            client = docker.DockerClient(base_url=self.url, timeout=60, version="1.41")
            client.ping()
            self.client = client
            return True

        until(up, timeout, f"dockerd of {self.name} answering")
        for kind in ("mnt", "net"):
            self.ns_fds.append(os.open(f"/proc/{self.proc.pid}/ns/{kind}", os.O_RDONLY))
        if self.proc.poll() is not None:
            raise RuntimeError(f"dockerd of {self.name} exited {self.proc.returncode}")
        self.mnt_ns = ns_inode(self.proc.pid, "mnt")
        self.net_ns = ns_inode(self.proc.pid, "net")

    def join(self, manager: SwarmNode) -> None:
        tokens = manager.client.swarm.attrs["JoinTokens"]
        self.client.swarm.join(
            remote_addrs=[f"{manager.address}:{PORT_MANAGER}"],
            join_token=tokens["Worker"],
            listen_addr=f"{self.address}:{PORT_MANAGER}",
            advertise_addr=self.address,
        )
        self.node_id = self.client.info()["Swarm"]["NodeID"]

    def load(self, tar: Path) -> None:
        with open(tar, "rb") as fh:
            self.client.api.load_image(fh)

    # -- a pulled cable: the hub's end of the node's veth down, then up again ----------
    def cut(self) -> None:
        run("ip", "-n", self.cluster.hub, "link", "set", self.hub_end, "down")

    def restore(self) -> None:
        run("ip", "-n", self.cluster.hub, "link", "set", self.hub_end, "up")

    # -- teardown ---------------------------------------------------------------------
    def pids_inside(self) -> list[int]:
        """Processes in this node's mount or network namespace (its daemons, shims, and
        containers on the host network); none of ours or of the main engine's."""
        marks = {m for m in (self.mnt_ns, self.net_ns) if m}
        if not marks or not self.ns_fds:
            return []  # not held (never made, or released): the identities mean nothing
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                pid = int(entry)
                if ns_inode(pid, "mnt") in marks or ns_inode(pid, "net") in marks:
                    found.append(pid)
        return found

    def stop_containers(self) -> None:
        if self.client is None:
            return
        try:
            for c in self.client.containers.list(all=True, ignore_removed=True):
                try:
                    c.remove(force=True)
                except docker.errors.APIError:
                    pass
        except (docker.errors.DockerException, OSError):
            pass  # a daemon that is gone or cut off: its processes are killed below

    def stop_daemon(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(8)  # 2-12 s measured; its state is thrown away anyway
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        containerd = self.dir / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(containerd.read_text().strip())
            if ns_inode(pid, "mnt") == self.mnt_ns:
                os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass
        deadline = time.monotonic() + 3
        while self.pids_inside() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.killed = [_cmdline(p) for p in self.pids_inside()]
        for pid in self.pids_inside():  # shims and their containers left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        until(lambda: not self.pids_inside(), 10, f"processes of {self.name} gone")

    def release(self) -> None:
        """Let go of the namespaces (the mount namespace, and its tmpfs, goes with it)."""
        for fd in self.ns_fds:
            os.close(fd)
        self.ns_fds = []

    def remove_link(self) -> None:
        run("ip", "netns", "del", self.name, check=False)


class SwarmCluster:
    """A swarm of `size` nodes (node 1 the manager); `add_node()` joins one more later.

    `with SwarmCluster(tmp_dir) as swarm:` forms it and always tears it down."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        images: tuple[str, ...] = (),
        run_dirs: tuple[str, ...] = (),
    ) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.run_dirs = run_dirs  # made in each node's /run before it starts (bind sources)
        self.root = Path(root)
        self.size = size
        self.images = images
        self.third = 0
        self.hub = f"{PREFIX}-{self.run}-hub"
        self.host_end = f"{PREFIX}{self.run}h"  # <= 15 characters
        self.host_address = ""
        self.nodes: list[SwarmNode] = []
        self.image_tar: Path | None = None
        self.timings: dict[str, float] = {}
        self.stray: list[str] = []  # processes of a node still there when it was let go

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    def __enter__(self) -> SwarmCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- forming ------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        self.third = free_third()
        self.host_address = f"10.214.{self.third}.254"
        run("ip", "netns", "add", self.hub)
        run("ip", "-n", self.hub, "link", "set", "lo", "up")
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")
        run("ip", "link", "add", self.host_end, "type", "veth", "peer", "name", "host",
            "netns", self.hub)  # fmt: skip
        run("ip", "-n", self.hub, "link", "set", "host", "master", "br0", "up")
        run("ip", "addr", "add", f"{self.host_address}/24", "dev", self.host_end)
        run("ip", "link", "set", self.host_end, "up")
        if self.images:
            self.image_tar = save_images(self.images, self.root / "images.tar")
        self.timings["images_saved_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        nodes = [self._new_node() for _ in range(self.size)]
        for node in nodes:
            node.wait_daemon()
        manager = nodes[0]
        manager.client.swarm.init(
            advertise_addr=manager.address,
            listen_addr=f"{manager.address}:{PORT_MANAGER}",
            default_addr_pool=["10.217.0.0/16"],
            subnet_size=24,
            dispatcher_heartbeat_period=SECOND,
        )
        manager.node_id = manager.client.info()["Swarm"]["NodeID"]
        try:
            manager.client.networks.get("ingress").remove()
        except docker.errors.NotFound:
            pass
        for node in nodes[1:]:
            node.join(manager)
        self.wait_ready(nodes)
        self.timings["swarm_up_s"] = time.monotonic() - t1
        t2 = time.monotonic()
        for node, exc in in_parallel(self._load, nodes):
            if exc is not None:
                raise RuntimeError(f"loading images on {node.name}: {exc}") from exc
        self.timings["images_loaded_s"] = time.monotonic() - t2

    def _new_node(self) -> SwarmNode:
        node = SwarmNode(self, len(self.nodes) + 1)
        self.nodes.append(node)
        node.create_link()
        node.start_daemon()
        return node

    def _load(self, node: SwarmNode) -> None:
        if self.image_tar is not None:
            node.load(self.image_tar)

    def wait_ready(self, nodes: list[SwarmNode], timeout: float = 30) -> None:
        wanted = {n.node_id for n in nodes}

        def ready():
            states = {n.id: n.attrs["Status"]["State"] for n in self.manager.client.nodes.list()}
            return all(states.get(i) == "ready" for i in wanted)

        until(ready, timeout, "swarm nodes ready")

    def add_node(self) -> SwarmNode:
        """One more worker joins (images loaded before it joins, as an operator would)."""
        node = self._new_node()
        node.wait_daemon()
        self._load(node)
        node.join(self.manager)
        self.wait_ready([node])
        return node

    # -- the manager's API ----------------------------------------------------------------
    def swarm_node(self, node: SwarmNode):
        return self.manager.client.nodes.get(node.node_id)

    def update_node(self, node: SwarmNode, **changes) -> None:
        """Set Labels / Availability / Role on a node through the manager's API."""
        swarm_node = self.swarm_node(node)
        spec = dict(swarm_node.attrs["Spec"])
        spec.update(changes)
        swarm_node.update(spec)

    def node_by_id(self, node_id: str) -> SwarmNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def node_by_hostname(self, hostname: str) -> SwarmNode:
        return next(n for n in self.nodes if n.name == hostname)

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Everything formed here goes, whatever state the nodes are in; never the main
        engine. Each step is bounded and a failing one does not stop the next."""
        t0 = time.monotonic()
        errors: list[str] = []
        if self.nodes and self.manager.client is not None:
            try:
                for service in self.manager.client.services.list():
                    service.remove()
            except (docker.errors.DockerException, OSError):
                pass
        self.timings["services_removed_s"] = time.monotonic() - t0
        for step in (SwarmNode.stop_containers, SwarmNode.stop_daemon):
            t = time.monotonic()
            for node, exc in in_parallel(step, self.nodes):
                if exc is not None:
                    errors.append(f"{node.name}: {step.__name__}: {exc}")
            self.timings[f"{step.__name__}_s"] = time.monotonic() - t
        for node in self.nodes:
            self.stray += [
                f"process {p} ({_cmdline(p)}) of {node.name}" for p in node.pids_inside()
            ]
            node.release()
        t = time.monotonic()
        self._unmount_leftovers()
        for node in self.nodes:
            node.remove_link()
        run("ip", "link", "del", self.host_end, check=False)
        run("ip", "netns", "del", self.hub, check=False)
        self._remove_cgroups(errors)
        self.timings["links_cgroups_s"] = time.monotonic() - t
        t = time.monotonic()
        for node in self.nodes:
            for sub in ("data", "exec", "run"):
                shutil.rmtree(node.dir / sub, ignore_errors=True)
        if self.image_tar is not None:
            self.image_tar.unlink(missing_ok=True)
        self.timings["files_removed_s"] = time.monotonic() - t
        self.timings["swarm_down_s"] = time.monotonic() - t0
        if errors:
            raise RuntimeError("swarm teardown: " + "; ".join(errors))

    def _unmount_leftovers(self) -> None:
        """The nodes' mounts live in their own namespaces; anything that still shows
        under our root in ours goes (lazily), deepest first."""
        root = str(self.root)
        with open("/proc/self/mountinfo") as fh:
            points = [line.split()[4] for line in fh]
        for point in sorted((p for p in points if p.startswith(root)), reverse=True):
            run("umount", "-l", point, check=False)

    def _remove_cgroups(self, errors: list[str]) -> None:
        names = {n.name for n in self.nodes}
        base = Path("/sys/fs/cgroup")
        dirs = []
        for controller in base.iterdir() if base.is_dir() else ():
            for name in names:
                top = controller / name
                if top.is_dir():
                    dirs += sorted(
                        (Path(d) for d, _, _ in os.walk(top)), key=lambda p: -len(p.parts)
                    )
        for d in dirs:
            try:
                until(lambda d=d: _rmdir(d), 5, f"cgroup {d} removed", step=0.1)
            except AssertionError as exc:
                errors.append(str(exc))

    def leftovers(self) -> list[str]:
        """What of this swarm is still on the machine (empty after `close`)."""
        found = list(self.stray)
        netns = run("ip", "netns", "list").stdout
        found += [f"netns {n}" for n in netns.split() if n.startswith(f"{PREFIX}-{self.run}")]
        if self.host_end in run("ip", "-o", "link").stdout:
            found.append(f"link {self.host_end}")
        with open("/proc/self/mountinfo") as fh:
            found += [f"mount {ln.split()[4]}" for ln in fh if str(self.root) in ln.split()[4]]
        for node in self.nodes:
            found += [
                f"cgroup {c}" for c in Path("/sys/fs/cgroup").glob(f"*/{node.name}") if c.exists()
            ]
        return found


def in_parallel(step, nodes: list[SwarmNode]) -> list[tuple[SwarmNode, Exception | None]]:
    """`step(node)` for every node at once; (node, its exception or None) each."""

    def attempt(node: SwarmNode) -> Exception | None:
        try:
            step(node)
        except Exception as exc:  # noqa: BLE001 - the caller goes on and reports it
            return exc
        return None

    if not nodes:
        return []
    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(zip(nodes, pool.map(attempt, nodes), strict=True))


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    return True


def save_images(names: tuple[str, ...], tar: Path) -> Path:
    """The named images from the main engine, in one `docker save` archive (a read)."""
    main = docker.from_env(timeout=300)
    try:
        api = main.api
        res = api._get(api._url("/images/get"), params={"names": list(names)}, stream=True)
        api._raise_for_status(res)
        with open(tar, "wb") as fh:
            for chunk in res.iter_content(1 << 20):
                fh.write(chunk)
    finally:
        main.close()
    return tar


# -- the agent image ------------------------------------------------------------------------
# The test's settings ride in the image's environment (JUPYTER_REMOTE_AGENT_<OPTION>), as the
# deployed service sets only its own: calm limits on a loaded 2-core machine, fast samples,
# busybox by default and no warm pool (no container the tests did not ask for).
AGENT_DOCKERFILE = """\
FROM jupyter-remote/python:local
COPY site/ /opt/jupyter-remote-agent/site/
COPY jupyter-remote /usr/local/bin/jupyter-remote
ENV PYTHONPATH=/opt/jupyter-remote-agent/site PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    JUPYTER_REMOTE_AGENT_CPU_MAX=100 JUPYTER_REMOTE_AGENT_MEMORY_MAX=100 \
    JUPYTER_REMOTE_AGENT_SAMPLE_INTERVAL=0.5 \
    JUPYTER_REMOTE_AGENT_DEFAULT_IMAGE=jupyter-remote/busybox:local \
    JUPYTER_REMOTE_AGENT_WARM_POOL_SIZE=0
ENTRYPOINT ["python3", "-m", "jupyter_remote"]
CMD ["agent", "--help"]
"""
AGENT_SCRIPT = '#!/bin/sh\nexec python3 -m jupyter_remote "$@"\n'


def agent_distributions() -> list:
    """The installed distributions `jupyter-remote[agent]` needs, found recursively from
    this venv's metadata (no index, no download)."""
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo = [(Requirement(r), "agent") for r in metadata.requires("jupyter-remote") or []]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({**default_environment(), "extra": extra}):
            continue
        key = req.name.lower().replace("_", "-")
        if key == "jupyter-remote":
            for r in metadata.requires("jupyter-remote") or []:
                for wanted in req.extras:
                    todo.append((Requirement(r), wanted))
            continue
        if key in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[key] = dist
        for r in dist.requires or []:
            for wanted in ("", *req.extras):
                todo.append((Requirement(r), wanted))
    return sorted(seen.values(), key=lambda d: d.metadata["Name"].lower())


def agent_context(where: Path, package: Path) -> str:
    """A build context: the agent's dependencies' installed files and the package source
    under site/; returns the content hash that names the image."""
    site = where / "site"
    site.mkdir(parents=True)
    for dist in agent_distributions():
        for rel in dist.files or ():
            src = Path(dist.locate_file(rel)).resolve()
            if "__pycache__" in rel.parts or ".." in rel.parts or not src.is_file():
                continue
            dst = site / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    shutil.copytree(
        package, site / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (where / "Dockerfile").write_text(AGENT_DOCKERFILE)
    (where / "jupyter-remote").write_text(AGENT_SCRIPT)
    (where / "jupyter-remote").chmod(0o755)
    digest = hashlib.sha256()
    for path in sorted(p for p in where.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(where)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def agent_image(work: Path) -> str:
    """`jupyter-remote/swarm-agent:HASH` on the main engine, built offline (network none)
    FROM jupyter-remote/python:local when the package or its dependencies changed; tags of
    it older than an hour go."""
    import jupyter_remote

    package = Path(jupyter_remote.__file__).parent
    context = work / "agent-image"
    shutil.rmtree(context, ignore_errors=True)
    tag = f"{AGENT_REPO}:{agent_context(context, package)}"
    stale_before = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3600))
    main = docker.from_env(timeout=300)
    try:
        try:
            main.images.get(tag)
        except docker.errors.ImageNotFound:
            main.images.build(path=str(context), tag=tag, network_mode="none", rm=True)
            for image in main.images.list(name=AGENT_REPO):
                if image.attrs["Created"] > stale_before:
                    continue  # maybe a concurrent run's, from a tree being edited
                for old in image.tags:
                    if old != tag:
                        try:
                            main.images.remove(old)
                        except docker.errors.APIError:
                            pass
    finally:
        main.close()
        shutil.rmtree(context, ignore_errors=True)
    return tag


def describe(cluster: SwarmCluster) -> str:
    """The swarm as its manager sees it (for failure messages)."""
    try:
        return json.dumps(
            [
                {
                    "hostname": n.attrs["Description"]["Hostname"],
                    "state": n.attrs["Status"]["State"],
                    "availability": n.attrs["Spec"]["Availability"],
                    "labels": n.attrs["Spec"].get("Labels", {}),
                }
                for n in cluster.manager.client.nodes.list()
            ]
        )
    except Exception as exc:  # noqa: BLE001 - only a message
        return f"(manager unreachable: {exc})"
