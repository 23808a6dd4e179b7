"""What an operator reads, in their language: the lookup of the kit's operator-facing messages.

Messages are marked in the source with ``N_("...")`` (Babel's default extraction keyword) and looked up here at
run time. Their translations are kept as gettext catalogs under locale/ (managed with Babel, see
docs/operators.md) and compiled into deskguard_operator_catalog.py, a generated plain table: the laptop needs
no Babel, no .mo files and no locale directory, and the table travels with the agent and inside Ansible's
module payloads like any other module_util. Pure Python 3.9+ stdlib.
"""

from __future__ import annotations

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils.deskguard_operator_catalog import CATALOG
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    from deskguard_operator_catalog import CATALOG

LANGUAGES = ("en", "ja")
DEFAULT = "en"
# gettext's order: LANGUAGE (a colon-separated preference list), then LC_ALL, LC_MESSAGES, LANG.
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def N_(message):
    """Marks an operator-facing message for extraction; the text itself is looked up later by `say`."""
    return message


def _language_of(locale_name):
    code = locale_name.split(".")[0].split("@")[0].split("_")[0].lower()
    return code if code in LANGUAGES else None


def session_language(environ, forced=""):
    """The language an operator's session asks for: the policy's forced one if it names one of ours, else the
    first of LANGUAGE/LC_ALL/LC_MESSAGES/LANG that is set and that we speak, else English."""
    if forced in LANGUAGES:
        return forced
    for variable in LOCALE_VARIABLES:
        value = environ.get(variable) or ""
        for name in value.split(":") if variable == "LANGUAGE" else [value]:
            found = _language_of(name) if name else None
            if found:
                return found
        if value and variable != "LANGUAGE":
            return DEFAULT  # the first set locale variable decides (C, POSIX or a language we do not speak)
    return DEFAULT


def say(language, message, **params):
    """The message in ``language`` with its %(name)s parameters filled in. An unknown language reads English; a
    message missing from the table (never shipped: tests/unit/test_operator_catalogs.py) reads as its English
    source rather than failing in front of the operator."""
    table = CATALOG.get(language) or CATALOG.get(DEFAULT) or {}
    text = table.get(message) or message
    return text % params if params else text


# How much a notification shows without being opened (docs/operators.md, "How long a notification may be"). The
# narrowest of the places it appears is a Windows toast: 364 px wide, its title at most 2 lines and the text under
# it at most 4 lines (Windows' own caps), about 18 full-width characters a line at the default 100 % scaling.
# dunst, GNOME and KDE are at least as wide. Widths count a full-width character as 1, anything else as 1/2.
SUMMARY_UNITS = 18       # one line
BODY_UNITS = 72          # four lines
MORE = N_("To read the whole message, type deskguard-status.")


def width(text):
    """Display width in full-width units: CJK and full-width forms 1, Latin letters, digits, spaces 1/2."""
    import unicodedata

    return sum(1.0 if unicodedata.east_asian_width(ch) in "WF" else 0.5 for ch in text)


def fit_body(language, text):
    """IT's own text (up to 1000 characters) cut to what a notification shows, ending in "…" and a line saying
    where the whole of it is; text that fits is returned as it is."""
    if width(text) <= BODY_UNITS:
        return text
    more = say(language, MORE)
    room, out = BODY_UNITS - width(more) - 1, []
    for ch in text:
        room -= width(ch)
        if room < 0:
            break
        out.append(ch)
    return "".join(out).rstrip() + "…\n" + more
