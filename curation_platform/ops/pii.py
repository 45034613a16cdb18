"""PII redaction: emails, phones, public IPs, cards, IBANs, US SSNs and secrets become typed placeholders.

Every detector is a Rust-regex pattern run as a Polars column operation. Detectors that need a check a regex
cannot express (Luhn, IBAN mod-97, IP ranges, SSN areas, Shannon entropy) work in three columnar steps:

1. ``str.replace_all`` wraps every candidate match in marker characters, so each occurrence is pinned to its
   exact position (no later substring replacement can touch a look-alike elsewhere in the text);
2. the marked candidates of the whole batch are extracted, deduplicated and validated with Polars expressions
   (digits exploded into long frames for Luhn, mod-97 and entropy);
3. ``str.replace_many`` swaps the validated marked strings for their placeholder and one ``str.replace_all``
   unwraps the rejected ones.

Validation depends only on the candidate string (plus an optional prefix such as ``password = "``; for phones
also the document's regions, so that detector runs once per distinct region set), so one batch-wide table of
validated candidates is exact for every document. Chat documents are redacted in ``text`` and
in every ``messages[].content``. A document with more PII hits than ``max_hits_per_doc`` is dropped with
``pii.too_many_hits`` instead (Dolma); redacted documents get one ``redact`` verdict per type.

What counts as PII is one policy, ``pii_policy``, applied by both the redactor and the residual scan:
non-public address ranges (private, loopback, link-local, documentation, reserved, including IPv6 prefixes such
as ``::ffff:0:0/96``) and CIDR network prefixes are kept; phone numbers are what libphonenumber holds valid in the
document's regions (``phone_regions`` plus its language's), in national format only with the region's trunk
prefix and NANP numbers only in NANP grouping; SSNs are dashed, or undashed right after a label ("SSN:"); mail
includes "[at]"/"(at)" obfuscations; passwords in ``scheme://user:password@host`` are secrets. Phone candidates
are any run of 7 to 17 digits; only those few strings are parsed in Python (``phonenumbers.parse`` +
``is_valid_number``), once per distinct region set. A 4-part number after ``version``/``ver``/``release``/
``build`` or a ``v`` is a version, not an address; every other public-range dotted quad (even ``1.2.3.4`` in
prose) is an IP. Card numbers need a 2-6 major industry digit as well as a valid Luhn checksum.

``scan_pii`` is the independent second opinion: it finds candidates with its own patterns (token based for
emails and IPs), parses addresses with Python's ``ipaddress`` and finds phone numbers with libphonenumber's
``PhoneNumberMatcher`` inside digit runs. ``redact_pii`` runs it on its own output and drops every document it
still flags with rule ``pii.residual``; the ``pii_redacted`` gate bounds that rate
(``gates.max_residual_pii_rate``) and re-scans the stage output.

The markers are Unicode noncharacters U+FDD0..U+FDD2 (reserved for internal use, never meaningful in text);
any that appear in the input are removed before redaction.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal

import phonenumbers
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from curation_platform.ops import pii_policy as policy
from curation_platform.records import DROP, REDACT, StageResult, split_by_verdicts

PiiType = Literal["email", "phone", "ip_address", "credit_card", "iban", "us_ssn", "secret"]
PII_TYPES: tuple[str, ...] = ("email", "phone", "ip_address", "credit_card", "iban", "us_ssn", "secret")
PLACEHOLDERS: dict[str, str] = {t: f"<{t.upper()}>" for t in PII_TYPES}
TOO_MANY_RULE = "pii.too_many_hits"
# Redacted documents in which the independent scan still finds PII are dropped with this rule.
RESIDUAL_RULE = "pii.residual"
PII_COUNTS_DTYPE = pl.Struct({t: pl.Int64 for t in PII_TYPES})

_DEFAULT_SECRET_NAMES = [
    "password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "access_key", "auth", "authorization",
    "private_key", "credentials",
]


class PiiConfig(BaseModel):
    """PII redaction settings. Types and the hit limit follow Dolma's PII pass (Soldaini et al. 2024)."""

    model_config = ConfigDict(extra="forbid")

    # Dolma redacts emails, phones and IPs; cards, IBANs, SSNs and secrets follow presidio-analyzer's recognizers.
    enabled_types: list[PiiType] = Field(default_factory=lambda: list(PII_TYPES))
    # Dolma (Soldaini et al. 2024) drops documents with more than 5 PII spans rather than redacting them.
    max_hits_per_doc: int = Field(default=5, ge=0)
    # 3.5 bits/char: random base62/base64 tokens of 16-20 chars measure 3.75-4.0 (plug-in entropy is capped at
    # log2(len) = 4 for 16 chars, so detect-secrets' 4.5 never fires there) while placeholder values and words
    # such as "your_api_key_here" (3.3) or "changeme_changeme" (2.9) stay below.
    entropy_threshold: float = Field(default=3.5, ge=0)
    # Hex-only values (digits and a-f) carry at most 4 bits/char: detect-secrets' HexHighEntropyString uses 3.0.
    hex_entropy_threshold: float = Field(default=3.0, ge=0)
    # Shortest assigned value that can be a secret (the brief and truffleHog both use 16+ characters).
    min_secret_length: int = Field(default=16, ge=1)
    # Names whose assigned value is checked for entropy; "_" also matches "-" or nothing (api_key, api-key, apikey).
    secret_names: list[str] = Field(default_factory=lambda: list(_DEFAULT_SECRET_NAMES))
    # Non-public address ranges are kept (not personal): RFC 1918 / RFC 4193 private ranges,
    keep_private_ips: bool = True
    # 127/8 (IPv6 ::1 never starts a candidate, so it is always kept),
    keep_loopback_ips: bool = True
    # 169.254/16 and fe80::/10,
    keep_link_local_ips: bool = True
    # RFC 5737 192.0.2/24, 198.51.100/24, 203.0.113/24 and RFC 3849 / RFC 9637 2001:db8::/32, 3fff::/20,
    keep_documentation_ips: bool = True
    # and the rest of the special-purpose registry: 0/8, 100.64/10, 192.0.0/24, 198.18/15, 224/4 and up; IPv6
    # outside 2000::/3.
    keep_reserved_ips: bool = True
    # A 4-part number after "version"/"ver"/"release"/"build" or a "v" is a version string, not an address.
    keep_version_numbers: bool = True
    # CIDR notation shorter than a host (10.0.0.0/8, 2002::/16) names a network in routing text, not a person's
    # host; ranges themselves are in pii_policy.NON_PUBLIC_NETWORKS.
    keep_network_prefixes: bool = True
    # Regions whose national-format phone numbers are recognised in every document (ISO 3166 codes, as
    # libphonenumber names them); a document's language adds its own (pii_policy.LANGUAGE_PHONE_REGIONS).
    # Numbers written with "+" or an international prefix are recognised for every country.
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR"])

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        unknown = [r for r in regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone region(s) {', '.join(unknown)}; use ISO 3166 codes such as US, GB, DE")
        return regions


# ---------------------------------------------------------------------------------------------------------------
# Markers: START prefix MID value END. The prefix (e.g. `password = "`) survives redaction; the value does not.
_START, _MID, _END = "\ufdd0", "\ufdd1", "\ufdd2"
_MARKED = f"{_START}[^{_END}]*{_END}"
_MARK_PARTS = f"{_START}(?P<pre>[^{_MID}]*){_MID}(?P<val>[^{_END}]*){_END}"
_MARKER_CHARS = f"[{_START}{_MID}{_END}]"

# ----- patterns (Rust regex: no lookaround, no backreferences) --------------------------------------------------
# Secrets with a recognisable shape need no validation beyond the pattern.
_PRIVATE_KEY = (
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\z)"
)
_TOKEN_SECRETS = "|".join(
    [
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",  # AWS access key ids
        r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",  # GitHub tokens (personal, OAuth, user, server, refresh)
        r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",  # GitHub fine-grained tokens
        r"\bxox[baprs]-[A-Za-z0-9-]{10,250}",  # Slack tokens
        r"\bAIza[0-9A-Za-z_\-]{35}",  # Google API keys
        r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,247}\b",  # Stripe secret and restricted keys
        r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}",  # JSON Web Tokens
    ]
)
# Unicode-aware local part and domain; the validator rejects file names such as icon@2x.png.
_EMAIL = r"(?P<val>[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)+)"
_IBAN = r"(?P<val>\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b)"
# A run of 4-digit blocks is taken whole (up to 6 blocks) and is a card when any 4 consecutive blocks are, so a
# card printed right after another number ("... 0958 4111 1111 1111 1111") is not missed by misalignment; only
# those 4 blocks are replaced. Digits right after "+" are an international phone number, not a card (``pre``).
_CARD = (
    r"(?P<pre>\+)?(?P<val>\b(?:3[47][0-9]{2}[ \-]?[0-9]{6}[ \-]?[0-9]{5}"  # Amex 4-6-5
    r"|3[0689][0-9]{2}[ \-]?[0-9]{6}[ \-]?[0-9]{4}"  # Diners 4-6-4
    r"|[0-9]{4}(?:[ \-][0-9]{4}){3,5}"  # 4-4-4-4 blocks
    r"|[0-9]{13,19})\b)"  # unseparated
)
_SSN = r"(?P<val>\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b)"
# Undashed (or space-grouped) SSNs only right after a label such as "SSN:" or "social security number".
_SSN_LABEL = "|".join(re.escape(label).replace(r"\ ", r"\s+") for label in sorted(policy.SSN_LABELS, key=len)[::-1])
_SSN_LABELLED = (
    rf"(?P<pre>(?i:\b(?:{_SSN_LABEL})[\s:=#\-]{{0,4}}(?:(?:is|was|number|no\.?)\s*[:#]?\s*)?))"
    r"(?P<val>\b[0-9]{3}[ \-]?[0-9]{2}[ \-]?[0-9]{4}\b)"
)
# Obfuscated addresses: "name [at] example [dot] com", "name(at)example(dot)com", and the spelled-out
# "first.last at example dot com" only with a separator in the name and a known top-level domain (unambiguous).
_AT, _DOT = r"\s*[\[({<]\s*at\s*[\])}>]\s*", r"\s*[\[({<]\s*dot\s*[\])}>]\s*"
_EMAIL_BRACKETED = rf"(?P<val>(?i:[\w.%+\-]+{_AT}[\w\-]+(?:(?:{_DOT}|\.)[\w\-]+)+))"
_SPELLED_TLDS = "|".join(policy.SPELLED_EMAIL_TLDS)
_EMAIL_SPELLED = (
    rf"(?P<val>(?i:\b[\w+\-]*[._+0-9][\w.+\-]* at [\w\-]+(?: dot [\w\-]+)* dot (?:{_SPELLED_TLDS}))\b)"
)
# scheme://user:password@host: the password (and "@", put back by the rewrite) is replaced.
_SCHEMES = "|".join(re.escape(x) for x in sorted(policy.CONNECTION_SCHEMES, key=len, reverse=True))
_CONNECTION = rf"(?P<pre>(?i:\b(?:jdbc:)?(?:{_SCHEMES}))://[^\s:/]+:)(?P<val>[^\s/@]+@)"
# Every dotted run of 4+ numbers is a candidate so that 5-part versions and 1100.2.3.4 are rejected whole.
_IPV4 = (
    r"(?:(?P<pre>(?i:\b(?:version|ver|release|build)\b[ :.]*|\bv))|\b)(?P<val>[0-9]+(?:\.[0-9]+){3,}(?:/[0-9]{1,3})?)\b"
)
# A lone "X::" (2002::/16) is an address too; "/len" makes it a network prefix (see keep_network_prefixes).
# So is a leading "::" form (::1, ::ffff:0:0); the bare "::" is punctuation, not an address mention.
_IPV6 = (
    r"(?P<val>(?i:\b[0-9a-f]{1,4}(?:(?:::?[0-9a-f]{1,4}){1,7}(?:::)?|::)|::[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})"
    r"[0-9A-Za-z_]*(?:/[0-9]{1,3}\b)?)"
)
# Phones: any run of 7 to 17 digits with separators (and "+", "(area)", "(0)", an extension) is a candidate;
# libphonenumber decides (``_phone_validator``). A run glued to "-", "/", "#", "@" or "." (UUIDs, paths,
# order #123, dotted ids) or right after "ISBN" is captured in ``pre`` and rejected unless it starts with "+";
# runs glued to letters never start at a word boundary.
_PHONE = (
    r"(?P<pre>[\-/#@.]|(?i:\b(?:" + "|".join(policy.NOT_PHONE_LABELS) + r")\b[ :]*))?"
    r"(?P<val>(?:\+[ ]?|\(|\b)[0-9](?:[ .\-/()\p{Pd}]{0,3}[0-9]){6,16}\b"
    r"(?:[ ]?(?i:x|ext\.?|extension)[ ]?[0-9]{1,6}\b)?)"
)
# The fewest digits (extension excluded) worth asking libphonenumber about.
_PHONE_MIN_DIGITS = 7

