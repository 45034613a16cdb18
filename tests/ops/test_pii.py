"""Tests for curation_platform/ops/pii.py: planted PII in prose, code, logs and chat; look-alikes untouched."""

from __future__ import annotations

import math
from collections import Counter

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from curation_platform.ops.pii import (
    PII_TYPES,
    PLACEHOLDERS,
    PiiConfig,
    iban_valid,
    luhn_valid,
    redact_pii,
    scan_pii,
    shannon_entropy,
)
from curation_platform.records import MESSAGES_DTYPE, RECORD_SCHEMA, VERDICT_SCHEMA


def make_docs(texts: list[str | None], kinds: list[str] | None = None, messages: list | None = None) -> pl.DataFrame:
    """Documents with every RECORD_SCHEMA column, like the output of the earlier stages."""
    n = len(texts)
    data = {name: pl.Series(name, [None] * n, dtype=dtype) for name, dtype in RECORD_SCHEMA.items()}
    data["doc_id"] = pl.Series("doc_id", [f"doc{i}" for i in range(n)], dtype=pl.String)
    data["source"] = pl.Series("source", ["test"] * n, dtype=pl.String)
    data["kind"] = pl.Series("kind", kinds or ["web"] * n, dtype=pl.String)
    data["text"] = pl.Series("text", texts, dtype=pl.String)
    if messages is not None:
        data["messages"] = pl.Series("messages", messages, dtype=MESSAGES_DTYPE)
    return pl.DataFrame(data)


def redact_one(text: str, cfg: PiiConfig | None = None) -> tuple[str, dict[str, int]]:
    result = redact_pii(make_docs([text]), cfg or PiiConfig(max_hits_per_doc=100))
    row = result.kept.row(0, named=True)
    return row["text"], row["pii_counts"]


# ----- realistic planted samples -------------------------------------------------------------------------------

PROSE = (
    "Hi team, please send the signed contract to maria.gonzalez@example.org before Friday. If anything is unclear "
    "call me on +44 20 7946 0958 or my US line (415) 555-0132. Our Berlin office is at 030 12345678 and the "
    "release of version 2.4.1 is planned for 2024-01-15."
)
PROSE_EXPECTED = (
    "Hi team, please send the signed contract to <EMAIL> before Friday. If anything is unclear "
    "call me on <PHONE> or my US line <PHONE>. Our Berlin office is at <PHONE> and the "
    "release of version 2.4.1 is planned for 2024-01-15."
)

CONFIG_FILE = """{
  "service": "billing",
  "api_key": "sk3J9dk2LmQ0pZ8xT7vBq",
  "db_password": "hunter2",
  "commit": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
  "checksum": "5d41402abc4b2a76b9719d911017c592"
}
DATABASE_HOST=10.0.0.12
TOKEN=Zq8rT1vW4yB7nE0kP3sV6xA9
auth_token = request.headers.get_bearer_value
"""
CONFIG_EXPECTED = """{
  "service": "billing",
  "api_key": "<SECRET>",
  "db_password": "hunter2",
  "commit": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
  "checksum": "5d41402abc4b2a76b9719d911017c592"
}
DATABASE_HOST=10.0.0.12
TOKEN=<SECRET>
auth_token = request.headers.get_bearer_value
"""

LOG_LINES = (
    "2024-01-15 10:32:07 INFO login ok user=jsmith@corp-mail.com from 81.2.69.142 via 192.168.1.20\n"
    "2024-01-15 10:32:09 WARN retry upstream 2607:f8b0:4005:80a::200e (fallback 2001:db8::1, fe80::1)\n"
    "2024-01-15 10:32:11 INFO agent v5.2.0.1 build 1.2.3.4.5 health 127.0.0.1 docs 203.0.113.9\n"
)
LOG_EXPECTED = (
    "2024-01-15 10:32:07 INFO login ok user=<EMAIL> from <IP_ADDRESS> via 192.168.1.20\n"
    "2024-01-15 10:32:09 WARN retry upstream <IP_ADDRESS> (fallback 2001:db8::1, fe80::1)\n"
    "2024-01-15 10:32:11 INFO agent v5.2.0.1 build 1.2.3.4.5 health 127.0.0.1 docs 203.0.113.9\n"
)

PAYMENTS = (
    "Refund to card 4111 1111 1111 1111 (Amex 3782 822463 10005) and IBAN DE89 3704 0044 0532 0130 00. "
    "Order 4111 1111 1111 1112 and ref DE89 3704 0044 0532 0130 01 are look-alikes. SSN 536-22-8714."
)
PAYMENTS_EXPECTED = (
    "Refund to card <CREDIT_CARD> (Amex <CREDIT_CARD>) and IBAN <IBAN>. "
    "Order 4111 1111 1111 1112 and ref DE89 3704 0044 0532 0130 01 are look-alikes. SSN <US_SSN>."
)

