"""What counts as PII: the one policy the redactor (``pii.redact_pii``) and the residual scanner (``pii.scan_pii``)
both apply. Only decisions live here (address ranges, phone regions, SSN rules, schemes, non-personal mail
shapes); each side finds and parses candidates with its own code, so a redactor bug still shows in the scan.
"""

from __future__ import annotations

import re
from typing import Iterable

import phonenumbers

# ----- IP addresses ------------------------------------------------------------------------------------------
# Every address is public (PII) unless one of these ranges holds it; the first category that holds it decides,
# and each category is kept (not PII) when its ``keep_<category>_ips`` setting is on. Sources: IANA IPv4/IPv6
# special-purpose address registries (RFC 6890), RFC 1918, RFC 4193, RFC 5737, RFC 3849, RFC 9637.
IP_CATEGORIES: tuple[str, ...] = ("private", "loopback", "link_local", "documentation", "reserved")
NON_PUBLIC_NETWORKS: dict[str, tuple[str, ...]] = {
    "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
    "loopback": ("127.0.0.0/8", "::1/128"),
    "link_local": ("169.254.0.0/16", "fe80::/10"),
    "documentation": ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"),
    "reserved": (
        "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/3",
        # IPv6 outside global unicast 2000::/3 (unspecified, IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96,
        # multicast ff00::/8, ...) and the IETF protocol assignments 2001::/23.
        "::/3", "4000::/2", "8000::/1", "2001::/23",
    ),
}  # fmt: skip


def kept_ip_categories(cfg) -> set[str]:
    """The categories of non-public addresses that stay in the text under ``cfg`` (a ``PiiConfig``)."""
    return {category for category in IP_CATEGORIES if getattr(cfg, f"keep_{category}_ips")}


# ----- phone numbers -----------------------------------------------------------------------------------------
# Regions whose numbers are checked for a document in each language (fastText lid.176 ISO 639-1 labels), on top
# of ``PiiConfig.phone_regions``. A number written with "+" or an international prefix is valid in any region.
LANGUAGE_PHONE_REGIONS: dict[str, tuple[str, ...]] = {
    "en": ("US", "GB", "CA", "AU", "IE", "NZ", "IN"), "de": ("DE", "AT", "CH"), "fr": ("FR", "BE", "CH", "CA"),
    "es": ("ES", "MX", "AR", "CO"), "it": ("IT", "CH"), "nl": ("NL", "BE"), "pt": ("PT", "BR"), "pl": ("PL",),
    "sv": ("SE",), "da": ("DK",), "no": ("NO",), "fi": ("FI",), "cs": ("CZ",), "ja": ("JP",), "zh": ("CN", "TW"),
    "ko": ("KR",), "ru": ("RU",), "tr": ("TR",),
}  # fmt: skip


def phone_regions(language: str | None, default_regions: Iterable[str]) -> tuple[str, ...]:
    """Regions to validate a document's national-format numbers in: the configured defaults, then its language's."""
    regions = list(dict.fromkeys(default_regions))
    for region in LANGUAGE_PHONE_REGIONS.get(language or "", ()):
        if region not in regions:
            regions.append(region)
    return tuple(regions)


NANP_COUNTRY_CODE = 1
# Numbers right after these labels are book and serial numbers ("ISBN 0-306-40615-2" is also a valid FR number).
NOT_PHONE_LABELS: tuple[str, ...] = ("isbn", "isbn-10", "isbn-13", "issn", "doi")
# How NANP numbers are written: digit groups of 3-3-4 (optionally after a "1"), 3-7 or all ten together.
_NANP_GROUPINGS = {(10,), (11,), (3, 7), (3, 3, 4), (1, 3, 3, 4), (1, 10)}
_EXTENSION = re.compile(r"(?i)\s*(?:x|ext\.?|extension)\s*[0-9]+\s*$")