_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_LETTER_VALUES = {chr(c): str(c - ord("A") + 10) for c in range(ord("A"), ord("Z") + 1)}
_POW10_MOD97 = pl.DataFrame({"rpos": range(128), "pow": [pow(10, e, 97) for e in range(128)]},
                            schema={"rpos": pl.Int64, "pow": pl.Int64})


# ----- validators: Series of candidate strings in, Boolean Series out (shared with scan_pii) -----------------
def _long_chars(values: pl.Series) -> pl.DataFrame:
    """One row per character: i (candidate index), ch, rpos (position counted from the end, 0-based)."""
    return (
        pl.DataFrame({"ch": values.cast(pl.String)})
        .with_row_index("i")
        .with_columns(pl.col("ch").str.split(""))
        .explode("ch")
        .with_columns(rpos=pl.int_range(pl.len(), dtype=pl.Int64).reverse().over("i"))
    )


def _per_candidate(values: pl.Series, agg: pl.Expr, long: pl.DataFrame) -> pl.Series:
    """Aggregate a long character frame back to one value per candidate, in candidate order."""
    out = long.group_by("i").agg(agg.alias("r"))
    index = pl.DataFrame({"i": pl.int_range(len(values), dtype=pl.UInt32, eager=True)})
    return index.join(out, on="i", how="left").sort("i")["r"]


def luhn_valid(digits: pl.Series) -> pl.Series:
    """True where a string of digits passes the Luhn checksum (credit cards, ISO/IEC 7812)."""
    if len(digits) == 0:
        return pl.Series(dtype=pl.Boolean)
    long = _long_chars(digits).with_columns(v=pl.col("ch").cast(pl.Int64, strict=False))
    # Every second digit from the right is doubled; a doubled digit above 9 counts as its digit sum.
    doubled = pl.when(pl.col("rpos") % 2 == 1).then(pl.col("v") * 2).otherwise(pl.col("v"))
    term = pl.when(doubled > 9).then(doubled - 9).otherwise(doubled)
    total = _per_candidate(digits, term.sum(), long)
    ok = digits.str.contains(r"^[0-9]+$").fill_null(False)
    return (ok & (total % 10 == 0)).fill_null(False).alias("valid")


