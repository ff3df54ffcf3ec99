"""The node's GPUs: which there are (NVML or a configured list), what NVML reads of each,
and which holder (a session, a fresh execution, a job task) holds which device.

No library or no driver means no GPUs, never an error. Allocations live in one JSON file
under the data dir, replaced atomically on every change, so an agent killed and started
again neither forgets what it gave nor gives it twice. Run `python -m
jupyter_remote.agent.gpus` to print what NVML reads on this host.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from jupyter_remote.agent.state import read_json, write_json
from jupyter_remote.protocol.errors import BadRequest, Conflict

log = logging.getLogger("jupyter_remote.agent")

GPU_MODES = ("device_requests", "env")
ENDING_WAIT = 10.0  # seconds a take waits for ending holders' containers to go


@dataclass(frozen=True)
class Gpu:
    """One device of the inventory; uuid and model are None when known by index only."""

    index: int
    uuid: str | None = None
    model: str | None = None
    memory_total: int | None = None


# -- NVML ------------------------------------------------------------------------------------
def _nvml():
    """The initialised pynvml module, or None (no library, no driver): logged once."""
    try:
        import pynvml
    except ImportError:
        log.info("GPUs: nvidia-ml-py is not installed; this node reports no GPUs from NVML")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("GPUs: NVML unavailable (%s); this node reports no GPUs from NVML", exc)
        return None
    return pynvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlReader:
    """Reads the devices NVML sees; every read gives None for what it cannot read."""

    def __init__(self, nvml=None) -> None:
        self.nvml = nvml if nvml is not None else _nvml()

    @property
    def available(self) -> bool:
        return self.nvml is not None

    def devices(self) -> list[Gpu]:
        if self.nvml is None:
            return []
        nv = self.nvml
        found = []
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as exc:
            log.warning("GPUs: NVML could not count devices: %s", exc)
            return []
        for index in range(count):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                found.append(
                    Gpu(
                        index,
                        _text(nv.nvmlDeviceGetUUID(handle)),
                        _text(nv.nvmlDeviceGetName(handle)),
                        int(nv.nvmlDeviceGetMemoryInfo(handle).total),
                    )
                )
            except nv.NVMLError as exc:
                log.warning("GPUs: NVML could not read device %d: %s", index, exc)
                found.append(Gpu(index))
        return found

    def metrics(self, index: int) -> dict:
        """Memory used/total (bytes) and utilisation (percent) of one device, or Nones."""
        out = {"memory_used": None, "memory_total": None, "utilization": None}
        if self.nvml is None:
            return out
        nv = self.nvml
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
        except nv.NVMLError:
            return out
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            out["memory_used"], out["memory_total"] = int(mem.used), int(mem.total)
        except nv.NVMLError:
            pass
        try:
            out["utilization"] = float(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
        except nv.NVMLError:
            pass
        return out


def parse_visible(text: str) -> tuple[int, ...] | None:
    """--gpus-visible: "" (NVML decides), "none", or distinct indices "0,1,3"; ValueError."""
    text = text.strip()
    if not text:
        return None
    if text.lower() == "none":
        return ()
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"must be device indices like 0,1,3 or none; got {text!r}") from None
    if any(not 0 <= i <= 1023 for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"must be distinct device indices 0 to 1023; got {text!r}")
    return tuple(sorted(indices))


def inventory(reader: NvmlReader, visible: tuple[int, ...] | None) -> tuple[list[Gpu], str]:
    """The devices this node gives out and where that list came from (nvml, configured,
    none). A configured list keeps the others back; without NVML it names indices only."""
    seen = {gpu.index: gpu for gpu in reader.devices()}
    if visible is None:
        return sorted(seen.values(), key=lambda g: g.index), "nvml" if seen else "none"
    if seen:
        missing = [i for i in visible if i not in seen]
        if missing:
            log.warning("GPUs: --gpus-visible names %s, which NVML does not see", missing)
    return [seen.get(i, Gpu(i)) for i in visible], "configured"


# -- the allocator -----------------------------------------------------------------------------
def want_text(want: int | tuple[int, ...]) -> str:
    return (
        f"{want} GPU{'s' if want != 1 else ''}"
        if isinstance(want, int)
        else ("GPU " + ",".join(map(str, want)))
    )


class GpuPool:
    """Which holder holds which devices; one lock makes each take all-or-nothing.

    Holders are strings: "session:ID", "execution:ID", "job:ID/TASK". Without sharing a
    device has at most one holder; with it, a count goes to the least-held devices.
    """

    def __init__(
        self,
        gpus: list[Gpu] | None = None,
        *,
        path: str | None = None,
        sharing: bool = False,
        source: str = "none",
        node_id: str = "",
    ) -> None:
        self.gpus = {g.index: g for g in gpus or []}
        self.path = path
        self.sharing = sharing
        self.source = source
        self.node_id = node_id
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a holder released its devices
        self.holders: dict[str, tuple[int, ...]] = {}
        self.ends: set[str] = set()  # holders whose containers are being removed
        if path:
            saved = read_json(path) or {}
            for holder, devices in (saved.get("holders") or {}).items():
                if isinstance(devices, list) and all(isinstance(d, int) for d in devices):
                    self.holders[holder] = tuple(devices)

    def __len__(self) -> int:
        return len(self.gpus)

    def _save(self) -> None:
        if self.path:
            write_json(self.path, {"holders": {h: list(d) for h, d in self.holders.items()}})

    def held_by(self, leaving: set[str] | frozenset = frozenset()) -> dict[int, list[str]]:
        """Each device's holders (devices no holder has are absent), `leaving` left out."""
        out: dict[int, list[str]] = {}
        for holder, devices in sorted(self.holders.items()):
            if holder in leaving:
                continue
            for d in devices:
                out.setdefault(d, []).append(holder)
        return out

    def free(self) -> list[int]:
        held = self.held_by()
        return [i for i in sorted(self.gpus) if i not in held]

    def held(self, holder: str) -> tuple[int, ...]:
        return self.holders.get(holder, ())

    def check(self, want: int | tuple[int, ...] | None) -> None:
        """400 for a request this node could never meet, whatever is free."""
        if want is None:
            return
        have = sorted(self.gpus)
        if not have:
            raise BadRequest(
                f"{want_text(want)} asked for, but node {self.node_id!r} has no GPUs",
                reason="bad_gpus",
                gpus_total=0,
            )
        if isinstance(want, int):
            if want > len(have):
                raise BadRequest(
                    f"{want_text(want)} asked for, but node {self.node_id!r} has "
                    f"{len(have)} in all",
                    reason="bad_gpus",
                    gpus_total=len(have),
                )
            return
        unknown = [i for i in want if i not in self.gpus]
        if unknown:
            raise BadRequest(
                f"GPU {','.join(map(str, unknown))} is not one node {self.node_id!r} gives "
                f"out (it has {','.join(map(str, have))})",
                reason="bad_gpus",
                gpus=have,
            )

    def take(self, holder: str, want: int | tuple[int, ...]) -> tuple[int, ...]:
        """Give `holder` the devices it asks for, all or none; 409 `gpus_unavailable` saying
        how many this node has, how many are free and who holds them. When holders that
        are ending (their container being removed) would free enough, wait for them (at
        most ENDING_WAIT): back-to-back GPU cells do not race a removal."""
        self.check(want)
        deadline = time.monotonic() + ENDING_WAIT
        with self._changed:
            while True:
                if holder in self.holders:
                    return self.holders[holder]
                held = self.held_by()
                devices = self._pick(want, held)
                if devices is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self._pick(want, self.held_by(self.ends)) is None:
                    raise self._unavailable(want, held)
                self._changed.wait(left)
            self.holders[holder] = devices
            self._save()
        log.info("GPUs %s given to %s", ",".join(map(str, devices)), holder)
        return devices

    def _pick(self, want: int | tuple[int, ...], held: dict[int, list[str]]):
        """The devices a new holder gets with these holders, or None."""
        if isinstance(want, int):
            if self.sharing:
                order = sorted(self.gpus, key=lambda i: (len(held.get(i, ())), i))
                return tuple(sorted(order[:want]))
            free = [i for i in sorted(self.gpus) if i not in held]
            return tuple(free[:want]) if len(free) >= want else None
        busy = [i for i in want if i in held]
        return tuple(sorted(want)) if self.sharing or not busy else None

    def ending(self, holder: str) -> None:
        """The holder's work has ended and its container is being removed: a take that
        needs its devices waits for its release rather than refusing."""
        with self._lock:
            if holder in self.holders:
                self.ends.add(holder)

    def _unavailable(self, want, held: dict[int, list[str]]) -> Conflict:
        free = [i for i in sorted(self.gpus) if i not in held]
        holders = "; ".join(f"{i}: {', '.join(held[i])}" for i in sorted(held) if i in self.gpus)
        return Conflict(
            f"{want_text(want)} asked for, but node {self.node_id!r} has {len(self.gpus)} "
            f"GPUs and {len(free)} free ({holders or 'none held'})",
            reason="gpus_unavailable",
            gpus_total=len(self.gpus),
            gpus_free=len(free),
            held_by={str(i): h for i, h in sorted(held.items())},
        )

    def release(self, holder: str) -> None:
        with self._lock:
            self.ends.discard(holder)
            devices = self.holders.pop(holder, None)
            if devices is None:
                return
            self._save()
            self._changed.notify_all()
        log.info("GPUs %s freed by %s", ",".join(map(str, devices)), holder)

    def keep_only(self, alive: set[str]) -> list[str]:
        """After a restart: free every holder that is not alive any more; returns those."""
        with self._lock:
            gone = [h for h in self.holders if h not in alive]
            for holder in gone:
                del self.holders[holder]
            if gone:
                self._save()
        for holder in gone:
            log.info("GPUs of %s freed: it ended while the agent was down", holder)
        return gone

    def report(self, metrics: dict[int, dict] | None = None) -> dict:
        """What /v1/resources says: each device, what NVML last read of it (`metrics`, by
        index: the resource monitor's), who holds it now."""
        held = self.held_by()
        devices = []
        for index in sorted(self.gpus):
            gpu = self.gpus[index]
            read = (metrics or {}).get(index) or {}
            devices.append(
                {
                    "index": index,
                    "uuid": gpu.uuid,
                    "model": gpu.model,
                    "memory_used": read.get("memory_used"),
                    "memory_total": read.get("memory_total") or gpu.memory_total,
                    "utilization": read.get("utilization"),
                    "held_by": held.get(index, []),
                }
            )
        return {
            "count": len(self.gpus),
            "free": sum(1 for i in self.gpus if i not in held),
            "sharing": self.sharing,
            "source": self.source,
            "devices": devices,
        }


def main() -> None:
    """Print what NVML reads here (for verifying the NVML path on a GPU host)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    reader = NvmlReader()
    gpus, source = inventory(reader, None)
    pool = GpuPool(gpus, source=source, node_id=os.uname().nodename)
    if reader.nvml is not None:
        try:
            version = _text(reader.nvml.nvmlSystemGetDriverVersion())
        except reader.nvml.NVMLError:
            version = None
        print(json.dumps({"driver_version": version}))
    read = {g.index: reader.metrics(g.index) for g in gpus if g.uuid}
    print(json.dumps(pool.report(read), indent=2))


if __name__ == "__main__":
    main()
