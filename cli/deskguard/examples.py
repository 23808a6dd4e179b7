"""Examples shown at the end of each command's --help (man-style). Kept here, one table, so every command has
them without touching each command's file; tests/unit/test_cli_ecosystem.py checks none is missing."""

from __future__ import annotations

EXAMPLES: dict[str, list[str]] = {
    "": ["deskguard init", "deskguard onboard lap-0042 --os debian --address 10.8.0.42 --user tanaka",
         "deskguard comply --format html --output report.html", "deskguard completion bash > /etc/bash_completion.d/deskguard"],
    "completion": ["deskguard completion bash > /etc/bash_completion.d/deskguard",
                   "deskguard completion zsh > \"${fpath[1]}/_deskguard\"",
                   "deskguard completion fish > ~/.config/fish/completions/deskguard.fish"],
    "init": ["deskguard init", "deskguard init --site /srv/deskguard --officer-passphrase-file officer.pass",
             "DESKGUARD_DB_URL=postgresql+psycopg://deskguard@db.example.com/deskguard deskguard init"],
    "onboard": ["deskguard onboard lap-0042 --os debian --address 10.8.0.42 --user tanaka --check",
                "deskguard onboard lap-0042 --os debian --address 10.8.0.42 --user tanaka",
                "deskguard onboard win-0007 --os windows --address 10.8.0.77 --user sato --winrm-user dgadmin "
                "--winrm-ca-bundle corp-ca.pem"],
    "comply": ["deskguard comply", "deskguard comply --limit lap-0042 --fix",
               "deskguard comply --json > nightly.json", "deskguard comply --format junit --output comply.xml"],
    "devices": ["deskguard devices list"],
    "devices list": ["deskguard devices list", "deskguard devices list --all --json"],
    "devices show": ["deskguard devices show lap-0042", "deskguard devices show lap-0042 --json"],
    "devices remove": ["deskguard devices remove lap-0042"],
    "devices approve": ["deskguard devices approve lap-0042"],
    "enrolment": ["deskguard enrolment create --count 20 --expires 14d --hostname-pattern 'tokyo-*'"],
    "enrolment create": ["deskguard enrolment create", "deskguard enrolment create --count 20 --expires 14d "
                         "--operator tanaka --hostname-pattern 'tokyo-*'"],
    "enrolment list": ["deskguard enrolment list", "deskguard enrolment list --all --json"],
    "enrolment package": ["deskguard enrolment package --token dgenrol-… --ssh-public-key it.pub --ca-file ca.pem "
                          "--output tokyo.deb"],
    "enrolment process": ["deskguard enrolment process", "deskguard enrolment process --json"],
    "installer": ["deskguard installer preseed --package-url https://it.example.com/tokyo.deb --hostname tokyo-001 "
                  "--output tokyo-001.cfg"],
    "installer preseed": ["deskguard installer preseed --package-url https://it.example.com/tokyo.deb --hostname "
                          "tokyo-001 --disk /dev/nvme0n1 --luks-passphrase-file install.pass --output tokyo-001.cfg"],
    "enrolment revoke": ["deskguard enrolment revoke 3f0c2a8e-5d1b-4c7e-9a4f-2b6d8e1c0a57 --reason 'laptop lost'"],
    "audit": ["deskguard audit verify"],
    "audit list": ["deskguard audit list --target lap-0042", "deskguard audit list --limit 200 --json"],
    "audit verify": ["deskguard audit verify", "deskguard audit verify --json",
                     "deskguard audit verify --checkpoints /mnt/worm/audit-checkpoints.jsonl"],
    "audit checkpoint": ["deskguard audit checkpoint"],
    "keys": ["deskguard keys verify"],
    "keys show": ["deskguard keys show lap-0042 --escrow-key officer.pem --reason INC-123"],
    "keys rotate": ["deskguard keys rotate lap-0042", "deskguard keys rotate --all --json"],
    "keys verify": ["deskguard keys verify", "deskguard keys verify --limit 'lap-00*' --json"],
    "keys destroy": ["deskguard keys destroy lap-0042 --reason 'wiped, INC-123'",
                     "deskguard keys destroy lap-0042 --reason 'wiped, INC-123' --yes --confirm lap-0042"],
    "announce": ["deskguard announce \"Tomorrow 9:00 the call system is updated\" --to all --lang en",
                 "deskguard announce status"],
    "announce send": ["deskguard announce \"明日9時に通話システムを更新します。\" --to tokyo --until 2026-12-20 --lang ja"],
    "announce status": ["deskguard announce status", "deskguard announce status 3f2a9c1e --json"],
    "usb": ["deskguard usb list lap-0042"],
    "usb approve": ["deskguard usb approve 0781:5581:4C530001 --group all --reason 'IT install stick'",
                    "deskguard usb approve 0951:1666 --host lap-0042 --reason INC-77"],
    "usb list": ["deskguard usb list lap-0042", "deskguard usb list lap-0042 --json"],
    "vpn": ["deskguard vpn list"],
    "vpn gateway-config": ["deskguard vpn gateway-config --format wg-quick --output gw-peers.conf",
                           "deskguard vpn gateway-config --format json"],
    "vpn list": ["deskguard vpn list", "deskguard vpn list --all --json"],
    "vpn rotate": ["deskguard vpn rotate lap-0042"],
    "vpn push-gateway": ["deskguard vpn push-gateway", "deskguard vpn push-gateway --json"],
    "lab": ["deskguard lab up --laptops 1 --containers 2 --fleet 50", "deskguard lab down"],
    "lab up": ["deskguard lab up --containers 2", "deskguard lab up --laptops 1 --fleet 50"],
    "lab down": ["deskguard lab down"],
    "lab status": ["deskguard lab status", "deskguard lab status --json"],
    "lab ssh": ["deskguard lab ssh lab-vm1", "deskguard lab ssh lab-ct1 systemctl is-active ufw"],
    "lab usb": ["deskguard lab usb plug lab-vm1 --serial STICK01"],
    "lab usb plug": ["deskguard lab usb plug lab-vm1 --serial STICK01",
                     "deskguard lab usb plug lab-vm1 --kind keyboard --id kbd1"],
    "lab usb unplug": ["deskguard lab usb unplug lab-vm1 kbd1"],
    "wipe": ["deskguard wipe lap-0042 --reason 'lost on the train' --ticket INC-123",
             "deskguard wipe lap-0042 --mode lock --reason 'left in a taxi' --yes --confirm lap-0042"],
    "orders": ["deskguard orders list"],
    "orders list": ["deskguard orders list", "deskguard orders list --host lap-0042 --state queued --json"],
    "orders show": ["deskguard orders show 1f3c9a2b", "deskguard orders show 1f3c9a2b --json"],
    "orders cancel": ["deskguard orders cancel 1f3c9a2b"],
    "orders settle": ["deskguard orders settle", "deskguard orders settle --grace 12h"],
    "serve": ["deskguard serve --bind 0.0.0.0:8443 --tls-cert server.crt --tls-key server.key",
              "deskguard serve --bind 127.0.0.1:8080"],
    "netcheck": ["deskguard netcheck lap-0042", "deskguard netcheck lap-0042 --json"],
    "audit log": ["deskguard audit log --since 7d", "deskguard audit log --since 2026-11-01 --format csv"],
    "demo": ["deskguard demo", "deskguard demo --laptops 0 --containers 1 --fleet 5"],
}


def epilog(path: str) -> str | None:
    """The examples block for a command path ("keys show"), in click's no-rewrap form (\\b)."""
    lines = EXAMPLES.get(path)
    if not lines:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
