"""`deskguard netcheck HOST`: why an operator cannot reach the call system, in words the helpdesk can read out."""

from __future__ import annotations

import sys

import click

from ..compliance.results import STATUS_WORDS
from .common import open_store, site_option


@click.command()
@site_option
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--lang", type=click.Choice(["en", "ja"]),
              help="Also print what the operator is told, in this language (the same verdict, their words).")
def netcheck(site, host, as_json, lang):
    """Check HOST's network now: tethering or mobile data, open Wi-Fi, VPN, call system (read-only, audited).

    Exit codes: 0 the network is fine; 1 a problem was found or something could not be determined;
    2 usage error; 3 the laptop did not answer; 4 the controller cannot do it.
    """
    from ..compliance.netcheck import run

    root, store = open_store(site)
    with store:
        check = run(root, store, host)
    if as_json:
        import json

        click.echo(json.dumps(check.to_dict(lang), indent=2))
    else:
        if lang:
            click.echo(f"operator ({lang}):")
            for line in check.operator_lines(lang):
                click.echo(f"  {line}")
            click.echo("")
        for line in check.verdict:
            click.echo(line)
        click.echo("")
        for c in check.controls:
            click.echo(f"{c['id']} {STATUS_WORDS.get(c['status'], c['status']):20} {c['title']}")
        click.echo("evidence:")
        for line in check.evidence:
            click.echo(f"  {line}")
    sys.exit(check.exit_code)
