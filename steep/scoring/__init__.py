"""Scoring summaries: ROUGE against the references, Lead-1, the paired intervals the gate reads, and the
candidates of an evaluation run in order with a cache. Nothing here knows Ray: a `Generate` function says
where the candidates generate (in this process, or as Ray tasks: steep.ray_jobs.evaluate)."""
