"""`deskguard enrolment create|list|revoke`: tokens laptops enrol themselves with (docs/enrolment.md)."""

from __future__ import annotations

import json

import click

from .common import open_store, parse_duration, site_option


@click.group()
def enrolment():
    """Tokens for laptops shipped to homes: they enrol themselves with one, then are onboarded over the VPN."""


@enrolment.command()
@site_option
@click.option("--count", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="How many laptops may enrol with this token.")
@click.option("--expires", "expires", default="7d", show_default=True,
              help="Lifetime: 90m, 12h, 7d (at most 365d).")
@click.option("--operator", default=None, help="Operator recorded for every laptop enrolled with it.")
@click.option("--hostname-pattern", default=None,
              help="Only hostnames matching this shell pattern may enrol (e.g. 'tokyo-*').")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the token included, once).")
def create(site, count, expires, operator, hostname_pattern, as_json):
    """Make a token. It is printed once and stored only as a hash: put it in the enrolment package now."""
    lifetime = parse_duration(expires)
    if lifetime is None:
        raise click.BadParameter(f"{expires!r}: write 90m, 12h or 7d", param_hint="--expires")
    _root, store = open_store(site)
    with store:
        row, token = store.create_enrolment_token(uses=count, lifetime=lifetime, operator=operator,
                                                  hostname_pattern=hostname_pattern)
    if as_json:
        click.echo(json.dumps({**row.to_dict(), "token": token}, indent=2))
        return
    click.echo(f"enrolment: token {row.id}: {count} use(s), expires {row.to_dict()['expires_at']}"
               + (f", operator {operator}" if operator else "")
               + (f", hostnames {row.hostname_pattern}" if row.hostname_pattern else ""))
    click.echo(token)
    click.echo("enrolment: this is the only time the token is shown; the store keeps its hash only. "
               f"Revoke it with `deskguard enrolment revoke {row.id}`.", err=True)


@enrolment.command("list")
@site_option
@click.option("--all", "include_closed", is_flag=True, help="Also tokens revoked, expired or used up.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(site, include_closed, as_json):
    """Tokens (never the token text: only the store's id)."""
    _root, store = open_store(site)
    with store:
        rows = store.list_enrolment_tokens(include_closed=include_closed)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("enrolment: no token" + ("" if include_closed else " that can still enrol a laptop (--all: every token)"))
        return
    click.echo(f"{'ID':36} {'STATE':8} {'USES':9} {'EXPIRES (UTC)':17} {'OPERATOR':16} HOSTNAMES")
    for r in rows:
        d = r.to_dict()
        click.echo(f"{r.id:36} {d['state']:8} {f'{r.uses}/{r.uses_allowed}':9} {r.expires_at:%Y-%m-%d %H:%M} "
                   f"{(r.operator or '-'):16} {r.hostname_pattern or '*'}")


@enrolment.command()
@site_option
@click.argument("token_id")
@click.option("--reason", default=None, help="Why (kept in the audit log).")
def revoke(site, token_id, reason):
    """No laptop enrols with TOKEN_ID from now on (those enrolled with it stay)."""
    _root, store = open_store(site)
    with store:
        row, changed = store.revoke_enrolment_token(token_id, reason=reason)
    if changed:
        click.echo(f"enrolment: token {row.id} revoked after {row.uses} of {row.uses_allowed} use(s)")
    else:
        click.echo(f"enrolment: token {row.id} was already revoked")