KEYS = (
    "aws_key AKIAIOSFODNN7EXAMPLE\n"
    "gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789\n"
    "slack xoxb-123456789012-abcdefghijkl\n"
    "maps AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q\n"
    "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc\n"
    "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\n"
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n"
    "-----END RSA PRIVATE KEY-----\nend"
)
KEYS_EXPECTED = (
    "aws_key <SECRET>\ngh <SECRET>\nslack <SECRET>\nmaps <SECRET>\nstripe <SECRET>\njwt <SECRET>\n<SECRET>\nend"
)

LOOK_ALIKES = (
    "Released version 10.0.0.1 on 2024-01-15 (see 01.02.2024 notes); commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3, "
    "md5 5d41402abc4b2a76b9719d911017c592, id 550e8400-e29b-41d4-a716-446655440000, gateway 10.1.2.3 and "
    "172.16.0.5, order 1234 5678 9012 3456, IBAN-like GB82 WEST 1234 5698 7654 33, SSN-like 000-12-3456, "
    "666-12-3456, 912-12-3456, 123-00-4567 and 123-45-0000, at 12:30:45, icon logo@2x.png, ISBN 978-3-16-148410-0."
)

PLANTED = [
    (PROSE, PROSE_EXPECTED),
    (CONFIG_FILE, CONFIG_EXPECTED),
    (LOG_LINES, LOG_EXPECTED),
    (PAYMENTS, PAYMENTS_EXPECTED),
    (KEYS, KEYS_EXPECTED),
    (LOOK_ALIKES, LOOK_ALIKES),
]


@pytest.mark.parametrize("raw,expected", PLANTED, ids=["prose", "config", "logs", "payments", "keys", "look_alikes"])
def test_planted_samples_are_redacted_exactly(raw: str, expected: str) -> None:
    text, _ = redact_one(raw)
    assert text == expected


def test_counts_per_type_on_planted_samples() -> None:
    _, prose = redact_one(PROSE)
    assert prose == {**dict.fromkeys(PII_TYPES, 0), "email": 1, "phone": 3}
    _, logs = redact_one(LOG_LINES)
    assert logs["ip_address"] == 2 and logs["email"] == 1 and sum(logs.values()) == 3
    _, payments = redact_one(PAYMENTS)
    assert (payments["credit_card"], payments["iban"], payments["us_ssn"]) == (2, 1, 1)
    _, keys = redact_one(KEYS)
    assert keys["secret"] == 7
    _, look = redact_one(LOOK_ALIKES)
    assert sum(look.values()) == 0


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("call 415-555-0132 now", "call <PHONE> now"),
        ("call 415.555.0132 now", "call <PHONE> now"),
        ("toll free 1-800-555-0199.", "toll free <PHONE>."),
        ("Tel. +49 (0)30 1234 5678", "Tel. <PHONE>"),
        ("mobile +4915112345678", "mobile <PHONE>"),
        ("Paris +33 1 23 45 67 89", "Paris <PHONE>"),
        ("Paris 01 23 45 67 89", "Paris <PHONE>"),
        ("London 020 7946 0958", "London <PHONE>"),
        ("Dresden 0351/123456", "Dresden <PHONE>"),
        ("too short +49 30 12", "too short +49 30 12"),  # 6 digits: below E.164 plausibility
        ("fictional 555-123-4567", "fictional 555-123-4567"),  # area code 555 is not assigned: not a number
        ("score 3-2 on 12.03.2024", "score 3-2 on 12.03.2024"),
    ],
)
def test_phone_formats(raw: str, expected: str) -> None:
    assert redact_one(raw)[0] == expected


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("ping 8.8.8.8.", "ping <IP_ADDRESS>."),
        ("dns 1.1.1.1:53", "dns <IP_ADDRESS>:53"),
        ("cgnat 100.64.0.1 bench 198.18.0.1 mcast 224.0.0.251", "cgnat 100.64.0.1 bench 198.18.0.1 mcast 224.0.0.251"),
        ("link 169.254.10.1 and 172.31.255.255 vs 172.32.0.1", "link 169.254.10.1 and 172.31.255.255 vs <IP_ADDRESS>"),
        ("bad 256.1.1.1 and 01.02.03.04", "bad 256.1.1.1 and 01.02.03.04"),
        ("ver 8.8.8.8 release: 9.9.9.9 v1.1.1.1", "ver 8.8.8.8 release: 9.9.9.9 v1.1.1.1"),
        ("full 2001:4860:4860:0000:0000:0000:0000:8888", "full <IP_ADDRESS>"),
        ("ula fd12:3456:789a::1, mac 00:1a:2b:3c:4d:5e", "ula fd12:3456:789a::1, mac 00:1a:2b:3c:4d:5e"),
        ("doc 3fff:0abc::1, mcast ff02::1", "doc 3fff:0abc::1, mcast ff02::1"),
    ],
)
def test_ip_addresses(raw: str, expected: str) -> None:
    assert redact_one(raw)[0] == expected


