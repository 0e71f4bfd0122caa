"""Evaluation's generation as Ray tasks: one per node that offers CPUs, each on a contiguous shard.

What is scored, how, and the cache are steep.scoring's; this module holds only what runs on Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from steep.scoring.candidates import Candidate, Generate, in_process


def on_ray_nodes(
    generation: dict[str, Any], batch_size: int, tracking_uri: str, log: Callable[[str], None] = print
) -> Generate:
    """Generate as Ray tasks, one per node that offers CPUs, each on a contiguous shard of the texts.

    Each task loads the candidate on its node (from MLflow, or a folder every node sees) and uses the node's
    CPUs; the shards come back in order. Candidates that only this machine can load stay in-process.
    Needs a connected Ray (`ray.init`).
    """
    here = in_process(generation, batch_size)

    def run(cand: Candidate, texts: list[str]) -> list[str]:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        if not cand.portable or len(nodes) < 2 or len(texts) < 2:
            return here(cand, texts)
        nodes = nodes[: len(texts)]
        step = -(-len(texts) // len(nodes))
        task = ray.remote(_summarize_shard)
        refs = [
            task.options(
                num_cpus=int(node["Resources"]["CPU"]),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(cand.load, texts[i * step : (i + 1) * step], generation, batch_size, tracking_uri)
            for i, node in enumerate(nodes)
        ]
        parts = ray.get(refs)
        log(f"{cand.name}: {len(texts)} summaries as Ray tasks on {len(parts)} nodes "
            f"({', '.join(f'{name}: {len(out)}' for name, out in parts)})")  # fmt: skip
        return [text for _, out in parts for text in out]

    return run


def _summarize_shard(
    load: Callable[[], object],
    texts: list[str],
    generation: dict[str, Any],
    batch_size: int,
    tracking_uri: str,
) -> tuple[str, list[str]]:
    """One Ray task: the node's name (its steep-node label on a steep stack) and the shard's summaries."""
    import mlflow
    import ray
    import torch

    mlflow.set_tracking_uri(tracking_uri)  # models:/ URIs resolve through the driver's tracking server

    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    ctx = ray.get_runtime_context()
    name = ctx.get_node_labels().get("steep-node", ctx.get_node_id()[:8])
    return name, load().summarize(texts, batch_size=batch_size, **generation)  # type: ignore[attr-defined]