def iban_valid(values: pl.Series) -> pl.Series:
    """True where a (possibly space-grouped) IBAN has its country's length and a mod-97 remainder of 1."""
    if len(values) == 0:
        return pl.Series(dtype=pl.Boolean)
    compact = values.str.replace_all(" ", "", literal=True).str.to_uppercase()
    country = compact.str.slice(0, 2)
    length_ok = country.replace_strict(_IBAN_LENGTHS, default=-1, return_dtype=pl.Int64) == compact.str.len_chars()
    # ISO 13616: move the first four characters to the end, letters become 10..35, the number mod 97 must be 1.
    numeric = (compact.str.slice(4) + compact.str.slice(0, 4)).str.replace_many(_LETTER_VALUES)
    long = _long_chars(numeric).with_columns(v=pl.col("ch").cast(pl.Int64, strict=False))
    long = long.join(_POW10_MOD97, on="rpos", how="left")
    remainder = _per_candidate(numeric, (pl.col("v") * pl.col("pow")).sum() % 97, long)
    shape_ok = compact.str.contains(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]+$")
    return (length_ok & shape_ok & (remainder == 1)).fill_null(False).alias("valid")


def shannon_entropy(values: pl.Series) -> pl.Series:
    """Shannon entropy in bits per character of each string (0.0 for empty strings)."""
    if len(values) == 0:
        return pl.Series(dtype=pl.Float64)
    long = _long_chars(values).filter(pl.col("ch") != "")
    per_char = long.group_by("i", "ch").agg(n=pl.len())
    per_char = per_char.with_columns(p=pl.col("n") / pl.col("n").sum().over("i"))
    out = per_char.group_by("i").agg(h=-(pl.col("p") * pl.col("p").log(2)).sum())
    index = pl.DataFrame({"i": pl.int_range(len(values), dtype=pl.UInt32, eager=True)})
    return index.join(out, on="i", how="left").sort("i")["h"].fill_null(0.0).alias("entropy")


def _card_number_valid(digits: pl.Series) -> pl.Series:
    length = digits.str.len_chars()
    # Major industry identifier 2-6 (Mastercard 2-series, Amex/Diners/JCB, Visa, Mastercard, Discover/UnionPay).
    iin_ok = digits.str.contains(r"^[2-6]")
    return (iin_ok & (length >= 13) & (length <= 19) & luhn_valid(digits)).fill_null(False)


def _card_window(values: pl.Series) -> pl.Series:
    """Index of the first run of 4 blocks that is a card in a run of 5-6 blocks of 4 digits, else null."""
    blocks = values.str.replace_all("-", " ", literal=True).str.split(" ")
    is_run = blocks.list.eval(pl.element().str.len_chars() == 4).list.all() & (blocks.list.len() > 4)
    window = pl.Series([None] * len(values), dtype=pl.Int64)
    for start in reversed(range(3)):  # runs of up to 6 blocks hold 3 windows; the earliest valid one wins
        digits = blocks.list.slice(start, 4).list.join("")
        ok = (is_run & (digits.str.len_chars() == 16) & _card_number_valid(digits)).fill_null(False)
        window = pl.select(pl.when(ok).then(start).otherwise(window)).to_series()
    return window


def _card_valid(values: pl.Series, prefixes: pl.Series, cfg: PiiConfig) -> pl.Series:
    whole = _card_number_valid(values.str.replace_all(r"[ \-]", ""))
    after_plus = prefixes.fill_null("").str.len_chars() > 0
    return ((whole | _card_window(values).is_not_null()) & ~after_plus).fill_null(False)


def _card_rewrite(values: pl.Series, placeholder: str) -> pl.Series:
    # Blocks are 4 digits plus one separator, so window w spans characters [5w, 5w + 19).
    frame = pl.DataFrame({"v": values, "w": _card_window(values)})
    return frame.select(
        pl.when(pl.col("w").is_null())
        .then(pl.lit(placeholder))
        .otherwise(
            pl.col("v").str.slice(0, pl.col("w") * 5)
            + pl.lit(placeholder)
            + pl.col("v").str.slice(pl.col("w") * 5 + 19)
        )
    ).to_series()


def _ssn_valid(values: pl.Series, cfg: PiiConfig) -> pl.Series:
    digits = values.str.replace_all(r"[^0-9]", "")
    area, group, serial = digits.str.slice(0, 3), digits.str.slice(3, 2), digits.str.slice(5, 4)
    area_ok = ~area.is_in(list(policy.SSN_INVALID_AREAS)) & ~area.str.starts_with(policy.SSN_INVALID_AREA_FIRST_DIGIT)
    return ((digits.str.len_chars() == 9) & area_ok & (group != "00") & (serial != "0000")).fill_null(False)


def _deobfuscate_email(values: pl.Series) -> pl.Series:
    return (
        values.str.replace_all(rf"(?i){_AT}| at ", "@").str.replace_all(rf"(?i){_DOT}| dot ", ".")
    )


def _password_valid(values: pl.Series, cfg: PiiConfig) -> pl.Series:
    password = values.str.strip_suffix("@")
    return ((password.str.len_chars() > 0) & ~password.str.contains(policy.PASSWORD_PLACEHOLDER)).fill_null(False)


def _network_ranges(version: int) -> list[tuple[str, int | str, int | str]]:
    """(category, first, last) of every policy range: integers for IPv4, 32-digit hex strings for IPv6."""
    import ipaddress

    ranges = []
    for category in policy.IP_CATEGORIES:
        for cidr in policy.NON_PUBLIC_NETWORKS[category]:
            net = ipaddress.ip_network(cidr)
            if net.version != version:
                continue
            first, last = int(net.network_address), int(net.broadcast_address)
            ranges.append((category, first, last) if version == 4 else (category, f"{first:032x}", f"{last:032x}"))
    return ranges


_IPV4_RANGES, _IPV6_RANGES = _network_ranges(4), _network_ranges(6)


def _ip_is_pii(address: pl.Expr, prefix_len: pl.Expr, width: int, ranges: list, cfg: PiiConfig) -> pl.Expr:
    """Whether a parsed address (Int64 for IPv4, 32-digit hex for IPv6) is PII under the shared policy."""
    chain = None
    for category, first, last in ranges:  # first range that holds the address decides its category
        inside = (address >= first) & (address <= last)
        chain = (pl.when(inside) if chain is None else chain.when(inside)).then(pl.lit(category))
    category = chain.otherwise(pl.lit(None, dtype=pl.String))
    kept = category.is_in(sorted(policy.kept_ip_categories(cfg)))
    network = prefix_len.is_not_null() & (prefix_len < width) & pl.lit(cfg.keep_network_prefixes)
    return ~kept.fill_null(False) & ~network


def _ipv4_redact(values: pl.Series, prefixes: pl.Series, cfg: PiiConfig) -> pl.Series:
    frame = pl.DataFrame({"v": values, "pre": prefixes.fill_null("")}).with_columns(
        parts=pl.col("v").str.split("/").list.first().str.split("."),
        plen=pl.col("v").str.split("/").list.get(1, null_on_oob=True).cast(pl.Int64, strict=False),
    )
    octet_text = [pl.col("parts").list.get(k, null_on_oob=True) for k in range(4)]
    octets = [o.cast(pl.Int64, strict=False) for o in octet_text]
    no_padding = pl.all_horizontal([(o.str.len_chars() == 1) | ~o.str.starts_with("0") for o in octet_text])
    well_formed = (pl.col("parts").list.len() == 4) & pl.all_horizontal([o <= 255 for o in octets]) & no_padding
    address = octets[0] * 2**24 + octets[1] * 2**16 + octets[2] * 2**8 + octets[3]
    redact = _ip_is_pii(address, pl.col("plen"), 32, _IPV4_RANGES, cfg)
    if cfg.keep_version_numbers:
        redact = redact & (pl.col("pre").str.len_chars() == 0)
    return frame.select((well_formed & redact).fill_null(False)).to_series()