def test_keep_range_toggles_redact_private_and_versions_when_off() -> None:
    cfg = PiiConfig(keep_private_ips=False, keep_version_numbers=False, keep_documentation_ips=False,
                    max_hits_per_doc=100)
    text, counts = redact_one("lan 10.0.0.1, version 8.8.8.8, doc 192.0.2.1 and 2001:db8::1, lo 127.0.0.1", cfg)
    assert text == "lan <IP_ADDRESS>, version <IP_ADDRESS>, doc <IP_ADDRESS> and <IP_ADDRESS>, lo 127.0.0.1"
    assert counts["ip_address"] == 4


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('password = "Xk9#mQ2$vL7pR4wZ"', 'password = "<SECRET>"'),  # exactly 16 chars
        ('password = "Xk9#mQ2$vL7pR4w"', 'password = "Xk9#mQ2$vL7pR4w"'),  # 15 chars: below min length
        ("DB_PASSWORD=changeme_changeme", "DB_PASSWORD=changeme_changeme"),  # 2.9 bits/char
        ("secret: 'aaaaaaaaaaaaaaaaaaaaaaaa'", "secret: 'aaaaaaaaaaaaaaaaaaaaaaaa'"),
        ('"x-api-key": "AbCdEfGh12345678XyZ"', '"x-api-key": "<SECRET>"'),
        ("Authorization: Bearer a8F3kL9mQ2xZ7vB4nR6t", "Authorization: Bearer <SECRET>"),
        ("access_key => 'q7W2e9R4t1Y6u3I8o5P0'", "access_key => '<SECRET>'"),
        ("apiKey: 9f86d081884c7d659a2feaa0c55ad015", "apiKey: <SECRET>"),  # hex: 3.0 threshold
        ("author = 'Jonathan Q. Smithsonian'", "author = 'Jonathan Q. Smithsonian'"),  # 'author' is not 'auth'
        ("max_tokens = 12345678901234567", "max_tokens = 12345678901234567"),
    ],
)
def test_secret_assignments_replace_value_keep_name(raw: str, expected: str) -> None:
    assert redact_one(raw)[0] == expected


def test_entropy_threshold_is_configurable() -> None:
    raw = 'token = "correcthorsebatterystaple"'  # 3.36 bits/char
    assert redact_one(raw)[0] == raw
    assert redact_one(raw, PiiConfig(entropy_threshold=3.3))[0] == 'token = "<SECRET>"'


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("visa 4111111111111111, mc 5555-5555-5555-4444", "visa <CREDIT_CARD>, mc <CREDIT_CARD>"),
        ("discover 6011 1111 1111 1117 exp 12/27 cvv 123", "discover <CREDIT_CARD> exp 12/27 cvv 123"),
        ("ts 1705312345678 and 7992739871300", "ts 1705312345678 and 7992739871300"),  # Luhn-valid, MII 1/7
        ("two 4111 1111 1111 1111 5555 5555 5555 4444", "two <CREDIT_CARD> <CREDIT_CARD>"),
        ("acct 0958 4111 1111 1111 1111", "acct 0958 <CREDIT_CARD>"),
        ("NL91ABNA0417164300 and FR14 2004 1010 0505 0001 3M02 606", "<IBAN> and <IBAN>"),
        ("NL91ABNA0417164301 and DE89 3704 0044 0532 0130", "NL91ABNA0417164301 and DE89 3704 0044 0532 0130"),
        ("ssn 219-09-9999; 536228714 unformatted", "ssn <US_SSN>; 536228714 unformatted"),
    ],
)
def test_cards_ibans_ssns(raw: str, expected: str) -> None:
    assert redact_one(raw)[0] == expected


# ----- validators ----------------------------------------------------------------------------------------------


def test_luhn_known_values() -> None:
    values = pl.Series(["4111111111111111", "4111111111111112", "79927398713", "79927398710", "0", "12a4"])
    assert luhn_valid(values).to_list() == [True, False, True, False, True, False]


def test_iban_known_values() -> None:
    values = pl.Series(["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "GB82WEST12345698765433",
                        "DE89370400440532013", "XX89370400440532013000"])
    assert iban_valid(values).to_list() == [True, True, False, False, False]


def test_entropy_known_values() -> None:
    assert shannon_entropy(pl.Series(["aaaa", "abcd", "aabb", ""])).to_list() == [0.0, 2.0, 1.0, 0.0]


def _luhn_reference(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=1, max_size=19), min_size=1, max_size=20))
def test_luhn_matches_reference(values: list[str]) -> None:
    assert luhn_valid(pl.Series(values, dtype=pl.String)).to_list() == [_luhn_reference(v) for v in values]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=10, max_size=30), min_size=1,
                max_size=10))
