"""The pipeline layer: the stages of `steep run` as plain functions, what flows and commands call.

Above the stage jobs (ray_jobs, expectations, bentos) and the core; below the CLI and the Prefect flows,
which only orchestrate and print. Each function here is callable without Prefect.
"""
