"""`deskguard onboard HOST`: provision a new-hire laptop."""

from __future__ import annotations

import sys

import click

from ..onboarding.preflight import SUPPORTED_OS
from ..term import color


@click.command()
@click.argument("hostname")
@click.option("--os", "os_name", type=click.Choice(SUPPORTED_OS), required=True, help="The laptop's OS.")
@click.option("--address", required=True, help="IP address or DNS name the controller reaches it at.")
@click.option("--user", "operator", required=True, help="The operator (standard user) who uses the laptop.")
@click.option("--ssh-user", default="dgadmin", show_default=True, help="Management account (key login, sudo).")
@click.option("--port", type=int, default=None, help="SSH port (22), or WinRM HTTPS port for Windows (5986).")
@click.option("--ssh-key", type=click.Path(dir_okay=False), default=None, help="Admin private key (default: ssh's own).")
@click.option("--luks-passphrase-file", type=click.Path(dir_okay=False), default=None,
              help="The disk's installer passphrase (exact bytes), used once to add the escrowed recovery key "
                   "when the laptop has no crypttab key file.")
@click.option("--winrm-user", default=None, help="Windows: the local administrator account WinRM logs in as.")
@click.option("--winrm-password-file", type=click.File("r"), default=None,
              help="Windows: read that account's password from this file (else asked; never on the command line).")
@click.option("--winrm-transport", type=click.Choice(["ntlm", "kerberos"]), default="ntlm", show_default=True,
              help="Windows: authentication (Kerberos needs pywinrm[kerberos] and a ticket).")
@click.option("--winrm-ca-bundle", type=click.Path(dir_okay=False), default=None,
              help="Windows: PEM file of the CA that signed the laptop's WinRM HTTPS certificate.")
@click.option("--insecure-lab-winrm", is_flag=True,
              help="LAB ONLY: Basic auth over plain HTTP, no certificate check. Never for a real laptop.")
@click.option("--check", is_flag=True, help="Show what would change; change and record nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--site", default=None, help="Site folder (default: DESKGUARD_SITE or the checkout).")
def onboard(hostname, os_name, address, operator, ssh_user, port, ssh_key, luks_passphrase_file, winrm_user,
            winrm_password_file, winrm_transport, winrm_ca_bundle, insecure_lab_winrm, check, yes, as_json, site):
    """Check HOSTNAME is reachable, record it, and apply every control."""
    import json

    from ..onboarding.onboard import OnboardRequest, summary_rows
    from ..onboarding.onboard import onboard as run_onboard
    from ..progress import print_summary, progress_factory
    from ..site import site_dir

    req = OnboardRequest(hostname, os_name, address, operator, ssh_user, port, ssh_key, check,
                         luks_passphrase_file, winrm_user=winrm_user, winrm_transport=winrm_transport,
                         winrm_ca_bundle=winrm_ca_bundle, insecure_lab_winrm=insecure_lab_winrm)
    if os_name == "windows":
        req.winrm_password = _winrm_password(winrm_password_file, winrm_user)
        if insecure_lab_winrm:
            from ..windows.preflight import LAB_WARNING

            click.secho(LAB_WARNING, err=True, fg="red", bold=True, color=color())
    if not (yes or check or as_json) and sys.stdin.isatty():
        click.confirm(f"Onboard {hostname} ({address}) for {operator}? This changes the laptop", abort=True)
    result, device = run_onboard(site_dir(site), req,
                                 progress=None if as_json else progress_factory(f"onboard {hostname}", 1))
    hostname = device["hostname"]  # as the store spells it (lower case)
    rows = summary_rows(result, hostname, check)
    if as_json:
        outcome = result.hosts.get(hostname)
        click.echo(json.dumps({"device": device, "check": check, "exit_code": result.exit_code,
                               "seconds": round(result.seconds, 1), "module_calls": result.module_calls,
                               "changed_tasks": outcome.changed if outcome else None,
                               "messages": outcome.messages if outcome else [],
                               "controls": rows}, indent=2))
    else:
        print_summary(result)
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{hostname}: controls" + (" (check mode: nothing changed)" if check else ""))
        for col in ("control", "state", "next"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["control"], r["state"], r["next"])
        Console().print(table)
    sys.exit(result.exit_code)


def _winrm_password(password_file, user) -> str | None:
    """From the file (first line), else a hidden prompt in a terminal; None otherwise (validation says how)."""
    if password_file is not None:
        return password_file.readline().rstrip("\r\n")
    if sys.stdin.isatty() and user:
        return click.prompt(f"WinRM password for {user}", hide_input=True, err=True)
    return None