def test_iban_mod97_matches_python_integers(bbans: list[str]) -> None:
    # Build IBANs with the correct check digits for DE-length-agnostic input, then compare against int arithmetic.
    def check_digits(country: str, bban: str) -> str:
        numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
        return f"{98 - int(numeric) % 97:02d}"

    ibans = [f"NO{check_digits('NO', b)}{b}" for b in bbans]
    expected = [len(i) == 15 for i in ibans]  # Norway's IBAN length is 15, the mod-97 check always holds here
    assert iban_valid(pl.Series(ibans)).to_list() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=10))
def test_entropy_matches_reference(values: list[str]) -> None:
    def reference(s: str) -> float:
        return -sum(c / len(s) * math.log2(c / len(s)) for c in Counter(s).values()) if s else 0.0

    got = shannon_entropy(pl.Series(values, dtype=pl.String)).to_list()
    assert got == pytest.approx([reference(v) for v in values], abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="0123456789@:=+-<>"), max_size=300))
def test_text_without_digits_or_assignments_is_untouched(text: str) -> None:
    docs = make_docs([text])
    out = redact_pii(docs, PiiConfig())
    assert out.kept["text"].to_list() == [text.replace("\ufdd0", "").replace("\ufdd1", "").replace("\ufdd2", "")]
    assert out.kept["pii_total"].to_list() == [0]


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=4 * 10**14, max_value=5 * 10**14 - 1), st.sampled_from([" ", "-", ""]))
def test_generated_visa_numbers_are_redacted_and_scan_clean(body: int, sep: str) -> None:
    digits = str(body)
    for check in "0123456789":
        if _luhn_reference(digits + check):
            number = digits + check
            break
    grouped = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    text, counts = redact_one(f"Paid with {grouped} yesterday.")
    assert text == "Paid with <CREDIT_CARD> yesterday." and counts["credit_card"] == 1
    assert scan_pii(pl.Series([text]))["total"].to_list() == [0]


# ----- the stage contract ------------------------------------------------------------------------------------


def test_chat_messages_and_text_are_redacted() -> None:
    messages = [
        [
            {"role": "user", "content": "My email is li.wei@example.cn and my server is 81.2.69.142"},
            {"role": "assistant", "content": "Thanks, I will not store li.wei@example.cn."},
        ],
        [],
        None,
    ]
    texts = ["user: My email is li.wei@example.cn", None, "plain"]
    docs = make_docs(texts, kinds=["chat", "chat", "web"], messages=messages)
    result = redact_pii(docs, PiiConfig())
    kept = result.kept
    assert kept["messages"].to_list()[0] == [
        {"role": "user", "content": "My email is <EMAIL> and my server is <IP_ADDRESS>"},
        {"role": "assistant", "content": "Thanks, I will not store <EMAIL>."},
    ]
    assert kept["messages"].to_list()[1:] == [[], None]
    assert kept["text"].to_list() == ["user: My email is <EMAIL>", None, "plain"]
    assert kept.schema["messages"] == MESSAGES_DTYPE
    # The text repeats the first message: per type the larger side counts (email 2 in messages vs 1 in text).
    assert kept["pii_counts"].to_list()[0] == {**dict.fromkeys(PII_TYPES, 0), "email": 2, "ip_address": 1}
    assert kept["pii_total"].to_list() == [3, 0, 0]


def test_too_many_hits_drops_and_boundary_keeps() -> None:
    five = " ".join(f"user{i}@example.com" for i in range(5))
    six = five + " user5@example.com"
    docs = make_docs([five, six, "clean text"])
    result = redact_pii(docs, PiiConfig())
    assert result.kept["doc_id"].to_list() == ["doc0", "doc2"]
    assert result.kept["text"][0] == " ".join(["<EMAIL>"] * 5)
    drop = result.verdicts.filter(pl.col("verdict") == "drop").row(0, named=True)
    assert drop == {"doc_id": "doc1", "verdict": "drop", "rule": "pii.too_many_hits", "value": 6.0,
                    "threshold": "> 5", "detail": "6 PII hits (email=6)", "duplicate_of": None, "cluster_id": None}
    redact = result.verdicts.filter(pl.col("verdict") == "redact").row(0, named=True)
    assert (redact["doc_id"], redact["rule"], redact["value"]) == ("doc0", "pii.email", 5.0)
    assert result.verdicts.schema == pl.Schema(VERDICT_SCHEMA)
    assert result.metrics["documents_dropped"] == 1
    assert result.metrics["documents_redacted"] == 1
    assert result.metrics["hits_per_type"]["email"] == 11
    assert result.metrics["redactions_per_type"]["email"] == 5
    stricter = redact_pii(docs, PiiConfig(max_hits_per_doc=4))
    assert stricter.kept["doc_id"].to_list() == ["doc2"]


