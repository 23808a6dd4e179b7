"""`deskguard announce "TEXT" --to all|GROUP|HOST` and `deskguard announce status`: IT's announcements to the
operators, signed like orders, and who has seen them."""

from __future__ import annotations

import json

import click

from .common import open_store, site_option


class _SendUnlessSubcommand(click.Group):
    """`deskguard announce "TEXT" ...` sends; `deskguard announce status ...` is the subcommand."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["send", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SendUnlessSubcommand)
def announce():
    """Tell operators something: `announce "TEXT" --to all|GROUP|HOST`; `announce status` shows who saw it."""


@announce.command()
@site_option
@click.argument("text")
@click.option("--to", "to", required=True, help="all, an inventory group or a host (an Ansible host pattern).")
@click.option("--until", default=None, help="Shown until this date (YYYY-MM-DD, end of day UTC) or UTC time "
                                             "(YYYY-MM-DDTHH:MMZ); default 14 days.")
@click.option("--lang", default=None, help="Only operators reading these languages (ja,en); default all.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def send(site, text, to, until, lang, as_json):
    """Sign TEXT with the order key and publish it for every onboarded laptop --to names; each laptop's agent
    fetches it at its next check-in and `deskguard-status` shows it once to each operator (audited).

    Exit codes: 0 published; 2 usage error (nothing published); 4 the controller cannot do it.
    """
    from ..operators.announce import announce as publish
    from ..store.common import default_actor

    root, store = open_store(site)
    with store:
        done = publish(root, store, text, to, until=until, lang=lang, actor=default_actor())
    if as_json:
        click.echo(json.dumps({"id": done.announcement_id, "laptops": done.hosts, "not_onboarded": done.skipped,
                               "expires_at": done.expires_at}, indent=2))
        return
    click.echo(f"announcement {done.announcement_id[:8]} published for {len(done.hosts)} laptop(s) until "
               f"{done.expires_at}; each gets it at its next check-in. See `deskguard announce status "
               f"{done.announcement_id[:8]}`.")
    if done.skipped:
        click.echo(f"not onboarded, so not told: {', '.join(done.skipped)}")


@announce.command()
@site_option
@click.argument("announcement_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(site, announcement_id, as_json):
    """Every announcement with how many laptops have an operator who saw it; with ANNOUNCEMENT_ID (8+
    characters), each laptop and who saw it when. Seen = shown by `deskguard-status`, reported in the laptop's
    next signed check-in.

    Exit codes: 0 shown; 2 unknown announcement; 4 the controller cannot do it.
    """
    from ..operators import announce as lib

    root, store = open_store(site)
    with store:
        entries = [lib.find(root, announcement_id)] if announcement_id else lib.index(root)
        seen = {e["id"]: lib.seen_by(store, e) for e in entries}
    if as_json:
        click.echo(json.dumps([{**e, "seen": seen[e["id"]]} for e in entries], indent=2, ensure_ascii=False))
        return
    if not entries:
        click.echo("announcements: none")
        return
    if announcement_id:
        e = entries[0]
        click.echo(f"{e['id']}  to {e['to']}  issued {e['issued_at']}  until {e['expires_at']}")
        click.echo(f"  {e['text']}")
        for host, receipts in sorted(seen[e["id"]].items()):
            who = ", ".join(f"{r['user']} at {r['at']}" for r in receipts) if receipts else "not seen yet"
            click.echo(f"{host:20} {who}")
        return
    click.echo(f"{'ID':9} {'TO':16} {'UNTIL':20} {'SEEN':9} TEXT")
    for e in entries:
        laptops = seen[e["id"]]
        count = f"{sum(1 for r in laptops.values() if r)}/{len(laptops)}"
        text = " ".join(e["text"].split())
        click.echo(f"{e['id'][:8]:9} {e['to'][:16]:16} {e['expires_at']:20} {count:9} "
                   f"{text[:60] + ('…' if len(text) > 60 else '')}")