def _ipv6_redact(values: pl.Series, cfg: PiiConfig) -> pl.Series:
    # Expand "::" to the missing zero groups and left-pad every group: 32 hex digits compare like the number.
    frame = pl.DataFrame({"v": values.str.to_lowercase()}).with_columns(
        addr=pl.col("v").str.split("/").list.first(),
        plen=pl.col("v").str.split("/").list.get(1, null_on_oob=True).cast(pl.Int64, strict=False),
    )
    non_empty = pl.element().filter(pl.element() != "")
    halves = pl.col("addr").str.split("::")
    frame = frame.with_columns(
        n_compressions=pl.col("addr").str.count_matches("::", literal=True),
        head=halves.list.first().str.split(":").list.eval(non_empty),
        tail=pl.when(pl.col("addr").str.contains("::", literal=True)).then(halves.list.last())
        .otherwise(pl.lit("")).str.split(":").list.eval(non_empty),
        all_hex=pl.col("addr").str.split(":").list.eval(pl.element().str.contains(r"^[0-9a-f]{0,4}$")).list.all(),
    ).with_columns(n_groups=pl.col("head").list.len() + pl.col("tail").list.len())
    well_formed = (
        pl.col("all_hex")
        & ~pl.col("addr").str.contains(":::", literal=True)
        & (((pl.col("n_compressions") == 0) & (pl.col("n_groups") == 8))
           | ((pl.col("n_compressions") == 1) & (pl.col("n_groups") <= 7)))
        & ~pl.col("addr").str.contains(r"^:[^:]|[^:]:$")
    )
    fill = pl.lit("0").repeat_by((8 - pl.col("n_groups")).clip(lower_bound=0))
    address = pl.concat_list("head", fill, "tail").list.eval(pl.element().str.zfill(4)).list.join("")
    redact = _ip_is_pii(address, pl.col("plen"), 128, _IPV6_RANGES, cfg)
    return frame.select((well_formed & redact).fill_null(False)).to_series()


def _email_valid(values: pl.Series, cfg: PiiConfig) -> pl.Series:
    domain = values.str.split("@").list.last()
    tld = domain.str.split(".").list.last().str.to_lowercase()
    local = values.str.split("@").list.first()
    return (
        tld.str.contains(r"^[^\W\d_]{2,}$")
        & ~tld.is_in(sorted(policy.FILE_EXTENSION_TLDS))
        & ~local.str.to_lowercase().is_in(sorted(policy.SERVICE_LOCAL_PARTS))
        & ~local.str.starts_with(".")
        & ~local.str.ends_with(".")
    ).fill_null(False)


@functools.lru_cache(maxsize=65536)
def _is_phone_number(raw: str, regions: tuple[str, ...]) -> bool:
    """libphonenumber's verdict on one candidate in the document's regions, under the shared policy."""
    for region in regions:
        try:
            number = phonenumbers.parse(raw, region, keep_raw_input=True)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) and policy.phone_number_is_pii(number, raw, region):
            return True
    return False


@functools.lru_cache(maxsize=65536)
def _phone_span(raw: str, regions: tuple[str, ...]) -> tuple[int, int] | None:
    """(start, end) of the phone number in a candidate run: the whole run, else its longest run of
    space-separated groups that is one ("10.0.0.1 (415) 555-0132", "2024-01-15 030 1234567"); None if none is."""
    if _is_phone_number(raw, regions):
        return 0, len(raw)
    groups = [(m.start(), m.end()) for m in re.finditer(r"\S+", raw)][:8]
    # A neighbour of bare digits means the run is one longer number printed in blocks (an account number or an
    # invalid IBAN "3704 0044 0532 0130 01"), not a number next to a date or an address.
    blocks = [raw[a:b].isdigit() for a, b in groups]
    for size in range(len(groups) - 1, 0, -1):
        for first in range(len(groups) - size + 1):
            last = first + size - 1
            if (first > 0 and blocks[first - 1]) or (last + 1 < len(groups) and blocks[last + 1]):
                continue
            start, end = groups[first][0], groups[last][1]
            digits = sum(ch.isdigit() for ch in raw[start:end])
            if _PHONE_MIN_DIGITS <= digits and _is_phone_number(raw[start:end], regions):
                return start, end
    return None


def _phone_validator(regions: tuple[str, ...]) -> Validator:
    """Validator for the rows of one region set: candidates are few, so each one is parsed in Python once."""

    def validate(values: pl.Series, prefixes: pl.Series, cfg: PiiConfig) -> pl.Series:
        digits = values.str.replace(r"(?i)[ ]?(?:x|ext\.?|extension)[ ]?[0-9]+$", "").str.count_matches(r"[0-9]")
        # A "+" marks a phone number even glued to "/", "." or "@" (wa.me/+1..., tel.+44 ...).
        unglued = (prefixes.fill_null("").str.len_chars() == 0) | values.str.starts_with("+")
        plausible = (digits >= _PHONE_MIN_DIGITS) & unglued
        verdict = [
            bool(ok) and _phone_span(raw, regions) is not None
            for raw, ok in zip(values.to_list(), plausible.to_list())
        ]
        return pl.Series(verdict, dtype=pl.Boolean)

    return validate


def _phone_rewriter(regions: tuple[str, ...]) -> Callable[[pl.Series, str], pl.Series]:
    """Replace only the number inside an accepted candidate run; the groups around it stay."""

    def rewrite(values: pl.Series, placeholder: str) -> pl.Series:
        out = []
        for raw in values.to_list():
            start, end = _phone_span(raw, regions)
            out.append(raw[:start] + placeholder + raw[end:])
        return pl.Series(out, dtype=pl.String)

    return rewrite


def _secret_value_valid(values: pl.Series, prefixes: pl.Series, cfg: PiiConfig) -> pl.Series:
    entropy = shannon_entropy(values)
    hex_only = values.str.contains(r"^[0-9a-fA-F]+$") & values.str.contains(r"[0-9]") & values.str.contains(
        r"[a-fA-F]"
    )
    quoted = prefixes.str.contains(r"[\"'`]$")
    # Unquoted code such as `token = request.headers.get` is an expression, not a literal: letters, "_" and "."
    # only. Quoted literals are judged on entropy alone.
    identifier = values.str.contains(r"^[A-Za-z_][A-Za-z_.]*$")
    high = (entropy >= cfg.entropy_threshold) | (hex_only & (entropy >= cfg.hex_entropy_threshold))
    return (
        (values.str.len_chars() >= cfg.min_secret_length) & high & (quoted | ~identifier)
    ).fill_null(False)


def _secret_assignment_pattern(cfg: PiiConfig) -> str | None:
    names = [re.escape(n).replace("_", "[_\\-]?") for n in cfg.secret_names if n]
    if not names:
        return None
    name = r"\b[A-Za-z0-9_.\-]*?(?:" + "|".join(names) + r")(?:[_.\-][A-Za-z0-9_.\-]*)?"
    separator = r"[\"']?\s*(?:=>|:=|[:=])\s*(?:[\"'`]|(?i:bearer|basic|token) +)?"
    return f"(?P<pre>(?i:{name}){separator})(?P<val>[^\\s\"'`,;&<>(){{}}\\[\\]]{{{cfg.min_secret_length},}})"


# ----- detectors ---------------------------------------------------------------------------------------------
Validator = Callable[[pl.Series, pl.Series, PiiConfig], pl.Series]


@dataclass(frozen=True)
class _Detector:
    """A pattern with named groups ``val`` (replaced) and optional ``pre`` (kept), and its validator.

    Without a validator every match is PII and is replaced by one ``str.replace_all``.
    """

    pii_type: str
    pattern: str
    validate: Validator | None = None
    # What replaces a validated value (default: the placeholder), for detectors that keep part of the match.
    rewrite: Callable[[pl.Series, str], pl.Series] | None = None
    # Rerun on changed rows until stable: a rewrite that keeps part of a match can leave a further match behind.
    repeat: bool = False
    # Validity depends on the document's phone regions: applied once per region set, with _phone_validator.
    by_region: bool = False
    # A cheap pattern every match contains: rows without it skip the detector (rare shapes stay cheap).
    prefilter: str | None = None