def test_redact_verdicts_one_row_per_type_in_type_order() -> None:
    docs = make_docs(["ip 8.8.8.8, mail a.b@example.com, ssn 536-22-8714", "nothing here"])
    result = redact_pii(docs, PiiConfig())
    rows = result.verdicts.select("doc_id", "verdict", "rule", "value").rows()
    assert rows == [("doc0", "redact", "pii.email", 1.0), ("doc0", "redact", "pii.ip_address", 1.0),
                    ("doc0", "redact", "pii.us_ssn", 1.0)]
    assert result.kept.columns[: len(RECORD_SCHEMA)] == list(RECORD_SCHEMA)
    assert result.kept.columns[-2:] == ["pii_counts", "pii_total"]


def test_enabled_types_limit_detection() -> None:
    cfg = PiiConfig(enabled_types=["email"], max_hits_per_doc=100)
    text, counts = redact_one("a@example.com 8.8.8.8 415-555-0132", cfg)
    assert text == "<EMAIL> 8.8.8.8 415-555-0132"
    assert scan_pii(pl.Series([text]), cfg).row(0, named=True)["total"] == 0


def test_config_defaults_and_forbids_unknown_fields() -> None:
    cfg = PiiConfig()
    assert cfg.max_hits_per_doc == 5 and cfg.entropy_threshold == 3.5 and set(cfg.enabled_types) == set(PII_TYPES)
    with pytest.raises(ValidationError):
        PiiConfig(max_hits=3)


def test_empty_input_and_determinism() -> None:
    empty = redact_pii(make_docs([]), PiiConfig())
    assert empty.kept.height == 0 and empty.verdicts.height == 0
    docs = make_docs([PROSE, LOG_LINES, PAYMENTS, CONFIG_FILE, None])
    first, second = redact_pii(docs, PiiConfig()), redact_pii(docs, PiiConfig())
    assert first.kept.equals(second.kept) and first.verdicts.equals(second.verdicts)


def test_marker_noncharacters_in_input_cannot_confuse_redaction() -> None:
    text, counts = redact_one("odd \ufdd0 8.8.8.8 \ufdd2 text")
    assert text == "odd  <IP_ADDRESS>  text" and counts["ip_address"] == 1


# ----- the independent residual scan -------------------------------------------------------------------------


def test_scan_finds_planted_pii_on_raw_input() -> None:
    raw = pl.Series([s for s, _ in PLANTED])
    scan = scan_pii(raw)
    assert scan.columns == [*PII_TYPES, "total"]
    rows = scan.rows(named=True)
    assert (rows[0]["email"], rows[0]["phone"]) == (1, 3)
    assert rows[1]["secret"] == 2
    assert (rows[2]["email"], rows[2]["ip_address"]) == (1, 2)
    assert (rows[3]["credit_card"], rows[3]["iban"], rows[3]["us_ssn"]) == (2, 1, 1)
    assert rows[4]["secret"] == 7
    assert rows[5]["total"] == 0  # look-alikes are not PII for the scan either


def test_scan_is_zero_on_redacted_output_for_every_sample() -> None:
    samples = [s for s, _ in PLANTED] + [
        "two 4111 1111 1111 1111 5555 5555 5555 4444",
        "+44 20 7946 0958 4111 1111 1111 1111 x",
        "c (415) 555-0132 4111 1111 1111 1111 d",
        "so 10.0.0.1 (415) 555-0132 a 536-22-8714 4111 1111 1111 1111",
    ]
    docs = make_docs(samples)
    result = redact_pii(docs, PiiConfig(max_hits_per_doc=100))
    assert scan_pii(result.kept["text"])["total"].to_list() == [0] * len(samples)
    # On raw input every planted sample but the look-alikes is flagged.
    assert (scan_pii(pl.Series(samples[:6]))["total"] > 0).to_list() == [True] * 5 + [False]


def test_scan_ignores_placeholders() -> None:
    placeholders = " ".join(PLACEHOLDERS.values())
    texts = pl.Series([placeholders, 'api_key = "<SECRET>"', "TOKEN=<SECRET>", None])
    assert scan_pii(texts)["total"].to_list() == [0, 0, 0, 0]


# ----- phones validated by libphonenumber (issue 8) ------------------------------------------------------------


def make_docs_with_language(texts: list[str], languages: list[str | None]) -> pl.DataFrame:
    return make_docs(texts).with_columns(pl.Series("language", languages, dtype=pl.String))


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("Call our London desk on 02079460958 today.", "Call our London desk on <PHONE> today."),  # GB, 11 digits
        ("Das Büro Berlin: 0301234567.", "Das Büro Berlin: <PHONE>."),  # DE, 10 digits with trunk 0
        ("Text me at 4155550132 after six.", "Text me at <PHONE> after six."),  # US, 10 digits
        ("Support 415-555-0132 x1234 (weekdays)", "Support <PHONE> (weekdays)"),  # extension redacted too
        ("From Europe dial 001-415-555-0132.", "From Europe dial <PHONE>."),  # international prefix 00
        ("Sales: +1 (415) 555-0132 ext. 12", "Sales: <PHONE>"),
        ("Zentrale 030 / 123 45 67", "Zentrale <PHONE>"),
        ("Chat on https://wa.me/+14155550132 now", "Chat on https://wa.me/<PHONE> now"),
        ("gateway 10.0.0.1 (415) 555-0132 on call", "gateway 10.0.0.1 <PHONE> on call"),
    ],
)
def test_phone_numbers_without_separators_extensions_and_prefixes_are_redacted(raw: str, expected: str) -> None:
    text, counts = redact_one(raw)
    assert text == expected and counts["phone"] == 1


