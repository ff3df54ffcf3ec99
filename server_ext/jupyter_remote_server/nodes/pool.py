"""Choosing a node for each execution or task, from the nodes that may take work."""

from __future__ import annotations

from jupyter_remote.protocol.errors import BadRequest, Conflict, Unavailable
from jupyter_remote_server.nodes import gpu_fit
from jupyter_remote_server.nodes.labels import Labels, lacks, shown
from jupyter_remote_server.nodes.registry import Node, NodeRegistry

LISTED = 20  # nodes named in a refusal; more are counted


class NodeChooser:
    """The default choice: the least loaded node, a busy one counting as more loaded.

    A busy node (CPU/memory pressure) counts as running `busy_penalty` more executions than
    it does, so new work goes to healthy nodes first; but a burst does not pile everything
    on the one node that happened to look calm at its last sample while busy ones sit idle.
    Ties go to the node with more free memory. Swap it with `c.RemoteApp.node_chooser_class`
    (a subclass overriding `choose`; candidates are every usable node with the image and
    the labels the work asks for: it never sees another).
    """

    busy_penalty = 8

    def choose(self, candidates: list[Node], image: str | None) -> Node:
        return min(candidates, key=self.weight)

    def weight(self, node: Node) -> tuple[int, float]:
        running, free = node.load()
        return running + (self.busy_penalty if node.state == "busy" else 0), free


Gpus = int | list[int]  # a body's `gpus`: how many, or which devices


class ExecutorPool:
    """Gives out nodes for work: the one asked for, else the chooser's pick."""

    def __init__(self, registry: NodeRegistry, chooser: NodeChooser) -> None:
        self.registry = registry
        self.chooser = chooser

    def pick(
        self,
        node_id: str | None = None,
        image: str | None = None,
        among: list[str] | None = None,
        on: Labels | None = None,
        gpus: Gpus | None = None,
    ) -> Node:
        """A node that may take work now (with the labels `on` asks for: never another;
        with `gpus` free as it last reported); 404 for an unknown node, 409 for a named node
        without the labels, 503 when none can take it now, 400 when no node has the labels
        at all. A named node's GPUs are left to it: its 409 names their holders exactly."""
        if node_id:
            node = self.registry.get(node_id)
            if not node.has_labels(on):
                raise Conflict(lacks(node, on), reason="labels_not_matching")
            node = self.registry.usable(node_id)
            if not node.has_image(image):
                raise Unavailable(
                    f"node {node_id!r} does not have image {image!r} (nodes never pull images)",
                    reason="image_not_on_node",
                )
            return node
        return self.chooser.choose(self.candidates(image, among, on, gpus), image)

    def candidates(
        self,
        image: str | None = None,
        among: list[str] | None = None,
        on: Labels | None = None,
        gpus: Gpus | None = None,
    ) -> list[Node]:
        """Usable nodes with the image and the labels (within `among`); 503 saying why when
        there are none now, 400 when no node has the labels."""
        nodes = [n for n in self.registry.nodes.values() if among is None or n.node_id in among]
        if on:
            nodes = self.matching(on, among)
        usable = [n for n in nodes if n.usable]
        with_image = [n for n in usable if n.has_image(image)]
        if not with_image:
            if not nodes:
                why = "no nodes are registered; add one with %remote_nodes --add URL"
            elif not usable:
                states = ", ".join(f"{n.node_id}: {n.state}" for n in nodes)
                having = f" with {shown(on)}" if on else ""
                why = f"no node{having} is usable ({states})"
            else:
                why = f"no usable node has image {image!r} (nodes never pull images)"
            raise Unavailable(why, reason="no_node")
        if gpus is not None:
            # free as last reported, or freed since (its agent still decides, exactly)
            fitting = [
                n
                for n in with_image
                if gpu_fit.fits(n, gpus) or (n.gpus_freed and gpu_fit.could_fit(n, gpus))
            ]
            if fitting:
                return fitting
            why = gpu_fit.why_none(with_image, gpus)
            if not any(gpu_fit.could_fit(n, gpus) for n in nodes):
                raise BadRequest(why, reason="no_gpus")  # no node has them, held or not
            raise Unavailable(why, reason="no_gpus")  # held now: free when a holder ends
        return with_image

    def matching(self, on: Labels, among: list[str] | None = None) -> list[Node]:
        """The nodes (within `among`) that have every label `on` asks for, whatever their
        state; a 400 listing which labels each node has when there are none."""
        nodes = [n for n in self.registry.nodes.values() if among is None or n.node_id in among]
        found = [n for n in nodes if n.has_labels(on)]
        if not found and nodes:
            each = "; ".join(f"{n.node_id}: {shown(n.labels)}" for n in nodes[:LISTED])
            if len(nodes) > LISTED:
                each += f"; and {len(nodes) - LISTED} more"
            raise BadRequest(
                f"no node has {shown(on)} (labels per node: {each})", reason="no_matching_node"
            )
        return found

    def refuse_missing_image(
        self, image: str, among: list[str] | None = None, on: Labels | None = None
    ) -> None:
        """A 400 now when no node (within `among`, with the labels `on` asks for) reports
        the image, rather than a 503 or a job pending forever: nodes never pull images.
        Nodes not polled yet may have it."""
        nodes = [n for n in self.registry.nodes.values() if among is None or n.node_id in among]
        if on:
            nodes = self.matching(on, among)
        if nodes and not any(n.has_image(image) for n in nodes):
            where = f"node {among[0]!r}" if among and len(among) == 1 else "any node in the pool"
            where += f" with {shown(on)}" if on else ""
            raise BadRequest(
                f"image {image!r} is not on {where} (nodes never pull images; "
                "build or pull it on a node first)",
                reason="image_not_found",
            )