def _value_only(fn: Callable[[pl.Series, PiiConfig], pl.Series]) -> Validator:
    return lambda values, prefixes, cfg: fn(values, cfg)


def _detectors(cfg: PiiConfig) -> list[_Detector]:
    """Detectors in application order: the most specific shapes first, so a key body never reads as a phone."""
    detectors = [
        _Detector("secret", f"(?P<val>{_PRIVATE_KEY})"),
        _Detector("secret", f"(?P<val>{_TOKEN_SECRETS})"),
        # Before e-mails: "user:secret@db.example.com" must not read as the address "secret@db.example.com".
        _Detector("secret", _CONNECTION, _value_only(_password_valid), lambda v, ph: pl.Series([ph + "@"] * len(v)),
                  prefilter="://"),
        _Detector("email", _EMAIL, _value_only(_email_valid), prefilter="@"),
        _Detector("email", _EMAIL_BRACKETED, _value_only(lambda v, c: _email_valid(_deobfuscate_email(v), c)),
                  prefilter=r"(?i)[\[({<]\s*at"),
        _Detector("email", _EMAIL_SPELLED, _value_only(lambda v, c: _email_valid(_deobfuscate_email(v), c)),
                  prefilter="(?i) dot "),
    ]
    assignment = _secret_assignment_pattern(cfg)
    if assignment:
        detectors.append(_Detector("secret", assignment, _secret_value_valid, prefilter="[=:]"))
    detectors += [
        _Detector("iban", _IBAN, _value_only(lambda v, c: iban_valid(v))),
        _Detector("us_ssn", _SSN_LABELLED, _value_only(_ssn_valid), prefilter=r"(?i)ssn|ss#|social\s+security"),
        _Detector("us_ssn", _SSN, _value_only(_ssn_valid), prefilter="[0-9]{3}-[0-9]{2}-[0-9]{4}"),
        _Detector("credit_card", _CARD, _card_valid, _card_rewrite, repeat=True,
                  prefilter=r"[0-9](?:[ \-]?[0-9]){12}"),
        _Detector("ip_address", _IPV6, _value_only(_ipv6_redact), prefilter=":"),
        _Detector("ip_address", _IPV4, _ipv4_redact, prefilter=r"[0-9]\.[0-9]+\.[0-9]"),
        # Validated per region set of the documents (see _redact_texts).
        _Detector("phone", _PHONE, by_region=True, prefilter=r"[0-9](?:[ .\-/()\p{Pd}]{0,3}[0-9]){6}"),
    ]
    enabled = set(cfg.enabled_types)
    return [d for d in detectors if d.pii_type in enabled]


def _apply_detector(texts: pl.Series, det: _Detector, cfg: PiiConfig) -> pl.Series:
    """Replace the validated matches of one detector in a String Series; everything else is left untouched."""
    if det.prefilter is not None:
        rows = texts.str.contains(det.prefilter).fill_null(False)
        if not rows.any():
            return texts
        if not rows.all():
            subset = _apply_detector(texts.filter(rows), replace(det, prefilter=None), cfg)
            return texts.clone().scatter(rows.arg_true(), subset)
    placeholder = PLACEHOLDERS[det.pii_type]
    has_pre = "(?P<pre>" in det.pattern
    keep_pre = "${pre}" if has_pre else ""
    if det.validate is None:
        return texts.str.replace_all(det.pattern, keep_pre + placeholder)
    marked = texts.str.replace_all(det.pattern, f"{_START}{keep_pre}{_MID}${{val}}{_END}")
    candidates = marked.str.extract_all(_MARKED).explode().drop_nulls().unique(maintain_order=True)
    if len(candidates) == 0:
        return texts
    parts = candidates.str.extract_groups(_MARK_PARTS)
    prefixes, values = parts.struct.field("pre"), parts.struct.field("val")
    valid = det.validate(values, prefixes, cfg)
    accepted = pl.DataFrame({"marked": candidates, "pre": prefixes, "val": values, "ok": valid}).filter(pl.col("ok"))
    if len(accepted):
        replacement = det.rewrite(accepted["val"], placeholder) if det.rewrite else placeholder
        accepted = accepted.with_columns(replacement=pl.col("pre").fill_null("") + replacement)
        # Literal lists (implode: one pattern list for every row); the markers make each pattern unique in place.
        marked = marked.str.replace_many(
            pl.lit(accepted["marked"]).implode(), pl.lit(accepted["replacement"]).implode(), leftmost=True
        )
    return marked.str.replace_all(_MARK_PARTS, "${pre}${val}")


def _count_placeholders(texts: pl.Series) -> pl.DataFrame:
    return pl.DataFrame({t: texts.str.count_matches(PLACEHOLDERS[t], literal=True).fill_null(0) for t in PII_TYPES})


def _redact_texts(texts: pl.Series, cfg: PiiConfig, regions: pl.Series | None = None) -> tuple[pl.Series, pl.DataFrame]:
    """Redact a String Series; returns the redacted texts and per-row hit counts per type (Int64 columns).

    ``regions`` holds each row's phone regions joined by "," (default: ``cfg.phone_regions``)."""
    texts = texts.cast(pl.String)
    if texts.str.contains(_MARKER_CHARS).any():
        texts = texts.str.replace_all(_MARKER_CHARS, "")
    if regions is None:
        regions = pl.Series([",".join(cfg.phone_regions)] * len(texts), dtype=pl.String)
    before = _count_placeholders(texts)
    out = texts.clone()  # scatter below writes in place
    for det in _detectors(cfg):
        if det.by_region:  # one pass per distinct region set (a handful per drop)
            for key in regions.unique(maintain_order=True).to_list():
                rows = (regions == key).fill_null(False)
                regions_of_key = _regions_of(key)
                with_regions = replace(
                    det, validate=_phone_validator(regions_of_key), rewrite=_phone_rewriter(regions_of_key)
                )
                out = out.scatter(rows.arg_true(), _apply_detector(out.filter(rows), with_regions, cfg))
            continue
        before_det = out
        out = _apply_detector(out, det, cfg)
        for _ in range(4 if det.repeat else 0):
            changed = (out != before_det).fill_null(False)
            if not changed.any():
                break
            before_det = out
            out = out.scatter(changed.arg_true(), _apply_detector(out.filter(changed), det, cfg))
    after = _count_placeholders(out)
    # Hits are the placeholders the detectors added; text that already quoted "<EMAIL>" is not counted.
    counts = pl.DataFrame(
        {t: (after[t] - before[t]).clip(lower_bound=0).cast(pl.Int64) for t in PII_TYPES}
    )
    return out.alias(texts.name), counts