# Realistic release notes, changelogs and order mails: every number here is a version, date, ISBN, id or
# timestamp, and none may be redacted (or read as residual PII by the scan).
LOOK_ALIKE_NUMBERS = [
    "Release v2024.01.15 ships agent version 1.2.3.4 and build 20240115; see the 2024-01-15 notes and 15.01.2024 memo.",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2 are cited on p. 1204-1209.",
    "Order #100234567 (ref 20240115-0042) shipped; tracking 1Z999AA10123456784, invoice INV-2024-000123.",
    "Request id 550e8400-e29b-41d4-a716-446655440000 at epoch 1705312345 (1705312345678 ms), row 123456789012.",
    "Checksum 3141592653589793, population 8 045 311 447 in 2023, and 1 000 000 downloads.",
    "Timestamps 2024-01-15 10:32:07 and 2024-01-15T10:32:07Z; port range 49152-65535; CVE-2024-12345.",
]


@pytest.mark.parametrize("raw", LOOK_ALIKE_NUMBERS)
def test_versions_dates_isbns_and_ids_are_not_phone_numbers(raw: str) -> None:
    result = redact_pii(make_docs([raw]), PiiConfig(max_hits_per_doc=100))
    assert result.kept["text"].to_list() == [raw]
    assert result.verdicts.height == 0
    assert scan_pii(pl.Series([raw]))["total"].to_list() == [0]


def test_language_adds_its_phone_regions_to_the_configured_ones() -> None:
    texts = ["Llámame al 912 345 678 mañana."] * 2
    result = redact_pii(make_docs_with_language(texts, ["es", "en"]), PiiConfig())
    # Spanish numbers have no trunk prefix: valid for a Spanish document, a bare digit run for an English one.
    assert result.kept["text"].to_list() == ["Llámame al <PHONE> mañana.", texts[1]]
    assert scan_pii(pl.Series(texts), languages=pl.Series(["es", "en"]))["phone"].to_list() == [1, 0]
    only_us = redact_pii(make_docs(["Tel 0301234567"]), PiiConfig(phone_regions=["US"]))
    assert only_us.kept["text"].to_list() == ["Tel 0301234567"]
    with pytest.raises(ValidationError, match="unknown phone region"):
        PiiConfig(phone_regions=["XX"])


# ----- obfuscated emails, labelled SSNs, connection-string passwords ---------------------------------------------


@pytest.mark.parametrize(
    "raw,expected,pii_type",
    [
        ("Write to jane.doe [at] example [dot] com today", "Write to <EMAIL> today", "email"),
        ("contact: jdoe(at)example(dot)co(dot)uk", "contact: <EMAIL>", "email"),
        ("mail jane.doe at example dot com for access", "mail <EMAIL> for access", "email"),
        ("SSN: 536228714 on file", "SSN: <US_SSN> on file", "us_ssn"),
        ("her social security number 536 22 8714.", "her social security number <US_SSN>.", "us_ssn"),
        ("DATABASE_URL=postgres://app:s3cr3t@db.internal:5432/app",
         "DATABASE_URL=postgres://app:<SECRET>@db.internal:5432/app", "secret"),
        ("mysql://root:hunter2@localhost/db", "mysql://root:<SECRET>@localhost/db", "secret"),
        ("mongodb+srv://svc:Pa55word@cluster0.example.net/test", "mongodb+srv://svc:<SECRET>@cluster0.example.net/test",
         "secret"),
        ("redis://default:abc123@cache:6379", "redis://default:<SECRET>@cache:6379", "secret"),
        ("amqp://guest:guest@rabbit:5672/", "amqp://guest:<SECRET>@rabbit:5672/", "secret"),
        ("fetch https://user:pass@host.example.org/x", "fetch https://user:<SECRET>@host.example.org/x", "secret"),
    ],
)
def test_obfuscated_emails_labelled_ssns_and_connection_passwords(raw: str, expected: str, pii_type: str) -> None:
    text, counts = redact_one(raw)
    assert text == expected and counts[pii_type] == 1
    assert scan_pii(pl.Series([raw]))[pii_type].to_list() == [1]
    assert scan_pii(pl.Series([text]))["total"].to_list() == [0]


def test_connection_string_user_that_is_an_email_is_redacted_too() -> None:
    text, counts = redact_one("smtp://alerts@example.com:Xy9pass@mail.example.com:587")
    assert text == "smtp://<EMAIL>:<SECRET>@mail.example.com:587"
    assert (counts["email"], counts["secret"]) == (1, 1)


