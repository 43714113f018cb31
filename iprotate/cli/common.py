"""What every command shares: loading the cluster file and reporting its problems the same way."""

from __future__ import annotations

import json
from typing import Any

import click

from iprotate.cluster.loader import load_cluster
from iprotate.cluster.model import Cluster, ClusterError
from iprotate.plan.model import Plan
from iprotate.plan.planner import make_plan

# Exit status for a cluster file that cannot be used (as DESIGN.md says).
EXIT_BAD_FILE = 2

cluster_file = click.argument("cluster_file", type=click.Path(dir_okay=False))


def load_plan(path: str) -> tuple[Cluster, Plan]:
    """Load and plan `path`; on any problem print every one to stderr and exit 2."""
    try:
        cluster = load_cluster(path)
        plan = make_plan(cluster)
    except ClusterError as e:
        for line in str(e).splitlines():
            click.echo(f"error: {line}", err=True)
        raise SystemExit(EXIT_BAD_FILE) from None
    for w in cluster.warnings:
        click.echo(f"warning: {cluster.path}: {w}", err=True)
    return cluster, plan


def echo_json(data: Any) -> None:
    """Print `data` as stable, indented JSON."""
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def check_host(plan: Plan, host: str) -> None:
    """Exit 2 with a clear message if `host` is not in the plan's cluster."""
    names = plan.cluster.host_names
    if host not in names:
        raise click.BadParameter(
            f"{host!r} is not a host of {plan.cluster.path} ({', '.join(names)})"
        )