def redact_pii(docs: pl.DataFrame, cfg: PiiConfig | None = None) -> StageResult:
    """Replace PII in ``text`` and every chat ``messages[].content`` with typed placeholders.

    In: documents with at least ``doc_id``, ``text`` and ``messages``. Out: kept documents with redacted text and
    messages plus ``pii_counts`` (struct of Int64 per type) and ``pii_total``; ``drop`` verdicts
    ``pii.too_many_hits`` for documents with more than ``cfg.max_hits_per_doc`` hits and ``pii.residual`` for
    documents in which ``scan_pii`` still finds PII after redaction; one ``redact`` verdict per
    type found in a kept document (rule ``pii.<type>``, value = count). Example: ``"mail bob@corp.com"`` becomes
    ``"mail <EMAIL>"`` with ``pii_counts.email == 1``.
    """
    cfg = cfg or PiiConfig()
    rows = docs.with_row_index("_row")
    # One long frame of everything to redact: the text (_msg = -1) and each message content (_msg = its index).
    text_part = rows.select("_row", pl.lit(-1, dtype=pl.Int64).alias("_msg"), pl.col("text").alias("_seg"))
    has_messages = "messages" in docs.columns and docs["messages"].list.len().fill_null(0).sum() > 0
    parts = [text_part]
    if has_messages:
        exploded = (
            rows.select("_row", "messages")
            .filter(pl.col("messages").list.len() > 0)
            .explode("messages")
            .with_columns(_msg=pl.int_range(pl.len(), dtype=pl.Int64).over("_row"))
        )
        parts.append(exploded.select("_row", "_msg", pl.col("messages").struct.field("content").alias("_seg")))
    segments = pl.concat(parts)
    region_keys = segments.join(_region_keys(docs, cfg).with_row_index("_row"), on="_row", how="left",
                                maintain_order="left")["_regions"]
    redacted, counts = _redact_texts(segments["_seg"], cfg, region_keys)
    segments = pl.concat([segments.with_columns(redacted.alias("_seg")), counts], how="horizontal")
    # The independent second opinion on every redacted segment; a document it still flags is dropped below.
    residual = scan_pii(segments["_seg"], cfg, region_keys=region_keys).drop("total")
    per_doc_residual = (
        pl.concat([segments.select("_row"), residual], how="horizontal")
        .group_by("_row").agg([pl.col(t).sum().alias(f"_residual_{t}") for t in PII_TYPES])
    )

    # A chat document's text is usually a rendering of its messages: per type, count the larger of the two sides
    # so the same phone number in both is one hit, not two.
    per_doc = (
        segments.group_by("_row", pl.col("_msg") >= 0)
        .agg([pl.col(t).sum() for t in PII_TYPES])
        .group_by("_row")
        .agg([pl.col(t).max() for t in PII_TYPES])
        .with_columns(pii_total=pl.sum_horizontal(PII_TYPES))
    )
    out = rows.join(per_doc, on="_row", how="left", maintain_order="left").join(
        per_doc_residual, on="_row", how="left", maintain_order="left"
    ).with_columns(pl.col("text").cast(pl.String))
    new_text = segments.filter(pl.col("_msg") == -1).select("_row", pl.col("_seg").alias("_text"))
    out = out.join(new_text, on="_row", how="left", maintain_order="left").with_columns(pl.col("_text").alias("text"))
    if has_messages:
        new_contents = segments.filter(pl.col("_msg") >= 0).select("_row", "_msg", pl.col("_seg").alias("_content"))
        rebuilt = (
            exploded.join(new_contents, on=["_row", "_msg"], how="left")
            .sort("_row", "_msg")
            .with_columns(pl.col("messages").struct.with_fields(content=pl.col("_content")))
            .group_by("_row", maintain_order=True)
            .agg(pl.col("messages").alias("_messages"))
        )
        out = out.join(rebuilt, on="_row", how="left", maintain_order="left").with_columns(
            pl.coalesce("_messages", "messages").cast(docs.schema["messages"]).alias("messages")
        ).drop("_messages")
    residual_columns = [f"_residual_{t}" for t in PII_TYPES]
    out = out.with_columns(
        pl.struct([pl.col(t).fill_null(0) for t in PII_TYPES]).alias("pii_counts"),
        pl.col("pii_total").fill_null(0).cast(pl.Int64).alias("_total"),
    ).drop(["_row", "_text", "pii_total", *PII_TYPES]).rename({"_total": "pii_total"})
    residual = out.select("doc_id", *[pl.col(c).fill_null(0).alias(t) for c, t in zip(residual_columns, PII_TYPES)])
    out = out.drop(residual_columns)

    verdicts, metrics = _verdicts(out, residual, cfg)
    return split_by_verdicts(out, verdicts, metrics)


def _region_keys(docs: pl.DataFrame, cfg: PiiConfig) -> pl.DataFrame:
    """One row per document: ``_regions``, its phone regions joined by "," (configured defaults + language)."""
    if "language" not in docs.columns:
        return pl.DataFrame({"_regions": [",".join(cfg.phone_regions)] * docs.height}, schema={"_regions": pl.String})
    languages = docs["language"].cast(pl.String)
    table = {lang: ",".join(policy.phone_regions(lang, cfg.phone_regions)) for lang in languages.unique().to_list()}
    return pl.DataFrame({"_regions": languages.replace_strict(table, return_dtype=pl.String)})


def _regions_of(key: str | None) -> tuple[str, ...]:
    """The phone regions a ``_regions`` key names (the inverse of :func:`_region_keys`)."""
    return tuple(filter(None, (key or "").split(",")))


def _verdicts(docs: pl.DataFrame, residual: pl.DataFrame, cfg: PiiConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    too_many = pl.col("pii_total") > cfg.max_hits_per_doc
    counts = docs.select("doc_id", "pii_total", pl.col("pii_counts").struct.unnest())
    detail = pl.concat_str(
        [pl.when(pl.col(t) > 0).then(pl.format(f"{t}={{}}", pl.col(t))) for t in PII_TYPES],
        separator=", ",
        ignore_nulls=True,
    )
    drops = counts.filter(too_many).select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(TOO_MANY_RULE).alias("rule"),
        pl.col("pii_total").cast(pl.Float64).alias("value"),
        pl.lit(f"> {cfg.max_hits_per_doc}").alias("threshold"),
        pl.format("{} PII hits ({})", pl.col("pii_total"), detail).alias("detail"),
    )
    residual = residual.with_columns(_residual=pl.sum_horizontal(PII_TYPES))
    left_over = residual.join(drops.select("doc_id"), on="doc_id", how="anti", maintain_order="left").filter(
        pl.col("_residual") > 0
    )
    residual_drops = left_over.select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(RESIDUAL_RULE).alias("rule"),
        pl.col("_residual").cast(pl.Float64).alias("value"),
        pl.lit("> 0").alias("threshold"),
        pl.format("PII left after redaction, found by the independent scan: {}", detail).alias("detail"),
    )
    drops = pl.concat([drops, residual_drops]).join(
        docs.select("doc_id").with_row_index("_doc_order"), on="doc_id", how="left"
    ).sort("_doc_order").drop("_doc_order")
    kept = counts.join(drops.select("doc_id"), on="doc_id", how="anti", maintain_order="left")
    redactions = (
        kept.unpivot(index="doc_id", on=list(PII_TYPES), variable_name="pii_type", value_name="hits")
        .filter(pl.col("hits") > 0)
        .with_columns(_order=pl.col("pii_type").replace_strict({t: i for i, t in enumerate(PII_TYPES)}))
        .join(docs.select("doc_id").with_row_index("_doc_order"), on="doc_id", how="left")
        .sort("_doc_order", "_order")
        .select(
            "doc_id",
            pl.lit(REDACT).alias("verdict"),
            pl.format("pii.{}", pl.col("pii_type")).alias("rule"),
            pl.col("hits").cast(pl.Float64).alias("value"),
            pl.lit(None, dtype=pl.String).alias("threshold"),
            pl.format("replaced {} {} with {}", pl.col("hits"), pl.col("pii_type"),
                      pl.col("pii_type").replace_strict(PLACEHOLDERS)).alias("detail"),
        )
    )
    metrics: dict[str, Any] = {
        "documents_scanned": docs.height,
        "documents_dropped": int(drops.height),
        "documents_with_residual_pii": int(residual_drops.height),
        "residual_per_type": {t: int(left_over[t].sum()) for t in PII_TYPES},
        "documents_redacted": int(kept.filter(pl.col("pii_total") > 0).height),
        "hits_per_type": {t: int(counts[t].sum()) for t in PII_TYPES},
        "redactions_per_type": {t: int(kept[t].sum()) for t in PII_TYPES},
    }
    return pl.concat([drops, redactions], how="vertical_relaxed"), metrics


