"""`deskguard enrolment create|list|revoke`: tokens laptops enrol themselves with (docs/enrolment.md)."""

from __future__ import annotations

import json

import click

from .common import open_store, output_option, parse_duration, site_option


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


@enrolment.command()
@site_option
@click.option("--token", required=True, help="The token from `enrolment create` (it goes into the package).")
@output_option("The .deb to write (atomically).")
@click.option("--ssh-public-key", "ssh_key", required=True,
              type=click.Path(dir_okay=False, exists=True, readable=True),
              help="IT's SSH public key for the management account (key-only login).")
@click.option("--server-url", default=None, help="`deskguard serve`'s URL (default: endpoint_agent_server_url).")
@click.option("--ca-file", default=None, type=click.Path(dir_okay=False, exists=True, readable=True),
              help="The CA certificate of the server's TLS certificate, pinned on the laptop.")
@click.option("--hostname", default=None, help="The laptop's hostname (default: the one it is installed with).")
@click.option("--allow-http", is_flag=True, help="LAB ONLY: a plain http:// server URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def package(site, token, output, ssh_key, server_url, ca_file, hostname, allow_http, as_json):
    """Build the enrolment .deb: management account, agent, server URL and CA, the token, the first-boot unit."""
    from pathlib import Path

    from ..enrolment import package as pkg
    from ..enrolment.settings import load as load_settings
    from ..errors import UsageError
    from ..orders.agent import order_public_pem
    from ..site import policyfile
    from ..store.enrolments import TOKEN_RE

    if output is None:
        raise UsageError("--output FILE.deb is required")
    if not TOKEN_RE.fullmatch(token.strip()):
        raise UsageError("--token: not an enrolment token (dgenrol-…, from `deskguard enrolment create`)")
    root, store = open_store(site)
    with store:
        row = store.find_enrolment_token(token.strip())
    if row is None:
        raise UsageError("--token: this site has no such enrolment token")
    if row.state() != "active":
        raise UsageError(f"--token: enrolment token {row.id} is {row.state()}; make a new one "
                         "(`deskguard enrolment create`)")
    agent = policyfile.load(root, "endpoint_agent_")
    url = server_url or agent.get("endpoint_agent_server_url") or ""
    allow = allow_http or bool(agent.get("endpoint_agent_allow_http"))
    if not url.startswith(("https://", "http://")):
        raise UsageError("no server URL: give --server-url or set endpoint_agent_server_url in the policy")
    if url.startswith("http://") and not allow:
        raise UsageError(f"server URL {url} is plain HTTP: give an https:// URL (--allow-http is for a lab only)")
    ca_pem = Path(ca_file).read_text() if ca_file else None
    if ca_pem is not None and "BEGIN CERTIFICATE" not in ca_pem:
        raise UsageError(f"--ca-file {ca_file}: not a PEM certificate")
    inp = pkg.PackageInput(token=token.strip(), ssh_public_key=pkg.check_ssh_key(Path(ssh_key).read_text()),
                           server_url=url, ca_pem=ca_pem, order_public_key=order_public_pem(root),
                           management_user=load_settings(root).management_user, operator=row.operator,
                           hostname=hostname, allow_http=allow, version=f"1.0+{row.id.split('-')[0]}")
    files = pkg.build(inp, Path(output))
    if as_json:
        click.echo(json.dumps({"output": str(output), "token_id": row.id, "server_url": url, "files": files},
                              indent=2))
        return
    click.echo(f"enrolment: wrote {output} ({len(files)} files) for token {row.id}; server {url}"
               + (", CA pinned" if ca_pem else ", the system's CA store"))


@enrolment.command()
@site_option
@click.option("--ssh-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The management account's private key on this controller (default: ssh's own).")
@click.option("--luks-passphrase-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The disk passphrase the laptops were installed with (installer preseed): escrow needs it once.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def process(site, ssh_key, luks_passphrase_file, as_json):
    """Push the VPN gateways, then onboard every enrolled laptop over its VPN address (timer-safe)."""
    import sys
    from pathlib import Path

    from ..enrolment.process import process as run_process
    from ..progress import progress_factory
    from ..site import site_dir

    outcome = run_process(site_dir(site), ssh_key=Path(ssh_key) if ssh_key else None,
                          luks_passphrase_file=Path(luks_passphrase_file) if luks_passphrase_file else None,
                          progress_factory=None if as_json else progress_factory)
    if as_json:
        click.echo(json.dumps({"exit_code": outcome.exit_code, "gateways": outcome.gateways,
                               "pending_approval": outcome.pending,
                               "laptops": [vars(p) for p in outcome.laptops]}, indent=2))
        sys.exit(outcome.exit_code)
    if not outcome.laptops:
        click.echo("enrolment: no enrolled laptop waits for onboarding"
                   + (f"; {len(outcome.pending)} wait for `deskguard devices approve`: {', '.join(outcome.pending)}"
                      if outcome.pending else ""))
        sys.exit(outcome.exit_code)
    click.echo(f"enrolment: gateways {outcome.gateways}")
    for p in outcome.laptops:
        click.echo(f"{p.hostname:24} {p.state:12} {p.address:16} {'; '.join(p.messages) or '-'}")
    if outcome.pending:
        click.echo(f"enrolment: waiting for approval: {', '.join(outcome.pending)}")
    sys.exit(outcome.exit_code)