@pytest.mark.parametrize(
    "raw",
    [
        "Clone git@github.com:org/repo.git or ssh git@gitlab.example.com",  # SSH remotes, not mailboxes
        "We met at the office dot matrix printer; look at example dot com later",  # no separator in the name
        "Set DATABASE_URL=postgres://app:${DB_PASSWORD}@db:5432/app or postgres://app:****@db",  # templates
        "serial 536228714 and SSN-like 000-12-3456; SSN: 912345678",  # unlabelled, or invalid area
        "see https://example.com:8443/path and ftp://ftp.example.org/pub",  # ports are not passwords
    ],
)
def test_obfuscation_and_secret_look_alikes_are_kept(raw: str) -> None:
    result = redact_pii(make_docs([raw]), PiiConfig(max_hits_per_doc=100))
    assert result.kept["text"].to_list() == [raw] and result.verdicts.height == 0


# ----- one PII policy for addresses, detection kept independent --------------------------------------------------

NETWORKING_DOC = """\
3.1. Address Planning

Sites number internal hosts from the private ranges 10.0.0.0/8, 172.16.0.0/12 and 192.168.0.0/16 (RFC 1918);
examples in this document use the documentation blocks 192.0.2.0/24 (for instance 192.0.2.1 and 192.0.2.254),
198.51.100.7 and 203.0.113.0/24, and for IPv6 the prefix 2001:db8::/32, as in 2001:db8:0:1::1.

Every interface configures a link-local address such as fe80::1 (fe80::/10), and hosts that speak IPv6 only
reach IPv4 peers through IPv4-mapped addresses in ::ffff:0:0/96 (for instance ::ffff:192.0.2.128) or through
NAT64 in 64:ff9b::/96. Loopback is 127.0.0.1 and ::1; carrier-grade NAT uses 100.64.0.0/10 and multicast
224.0.0.0/4 and ff02::1. The 6to4 relay prefix is 2002::/16.

In the captured trace the resolver at 81.2.69.142 answered queries from 10.1.2.3 and from 2a00:1450:4001:81b::200e.
"""
NETWORKING_REDACTED = NETWORKING_DOC.replace("81.2.69.142", "<IP_ADDRESS>").replace(
    "2a00:1450:4001:81b::200e", "<IP_ADDRESS>"
)


def test_networking_documentation_keeps_non_public_ranges_and_scans_clean() -> None:
    result = redact_pii(make_docs([NETWORKING_DOC]), PiiConfig())
    assert result.kept["text"].to_list() == [NETWORKING_REDACTED]
    assert result.kept["pii_counts"].to_list()[0]["ip_address"] == 2
    assert not result.verdicts["rule"].is_in(["pii.residual"]).any()
    assert scan_pii(result.kept["text"])["total"].to_list() == [0]
    # The raw document's public addresses are found by the scan: it is not blind to them.
    assert scan_pii(pl.Series([NETWORKING_DOC]))["ip_address"].to_list() == [2]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("prefixes 2002::/16, 2001::/23 and 8.8.8.0/24", "prefixes 2002::/16, 2001::/23 and 8.8.8.0/24"),
        ("hosts 8.8.8.8/32 and 2606:4700::1111", "hosts <IP_ADDRESS> and <IP_ADDRESS>"),
        ("mapped ::ffff:0:0 and nat64 64:ff9b::1", "mapped ::ffff:0:0 and nat64 64:ff9b::1"),
    ],
)
def test_network_prefixes_and_special_purpose_ipv6(raw: str, expected: str) -> None:
    assert redact_one(raw)[0] == expected
    text = redact_one(raw, PiiConfig(keep_network_prefixes=False, max_hits_per_doc=100))[0]
    assert "2002::/16" not in text or raw != expected


def test_redactor_and_scan_agree_on_every_policy_toggle() -> None:
    # The shared policy: whatever the redactor keeps, the scan must not count, for every keep_* combination.
    samples = [NETWORKING_DOC, "lan 10.0.0.1 lo 127.0.0.1 ll 169.254.1.1 fd00::1 fe80::2 doc 192.0.2.1 cg 100.64.0.1"]
    for field in ("keep_private_ips", "keep_loopback_ips", "keep_link_local_ips", "keep_documentation_ips",
                  "keep_reserved_ips", "keep_network_prefixes"):
        cfg = PiiConfig(**{field: False}, max_hits_per_doc=1000)
        result = redact_pii(make_docs(samples), cfg)
        assert result.kept.height == 2, field  # nothing left for the scan: no pii.residual drop
        assert scan_pii(result.kept["text"], cfg)["total"].to_list() == [0, 0], field
        assert result.kept["pii_counts"].to_list()[1]["ip_address"] > 0 or field == "keep_network_prefixes"


# ----- pii.residual and the pii_redacted gate ----------------------------------------------------------------------