def phone_number_is_pii(number: phonenumbers.PhoneNumber, raw: str, region: str) -> bool:
    """Whether a number libphonenumber holds valid (parsed from ``raw`` with default ``region`` and
    ``keep_raw_input``) counts as a phone number in text.

    Written with "+" or an international prefix (00, 011): yes. In national format: only when written the way the
    region writes it, with its trunk prefix where it has one (DE "030 1234567", GB "020 7946 0958"), and for NANP
    numbers in NANP grouping (415-555-0132, (415) 555-0132, 1-800-555-0199, 4155550132). Bare digit runs that are
    valid only without a trunk prefix (DE accepts almost any 6 to 11 digits) or in other groupings
    ("2024-01-15 10") are ids, dates and counters far more often than phone numbers.
    """
    source = number.country_code_source
    written = _EXTENSION.sub("", raw)
    groups = tuple(len(g) for g in re.findall(r"[0-9]+", written))
    if source == phonenumbers.CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN:
        # "1-800-555-0199" in a NANP region; "4930123456" read as +49 is a bare id.
        region_code = phonenumbers.country_code_for_region(region)
        return number.country_code == region_code == NANP_COUNTRY_CODE and groups in _NANP_GROUPINGS
    if source == phonenumbers.CountryCodeSource.FROM_DEFAULT_COUNTRY:
        if number.country_code == NANP_COUNTRY_CODE:
            return groups in _NANP_GROUPINGS
        trunk = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
        return not trunk or "".join(re.findall(r"[0-9]+", written)).startswith(trunk)
    return True

# ----- e-mail ------------------------------------------------------------------------------------------------
# "@" followed by a file extension is a retina asset name (icon@2x.png), not a mailbox.
FILE_EXTENSION_TLDS: frozenset[str] = frozenset(
    ["png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "ts", "py", "json", "md"]
)
# SSH service accounts of source hosts (git@github.com:org/repo.git): a remote, not a person's mailbox.
SERVICE_LOCAL_PARTS: frozenset[str] = frozenset(["git", "hg", "svn"])
# Top-level domains accepted in the spelled-out form "name at example dot com" (the bracketed forms accept any).
SPELLED_EMAIL_TLDS: tuple[str, ...] = (
    "com", "org", "net", "edu", "gov", "io", "info", "biz", "co", "uk", "de", "fr", "es", "it", "nl", "eu", "us",
    "ca", "au", "ch", "at", "be", "se", "no", "dk", "fi", "pl", "ru", "cn", "jp", "in", "br",
)  # fmt: skip

# ----- US social security numbers --------------------------------------------------------------------------
# The SSA never issues area 000, 666 or 900-999, group 00 or serial 0000. Undashed nine-digit numbers count only
# right after one of these labels (case-insensitive); bare nine-digit numbers are too ambiguous.
SSN_INVALID_AREAS: tuple[str, ...] = ("000", "666")
SSN_INVALID_AREA_FIRST_DIGIT = "9"
SSN_LABELS: tuple[str, ...] = ("ssn", "ss#", "social security number", "social security no", "social security #",
                               "social security")

# ----- secrets -----------------------------------------------------------------------------------------------
# URL schemes whose ``scheme://user:password@host`` password is a secret (and the user too when it is an address).
CONNECTION_SCHEMES: tuple[str, ...] = (
    "postgres", "postgresql", "mysql", "mariadb", "mssql", "sqlserver", "oracle", "mongodb", "mongodb+srv",
    "redis", "rediss", "amqp", "amqps", "http", "https", "ftp", "ftps", "sftp", "smtp", "smtps", "imap", "imaps",
    "ldap", "ldaps", "clickhouse", "snowflake",
)  # fmt: skip
# Passwords that are template variables or masks are not secrets: ${DB_PASSWORD}, $PASS, %s, {password}, ****,
# <password>.
PASSWORD_PLACEHOLDER = r"^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|%s|\{\{?[^{}]*\}?\}|\*+|x+|<[^<>]*>|\.\.\.)$"
