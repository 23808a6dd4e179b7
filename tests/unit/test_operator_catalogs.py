"""The operators' messages in English and Japanese: Babel's extraction of every `N_("...")` in the laptop-side
message modules finds each one translated, not fuzzy, with its placeholders intact, in both catalogs, and the
generated table the laptop reads equals the catalogs. Plus the language an operator's session gets."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from deskguard.operators import catalogs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_operator_catalog  # noqa: E402
import deskguard_operator_words as words  # noqa: E402

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
# What an operator is told may be a notification's text: it must fit the four lines a Windows toast shows under
# its title (words.BODY_UNITS, the reason beside it; typical values filled in). Titles fit one line.
SUMMARIES = ("Please restart the laptop.", "A message from IT.")
TYPICAL = {"deadline": "2026-12-09 18:00", "ssid": "Buffalo-G-1234", "name": "Cruzer Blade", "code": "0781:5567 4C530001", "days": 3,
           "when": "2026-12-07 09:15", "minutes": 5}
POLITE_ENDINGS = ("ます。", "です。", "ください。", "ません。", "ました。", "でした。")


def test_every_operator_message_is_translated_and_the_table_is_current():
    assert catalogs.problems() == []
    assert len(catalogs.extract()) >= 10   # extraction really found the messages (an empty glob passes nothing)


@pytest.fixture
def kit(tmp_path):
    """A copy of what the catalogs are made from, to break on purpose."""
    for path in ROOT.glob(catalogs.SOURCES):
        (tmp_path / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / path.relative_to(ROOT))
    shutil.copytree(ROOT / "locale", tmp_path / "locale")
    (tmp_path / catalogs.TABLE.relative_to(ROOT)).write_text(catalogs.TABLE.read_text(encoding="utf-8"))
    windows = tmp_path / catalogs.WINDOWS_TABLE.relative_to(ROOT)
    windows.parent.mkdir(parents=True)
    windows.write_text(catalogs.WINDOWS_TABLE.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def test_a_new_message_fails_until_it_is_translated(kit):
    source = kit / "plugins/module_utils/deskguard_operator_network.py"
    source.write_text(source.read_text() + '\nEXTRA = N_("Bring your badge on Friday.")\n')
    assert "en: not in the catalog: 'Bring your badge on Friday.'" in catalogs.problems(kit)
    catalogs.update(kit)   # what a maintainer runs: now it is in the catalogs, empty
    found = catalogs.problems(kit)
    assert "ja: untranslated: 'Bring your badge on Friday.'" in found and "en: untranslated: 'Bring your badge on Friday.'" in found


def test_a_fuzzy_or_broken_translation_fails(kit):
    po = catalogs.po_path("ja", kit / "locale")
    text = po.read_text(encoding="utf-8")
    # A fuzzy flag (what `update` sets when an English message changed) and a placeholder lost in translation.
    text = text.replace('#, python-format\nmsgid "The Wi-Fi \\"%(ssid)s\\" uses',
                        '#, fuzzy, python-format\nmsgid "The Wi-Fi \\"%(ssid)s\\" uses', 1)
    text = text.replace("Wi-Fi「%(ssid)s」はパスワード", "Wi-Fi「%(name)s」はパスワード", 1)
    po.write_text(text, encoding="utf-8")
    found = "\n".join(catalogs.problems(kit))
    assert "ja: fuzzy (check and clear the flag): 'The Wi-Fi \"%(ssid)s\" uses" in found
    assert re.search(r"ja: 'The Wi-Fi \"%\(ssid\)s\" is not protected.*(name|placeholder)", found), found


def test_a_stale_table_fails(kit):
    table = kit / catalogs.TABLE.relative_to(ROOT)
    table.write_text(table.read_text(encoding="utf-8").replace("パソコンを再起動", "PCを再起動"), encoding="utf-8")
    assert any("differs from the catalogs" in p for p in catalogs.problems(kit))


def test_a_stale_windows_table_fails(kit):
    """The Windows toasts read the same words as JSON (roles/endpoint_agent/files/operator-catalog.json)."""
    assert catalogs.problems(kit) == []
    table = kit / catalogs.WINDOWS_TABLE.relative_to(ROOT)
    table.write_text(table.read_text(encoding="utf-8").replace("パソコンを再起動", "PCを再起動"), encoding="utf-8")
    assert any("operator-catalog.json differs from the catalogs" in p for p in catalogs.problems(kit))


@pytest.mark.parametrize("language", ["en", "ja"])
def test_every_message_fits_a_notification_and_japanese_is_polite(language):
    table = deskguard_operator_catalog.CATALOG[language]
    for summary in SUMMARIES:
        assert words.width(table[summary]) <= words.SUMMARY_UNITS, table[summary]
    assert set(table) == set(deskguard_operator_catalog.CATALOG["en"])
    for text in table.values():
        shown = text % TYPICAL
        assert words.width(shown) <= words.BODY_UNITS, (words.width(shown), shown)
        if language == "ja":
            sentences = [s + "。" for s in shown.split("。") if s]
            assert all(s.endswith(POLITE_ENDINGS) for s in sentences), shown


@pytest.mark.parametrize("environ, forced, expected", [
    ({"LANG": "ja_JP.UTF-8"}, "", "ja"),
    ({"LANG": "en_US.UTF-8"}, "", "en"),
    ({"LANG": "ja_JP.UTF-8"}, "en", "en"),               # the policy forces a language
    ({"LANG": "en_GB.UTF-8"}, "ja", "ja"),
    ({"LANG": "ja_JP.UTF-8", "LC_ALL": "C"}, "", "en"),   # LC_ALL outranks LANG, as in gettext
    ({"LANG": "ja_JP.UTF-8", "LC_MESSAGES": "de_DE.UTF-8"}, "", "en"),
    ({"LANGUAGE": "fr:ja", "LANG": "fr_FR.UTF-8"}, "", "ja"),   # the first of LANGUAGE's list we speak
    ({"LANG": "ja_JP.eucJP@x"}, "", "ja"),
    ({}, "", "en"),
    ({"LANG": "ja_JP.UTF-8"}, "de", "ja"),                # an unknown forced value is ignored (refused by policy check)
])
def test_the_session_locale_decides_unless_the_policy_forces_one(environ, forced, expected):
    assert words.session_language(environ, forced) == expected


def test_say_fills_parameters_and_never_fails_in_front_of_the_operator():
    message = 'The Wi-Fi "%(ssid)s" is not protected by a password. Please switch to your home Wi-Fi or a cable.'
    assert words.say("ja", message, ssid="Free_WiFi").startswith("Wi-Fi「Free_WiFi」は")
    assert words.say("de", message, ssid="x").startswith('The Wi-Fi "x" is not protected')
    assert words.say("ja", "Not a catalog message.") == "Not a catalog message."


def test_the_policy_may_force_only_a_language_we_speak():
    from deskguard.site.policyspec import type_problem

    assert type_problem("endpoint_agent_operator_language", "ja") is None
    assert type_problem("endpoint_agent_operator_language", "") is None
    assert "one of" in type_problem("endpoint_agent_operator_language", "fr")