# ----- the independent residual scan -----------------------------------------------------------------------------
# Written apart from the redaction patterns: emails and IPv4/IPv6 are found as whole tokens, addresses are parsed
# by Python's ``ipaddress`` and phone numbers found by libphonenumber's own PhoneNumberMatcher inside digit runs.
# Only the policy (pii_policy) and the checksum/entropy validators are shared with the redactor.
_SCAN_TOKEN_EMAIL = r"[^\s<>()\[\]{}\"'`,;:=|/\\]+@[^\s<>()\[\]{}\"'`,;:=|/\\]+"
_SCAN_EMAIL_FULL = r"^[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)+$"
# Obfuscated mail, rewritten to plain addresses before the token scan: "[at]"/"(at)"/"{at}" and "[dot]" forms,
# and the spelled-out "first.last at example dot com" with a separator in the name and a known domain.
_SCAN_OBFUSCATED_AT = r"(?i)[ \t]*[\[({<][ \t]*at[ \t]*[\])}>][ \t]*"
_SCAN_OBFUSCATED_DOT = r"(?i)[ \t]*[\[({<][ \t]*dot[ \t]*[\])}>][ \t]*"
_SCAN_SPELLED_EMAIL = (
    r"(?i)\b([\w+\-]*[._+0-9][\w.+\-]*) at ((?:[\w\-]+ dot )+(?:" + "|".join(policy.SPELLED_EMAIL_TLDS) + r"))\b"
)
_SCAN_TOKEN_IPV4 = (
    r"(?i)(?:\b(?:version|ver|release|build)\b[ :.]*)?[0-9A-Za-z_.]*[0-9]\.[0-9][0-9A-Za-z_.]*(?:/[0-9]+)?"
)
_SCAN_TOKEN_IPV6 = r"[0-9A-Za-z_:]*::?[0-9A-Za-z_:]*(?:/[0-9]+)?"
# Digit runs worth a PhoneNumberMatcher: 7+ digits with the separators numbers are written with, one character
# of context either side (the matcher rejects numbers glued to letters).
_SCAN_DIGIT_RUN = r"[^\s0-9]?[+(]?[0-9](?:[ \t\n()./\-\p{Pd}]*[0-9]){6,}(?:[ ]?(?i:x|ext\.?)[ ]?[0-9]+)?[^\s0-9]?"
_SCAN_CARD = r"\b(?:[0-9]{4}[- ]){3}[0-9]{4}\b|\b3[47][0-9]{2}[- ]?[0-9]{6}[- ]?[0-9]{5}\b|\b[0-9]{13,19}\b"
_SCAN_IBAN = r"\b[A-Z]{2}[0-9]{2}(?:[ ]?[0-9A-Z]{4}){2,7}(?:[ ]?[0-9A-Z]{1,4})?\b"
_SCAN_SSN = r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"
_SCAN_SSN_LABELLED = (
    r"(?i)(?:" + "|".join(re.escape(x) for x in policy.SSN_LABELS) + r")"
    r"[ \t:=#\-]{0,4}(?:(?:is|was|number|no\.?)[ \t:#]*)?"
    r"\b([0-9]{3}[ \-]?[0-9]{2}[ \-]?[0-9]{4})\b"
)
_SCAN_CONNECTION = r"(?i)\b([a-z][a-z0-9+.\-]*)://([^\s:/]+):([^\s/@]+)@"
_SCAN_SECRET_SHAPES = [
    r"-----BEGIN [A-Z ]*PRIVATE KEY",
    r"\bA(?:KIA|SIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[0-9A-Za-z]{36}",
    r"\bgithub_pat_[0-9A-Za-z_]{22}",
    r"\bxox[baprs]-[0-9A-Za-z]",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    r"\bsk_live_[0-9A-Za-z]{16}",
    r"\beyJ[0-9A-Za-z_\-]+\.[0-9A-Za-z_\-]+\.[0-9A-Za-z_\-]+",
]


def _scan_candidates(texts: pl.Series, pattern: str, prefilter: str | None = None) -> pl.DataFrame:
    """Long frame (row, match) of every pattern match; row is the position in ``texts``. Only rows containing
    ``prefilter`` (a cheap pattern every match contains) are searched."""
    frame = pl.DataFrame({"m": texts}).with_row_index("row")
    if prefilter is not None:
        frame = frame.filter(pl.col("m").str.contains(prefilter).fill_null(False))
    return frame.with_columns(pl.col("m").str.extract_all(pattern)).explode("m").drop_nulls("m")


def _scan_count(n_rows: int, found: pl.DataFrame, name: str) -> pl.Series:
    counts = found.group_by("row").agg(pl.len().cast(pl.Int64).alias(name))
    index = pl.DataFrame({"row": pl.int_range(n_rows, dtype=pl.UInt32, eager=True)})
    return index.join(counts, on="row", how="left").sort("row")[name].fill_null(0)


@functools.lru_cache(maxsize=8)
def _policy_networks() -> list[tuple[str, Any]]:
    import ipaddress

    return [
        (category, ipaddress.ip_network(cidr))
        for category in policy.IP_CATEGORIES
        for cidr in policy.NON_PUBLIC_NETWORKS[category]
    ]


def _scan_ip_is_pii(token: str, kept: frozenset[str], keep_prefixes: bool) -> bool:
    """Parse one token with ``ipaddress`` and apply the shared policy (first range that holds it decides)."""
    import ipaddress

    address, _, length = token.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if length and keep_prefixes and length.isdigit() and int(length) < ip.max_prefixlen:
        return False  # a network prefix, not a host
    for category, network in _policy_networks():
        if network.version == ip.version and ip in network:
            return category not in kept
    return True


