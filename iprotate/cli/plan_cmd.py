"""`iprotate check` and `iprotate plan`: validate the cluster file and preview the plan."""

from __future__ import annotations

import click

from iprotate.cli import main
from iprotate.cli.common import check_host, cluster_file, echo_json, load_plan
from iprotate.cluster.loader import check_local, load_cluster
from iprotate.cluster.model import ClusterError
from iprotate.plan import report
from iprotate.plan.planner import make_plan


@main.command()
@cluster_file
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--host", "host", metavar="NAME",
              help="Also check what NAME needs on this machine (the programs of its exec checks, "
              "their users).")  # fmt: skip
def check(cluster_file: str, as_json: bool, host: str | None) -> None:
    """Validate CLUSTER_FILE and summarise it (exit 2 with every problem if it is not valid)."""
    _, plan = load_plan(cluster_file)
    if host is not None:
        check_host(plan, host)
        problems = check_local(plan.cluster, host, frozenset(v.ip for v in plan.for_host(host)))
        for line in problems:
            click.echo(f"error: {plan.cluster.path}: {line}", err=True)
        if problems:
            raise SystemExit(2)
    if as_json:
        echo_json(report.summary_json(plan))
    else:
        click.echo(report.summary_text(plan))


@main.command()
@cluster_file
@click.option("--host", "host", metavar="NAME", help="Show only this host's part in the plan.")
@click.option(
    "--fail", "failed", metavar="HOST", multiple=True, help="What if HOST is down (repeat)."
)
@click.option(
    "--stats", is_flag=True, help="Owners per host and the worst load after 1 and 2 failures."
)
@click.option("--diff", "old_file", metavar="OLD_FILE", type=click.Path(dir_okay=False),
              help="What changes from the plan of OLD_FILE to this one.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def plan(
    cluster_file: str,
    host: str | None,
    failed: tuple[str, ...],
    stats: bool,
    old_file: str | None,
    as_json: bool,
) -> None:
    """Show who owns each VIP, its failover order and the CARP priorities of every host."""
    _, p = load_plan(cluster_file)
    for name in (*failed, *([host] if host else [])):
        check_host(p, name)
    if old_file is not None:
        try:
            old = make_plan(load_cluster(old_file))
        except ClusterError as e:
            for line in str(e).splitlines():
                click.echo(f"error: {line}", err=True)
            raise SystemExit(2) from None
        data = report.diff(old, p)
        if as_json:
            echo_json(data)
        else:
            click.echo(report.diff_text(data))
        return
    if as_json:
        out = p.to_json()
        if failed:
            out["fail"] = report.fail_json(p, failed)
        if stats:
            out["stats"] = report.stats(p)
        if host:
            out["vips"] = [v for v in out["vips"] if host in v["order"]]
        echo_json(out)
        return
    if failed:
        click.echo(report.fail_text(p, failed))
    elif stats:
        click.echo(report.stats_text(report.stats(p)))
    elif host:
        click.echo(report.host_text(p, host))
    else:
        click.echo(report.plan_text(p))
