"""deskguard: provision, harden, check and wipe home-office laptops with Ansible."""

__version__ = "0.1.0"