def _scan_ips(texts: pl.Series, cfg: PiiConfig) -> pl.DataFrame:
    v4 = _scan_candidates(texts, _SCAN_TOKEN_IPV4, r"[0-9]\.[0-9]+\.[0-9]").with_columns(
        pre=pl.col("m").str.extract(r"(?i)^((?:version|ver|release|build)[ :.]*)", 1).fill_null("")
    )
    v4 = v4.with_columns(ip=pl.col("m").str.slice(pl.col("pre").str.len_chars()).str.strip_chars_end("."))
    # A dotted quad after "version" or a "v" is a version string (policy switch keep_version_numbers).
    version = (pl.col("pre") != "") | pl.col("ip").str.contains(r"^[vV][0-9]")
    v4 = v4.filter(pl.col("ip").str.contains(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(?:/[0-9]+)?$"))
    if cfg.keep_version_numbers:
        v4 = v4.filter(~version)
    v6 = _scan_candidates(texts, _SCAN_TOKEN_IPV6, ":").with_columns(
        ip=pl.col("m").str.replace(r"([^:]):$", "${1}")
    ).filter((pl.col("ip").str.count_matches(":") >= 2) & pl.col("ip").str.contains("[0-9A-Fa-f]"))
    found = pl.concat([v4.select("row", "ip"), v6.select("row", "ip")])
    kept, keep_prefixes = frozenset(policy.kept_ip_categories(cfg)), cfg.keep_network_prefixes
    tokens = found["ip"].unique()  # few per batch: parsed one by one
    verdict = {token: _scan_ip_is_pii(token, kept, keep_prefixes) for token in tokens.to_list()}
    return found.filter(pl.col("ip").replace_strict(verdict, return_dtype=pl.Boolean, default=False))


@functools.lru_cache(maxsize=65536)
def _scan_phone_matches(window: str, regions: tuple[str, ...]) -> int:
    """Distinct numbers libphonenumber's matcher (leniency VALID) finds in one digit run, over the regions."""
    starts = set()
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(window, region):
            # The matcher does not keep how the number was written; the policy needs it (trunk prefix, "+").
            number = phonenumbers.parse(match.raw_string, region, keep_raw_input=True)
            if policy.phone_number_is_pii(number, match.raw_string, region):
                starts.add(match.start)
    return len(starts)


def _scan_phones(texts: pl.Series, region_keys: pl.Series) -> pl.DataFrame:
    labels = r"(?i:\b(?:" + "|".join(policy.NOT_PHONE_LABELS) + r")\b[ :]*)"
    found = _scan_candidates(texts, f"{labels}?{_SCAN_DIGIT_RUN}", r"[0-9](?:[^0-9]{0,3}[0-9]){6}")
    found = found.filter(~pl.col("m").str.contains(f"^{labels}"))
    found = found.join(pl.DataFrame({"regions": region_keys}).with_row_index("row"), on="row", how="left")
    pairs = found.select("m", "regions").unique()
    # One phonenumbers call per distinct (window, regions) pair: the candidates are few.
    counted = pairs.with_columns(n=pl.Series(
        [_scan_phone_matches(window, _regions_of(key)) for window, key in pairs.iter_rows()], dtype=pl.Int64))
    found = found.join(counted, on=["m", "regions"], how="left", nulls_equal=True).filter(pl.col("n") > 0)
    return found.select("row", pl.col("n").repeat_by("n")).explode("n").select("row")


def _scan_emails(texts: pl.Series, cfg: PiiConfig) -> pl.DataFrame:
    obfuscated = (texts.str.contains("(?i)dot") | texts.str.contains(r"(?i)[\[({<][ \t]*at")).fill_null(False)
    plain = texts
    if obfuscated.any():
        rewritten = (
            texts.filter(obfuscated)
            .str.replace_all(_SCAN_OBFUSCATED_AT, "@")
            .str.replace_all(_SCAN_OBFUSCATED_DOT, ".")
            .str.replace_all(_SCAN_SPELLED_EMAIL, "${1}@${2}")
        )
        for _ in range(3):  # the spelled domain "example dot co dot uk", one " dot " per pass
            rewritten = rewritten.str.replace_all(r"(?i)(@[\w\-.]+) dot ([\w\-]+)", "${1}.${2}")
        plain = texts.clone().scatter(obfuscated.arg_true(), rewritten)
    found = _scan_candidates(plain, _SCAN_TOKEN_EMAIL, "@").with_columns(pl.col("m").str.strip_chars_end("."))
    found = found.filter(pl.col("m").str.contains(_SCAN_EMAIL_FULL))
    return _keep_valid(found, _email_valid(found["m"], cfg))


def _scan_connection_secrets(texts: pl.Series) -> pl.DataFrame:
    found = _scan_candidates(texts, _SCAN_CONNECTION, "://")
    parts = found["m"].str.extract_groups(_SCAN_CONNECTION)
    found = found.with_columns(
        scheme=parts.struct.field("1").str.to_lowercase().str.strip_prefix("jdbc:"), password=parts.struct.field("3")
    )
    return found.filter(
        pl.col("scheme").is_in(list(policy.CONNECTION_SCHEMES))
        & ~pl.col("password").str.contains(policy.PASSWORD_PLACEHOLDER)
    ).select("row", "m")


def scan_pii(texts: pl.Series, cfg: PiiConfig | None = None, languages: pl.Series | None = None,
             region_keys: pl.Series | None = None) -> pl.DataFrame:
    """Count PII still present in each text: one row per input row, an Int64 column per type plus ``total``.

    ``languages`` (one label per text, e.g. the ``language`` column) adds each text's phone regions to the
    configured ones. Used on redacted output by the pii stage (``pii.residual``) and the residual gates.
    Placeholders never count.
    """
    cfg = cfg or PiiConfig()
    texts = texts.cast(pl.String).fill_null("")
    n = len(texts)
    if region_keys is None:
        langs = languages if languages is not None else pl.Series([None] * n, dtype=pl.String)
        region_keys = _region_keys(pl.DataFrame({"language": langs.cast(pl.String)}), cfg)["_regions"]
    enabled = set(cfg.enabled_types)
    columns: dict[str, pl.Series] = {}

    if "email" in enabled:
        columns["email"] = _scan_count(n, _scan_emails(texts, cfg), "email")
    if "phone" in enabled:
        columns["phone"] = _scan_count(n, _scan_phones(texts, region_keys), "phone")
    if "ip_address" in enabled:
        columns["ip_address"] = _scan_count(n, _scan_ips(texts, cfg), "ip_address")
    if "credit_card" in enabled:
        found = _scan_candidates(texts, _SCAN_CARD, r"[0-9](?:[^0-9]?[0-9]){12}")
        no_prefix = pl.Series([""] * len(found), dtype=pl.String)
        found = _keep_valid(found, _card_valid(found["m"], no_prefix, cfg))
        columns["credit_card"] = _scan_count(n, found, "credit_card")
    if "iban" in enabled:
        found = _scan_candidates(texts, _SCAN_IBAN)
        columns["iban"] = _scan_count(n, _keep_valid(found, iban_valid(found["m"])), "iban")
    if "us_ssn" in enabled:
        dashed = _scan_candidates(texts, _SCAN_SSN, "[0-9]-[0-9]")
        labelled = _scan_candidates(texts, _SCAN_SSN_LABELLED, "(?i)ss|social").with_columns(
            pl.col("m").str.extract(_SCAN_SSN_LABELLED, 1)
        ).filter(~pl.col("m").str.contains(r"^[0-9]{3}-[0-9]{2}-[0-9]{4}$"))  # dashed ones are counted above
        found = pl.concat([dashed, labelled])
        columns["us_ssn"] = _scan_count(n, _keep_valid(found, _ssn_valid(found["m"], cfg)), "us_ssn")
    if "secret" in enabled:
        shapes = _scan_candidates(texts, "|".join(_SCAN_SECRET_SHAPES)).select("row", "m")
        assigned = _scan_assigned_secrets(texts, cfg)
        connections = _scan_connection_secrets(texts)
        columns["secret"] = _scan_count(n, pl.concat([shapes, assigned, connections]), "secret")
    frame = pl.DataFrame({t: columns.get(t, pl.Series(t, [0] * n, dtype=pl.Int64)) for t in PII_TYPES})
    return frame.with_columns(total=pl.sum_horizontal(PII_TYPES).cast(pl.Int64))


def _scan_assigned_secrets(texts: pl.Series, cfg: PiiConfig) -> pl.DataFrame:
    """Values assigned to a secret name (key = value, key: value, "key": "value") that look random."""
    if not cfg.secret_names:
        return pl.DataFrame(schema={"row": pl.UInt32, "m": pl.String})
    names = "|".join(re.escape(n).replace("_", "[-_]?") for n in cfg.secret_names)
    pattern = (
        rf"(?i)[\w.\-]*(?:{names})(?:[-_.][\w.\-]*)?[\"']?[ \t]*(?:=>|:=|:|=)[ \t]*(?:[\"'`]|(?:bearer|basic|token) +)?"
        r"[^\s\"'`,;&<>(){}\[\]]+"
    )
    found = _scan_candidates(texts, pattern, "[=:]")
    parts = found["m"].str.extract_groups(
        r"(?i)^(?P<pre>.*?(?:=>|:=|:|=)[ \t]*(?:[\"'`]|(?:bearer|basic|token) +)?)(?P<val>[^\s\"'`,;&<>(){}\[\]]+)$"
    )
    found = found.with_columns(pre=parts.struct.field("pre"), val=parts.struct.field("val")).drop_nulls("val")
    # Placeholders are never secrets; known token shapes are already counted above, so count them once.
    found = found.filter(
        ~pl.col("val").str.contains(r"^<[A-Z_]+>$") & ~pl.col("val").str.contains("|".join(_SCAN_SECRET_SHAPES))
    )
    return _keep_valid(found, _secret_value_valid(found["val"], found["pre"], cfg)).select("row", "m")


def _keep_valid(found: pl.DataFrame, ok: pl.Series) -> pl.DataFrame:
    """Rows of ``found`` whose validator result is True (empty frames pass through)."""
    return found.filter(ok) if len(found) else found
