"""`deskguard installer preseed`: a Debian installer preseed for laptops that enrol themselves (docs/enrolment.md)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import output_option


@click.group()
def installer():
    """What installs a laptop's OS before it enrols itself."""


@installer.command()
@click.option("--package-url", required=True, help="http(s) URL the installer fetches the enrolment .deb from.")
@click.option("--hostname", required=True, help="The laptop's hostname (the name it enrols under).")
@click.option("--disk", default="", help="The disk to erase and encrypt (default: the installer's choice).")
@click.option("--swap-mb", type=int, default=4096, show_default=True, help="Swap inside the encrypted LVM (0: none).")
@click.option("--boot-mb", type=int, default=1024, show_default=True, help="The unencrypted /boot partition.")
@click.option("--locale", default="en_US.UTF-8", show_default=True)
@click.option("--keymap", default="us", show_default=True)
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--mirror", default="deb.debian.org", show_default=True)
@click.option("--suite", default="trixie", show_default=True)
@click.option("--luks-passphrase-file", type=click.File("r"), default=None,
              help="The disk's installer passphrase (first line); without it the installer asks for one.")
@output_option("The preseed file to write (0600: it may hold the installer passphrase).")
def preseed(package_url, hostname, disk, swap_mb, boot_mb, locale, keymap, timezone, mirror, suite,
            luks_passphrase_file, output):
    """Write a preseed: whole disk LUKS2 (Argon2id) with LVM, the enrolment package installed at the end."""
    from ..enrolment.preseed import PreseedInput, render
    from ..errors import UsageError
    from ..fsutil import atomic_write

    if output is None:
        raise UsageError("--output FILE is required (the preseed may hold the installer passphrase: never stdout)")
    passphrase = luks_passphrase_file.readline().rstrip("\r\n") if luks_passphrase_file else None
    text = render(PreseedInput(package_url=package_url, hostname=hostname, disk=disk, swap_mb=swap_mb,
                               boot_mb=boot_mb, locale=locale, keymap=keymap, timezone=timezone, mirror=mirror,
                               suite=suite, passphrase=passphrase))
    atomic_write(Path(output), text, mode=0o600)
    click.echo(f"installer: wrote {output} (0600) for {hostname}"
               + ("; it holds the installer passphrase: delete it once the laptop is installed" if passphrase
                  else "; the installer will ask for the disk passphrase"))