def _curate_pii_stage(tmp_path, docs: pl.DataFrame, cfg=None):
    """Run the real pii_redacted stage on ``docs`` (written as the scored stage) and its real gate."""
    from curation_platform.audit import stage_gate, stage_residue
    from curation_platform.config import CurationConfig
    from curation_platform.ledger import ledger_rows
    from curation_platform.pipeline import run_stage
    from curation_platform.records import empty_verdicts
    from curation_platform.workspace import Workspace, write_parquet_atomic

    ws, cfg = Workspace(tmp_path), cfg or CurationConfig()
    write_parquet_atomic(docs, ws.stage_path("scored", "d1"))
    write_parquet_atomic(ledger_rows(stage="scored", drop="d1", input_ids=docs["doc_id"], verdicts=empty_verdicts(),
                                     run_id="t", config_hash=cfg.drop_stages_hash), ws.ledger_path("scored", "d1"))
    summary = run_stage(ws, cfg, "pii_redacted", "d1")
    gate = stage_gate(ws, cfg, "pii_redacted", "scored", "d1", stage_residue(ws, cfg, "pii_redacted", "d1"))
    ledger = pl.read_parquet(ws.ledger_path("pii_redacted", "d1"))
    return summary, gate, ledger


def _drop_of_documents(n: int, phone_every: int = 0) -> pl.DataFrame:
    texts = [
        f"Meeting notes {i}: the team reviewed the roadmap and agreed on the next steps for release 3.{i}."
        + (" Call Dana on 415-555-0132 for details." if phone_every and i % phone_every == 0 else "")
        for i in range(n)
    ]
    docs = make_docs(texts).with_columns(
        pl.format("d1-{}", pl.int_range(pl.len())).alias("doc_id"), pl.lit("d1").alias("drop"),
        pl.format("{}", pl.int_range(pl.len())).alias("source_id"), pl.lit("CC0-1.0").alias("license"),
    )
    return docs.with_columns(pl.lit("en").alias("language"))


def test_one_odd_document_is_dropped_as_residual_and_does_not_block_the_drop(tmp_path) -> None:
    docs = _drop_of_documents(300, phone_every=10)
    # The odd one: an order "number" that the redactor keeps as an id (glued to "#") while the independent
    # scan's matcher reads a valid US phone number in it.
    odd = "d1-7"
    docs = docs.with_columns(
        pl.when(pl.col("doc_id") == odd).then(pl.lit("Your order #4155550132 has shipped.")).otherwise("text")
        .alias("text")
    )
    summary, gate, ledger = _curate_pii_stage(tmp_path, docs)
    assert summary.per_rule == {"pii.residual": 1} and summary.kept == 299
    row = ledger.filter(pl.col("doc_id") == odd).row(0, named=True)
    assert (row["verdict"], row["rule"], row["threshold"]) == ("drop", "pii.residual", "> 0")
    assert "phone=1" in row["detail"]  # what `curate explain` shows for the document
    assert all(r.passed for r in gate), [r.failures for r in gate]
    # The 30 real numbers were redacted, not dropped.
    assert ledger.filter(pl.col("rule") == "pii.phone").height == 30


def test_a_systematically_broken_redactor_blocks_the_drop(tmp_path, monkeypatch) -> None:
    import curation_platform.ops.pii as pii

    docs = _drop_of_documents(300, phone_every=10)
    # A redactor whose phone pattern never matches (a regression), while the scan still finds the numbers.
    monkeypatch.setattr(pii, "_PHONE", r"(?P<pre>\uFFFE)?(?P<val>\uFFFE\uFFFE)")
    summary, gate, _ = _curate_pii_stage(tmp_path, docs)
    assert summary.per_rule == {"pii.residual": 30}
    failures = [f for r in gate for f in r.failures]
    assert any("residual_rate_above_bound" in f for f in failures), failures


def test_stage_output_with_pii_fails_the_gate_rescan(tmp_path) -> None:
    from curation_platform.audit import stage_residue
    from curation_platform.config import CurationConfig

    # The stage ran without phone redaction (and so without scanning phones); the gate's config includes them.
    docs = _drop_of_documents(50, phone_every=10)
    stage_cfg = CurationConfig(pii=PiiConfig(enabled_types=[t for t in PII_TYPES if t != "phone"]))
    _curate_pii_stage(tmp_path, docs, stage_cfg)
    from curation_platform.workspace import Workspace

    residual = stage_residue(Workspace(tmp_path), CurationConfig(), "pii_redacted", "d1")
    assert int((residual["residual_pii"] > 0).sum()) == 5


def test_networking_documentation_passes_the_real_gate(tmp_path) -> None:
    docs = _drop_of_documents(20).with_columns(pl.lit(NETWORKING_DOC).alias("text"))
    summary, gate, ledger = _curate_pii_stage(tmp_path, docs)
    assert summary.kept == 20 and summary.per_rule == {}
    assert all(r.passed for r in gate), [r.failures for r in gate]
    assert ledger.filter(pl.col("rule") == "pii.ip_address")["value"].to_list() == [2.0] * 20
