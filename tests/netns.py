"""Hosts of their own for tests: a network namespace per agent, linked to ours by a veth pair.

Each link is a /30 from 10.213.0.0/16: .1 on our end (the root namespace, where the Jupyter
server runs), .2 inside the namespace, and no other route there, so nothing leaves for
anywhere else. `cut()` sets the host's end down, as a pulled cable would; `restore()` sets
it up again. Needs root and iproute2 (scripts/setup.sh installs it).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time

import pytest

from processes import AgentProcess

PREFIX = "jrt"  # namespaces jrt-RUN-N, our veth ends jrtRUNhN: easy to spot and remove


def need_netns() -> None:
    """Root and `ip`, or a skip that fails under CI=true (where they are always there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    if shutil.which("ip") is None:
        missing.append("iproute2 (ip)")
    if missing:
        message = (
            f"network namespaces need {' and '.join(missing)}; scripts/setup.sh installs iproute2"
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def free_subnet() -> int:
    """A third octet of 10.213.X.0/24 that no address on this machine uses yet."""
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    for third in random.sample(range(256), 256):
        if f"10.213.{third}." not in used:
            return third
    raise RuntimeError("no free /24 in 10.213.0.0/16")


class Link:
    """One namespace and the veth pair that joins it to ours."""

    def __init__(self, run: str, index: int, third: int) -> None:
        self.ns = f"{PREFIX}-{run}-{index}"
        self.outer = f"{PREFIX}{run}h{index}"  # in our namespace (<= 15 characters)
        self.inner = "eth0"
        base = 4 * index
        self.our_address = f"10.213.{third}.{base + 1}"
        self.address = f"10.213.{third}.{base + 2}"

    def create(self) -> Link:
        ip("netns", "add", self.ns)
        ip("link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns", self.ns)
        ip("addr", "add", f"{self.our_address}/30", "dev", self.outer)
        ip("link", "set", self.outer, "up")
        ip("-n", self.ns, "addr", "add", f"{self.address}/30", "dev", self.inner)
        ip("-n", self.ns, "link", "set", self.inner, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")
        return self

    def cut(self) -> None:
        ip("-n", self.ns, "link", "set", self.inner, "down")

    def restore(self) -> None:
        ip("-n", self.ns, "link", "set", self.inner, "up")

    def delete(self) -> None:
        """Remove both (the pair goes with its namespace); quiet when already gone."""
        for argv in (["netns", "del", self.ns], ["link", "del", self.outer]):
            subprocess.run(["ip", *argv], capture_output=True, timeout=30)


class NetnsAgent(AgentProcess):
    """A real agent inside a namespace: the local Docker engine through its unix socket."""

    def __init__(self, data_dir: str, link: Link, port: int = 9527) -> None:
        super().__init__(data_dir)
        self.link = link
        self.host, self.port = link.address, port
        self.url = f"http://{self.host}:{self.port}"
        self.client = type(self.client)(self.url, self.token)

    def argv(self) -> list[str]:
        return ["ip", "netns", "exec", self.link.ns, *super().argv()]

    def launch(self) -> None:
        log = open(os.path.join(self.data_dir, "test-agent.log"), "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent in {self.link.ns} exited with {self.proc.returncode}")
            try:
                self.client.info()
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        raise RuntimeError(f"agent in {self.link.ns} did not answer in time")
