"""PII redaction: emails, phones, public IPs, cards, IBANs, US SSNs and secrets become typed placeholders.

Every detector is a Rust-regex pattern run as a Polars column operation. Detectors that need a check a regex
cannot express (Luhn, IBAN mod-97, IP ranges, SSN areas, Shannon entropy) work in three columnar steps:

1. ``str.replace_all`` wraps every candidate match in marker characters, so each occurrence is pinned to its
   exact position (no later substring replacement can touch a look-alike elsewhere in the text);
2. the marked candidates of the whole batch are extracted, deduplicated and validated with Polars expressions
   (digits exploded into long frames for Luhn, mod-97 and entropy);
3. ``str.replace_many`` swaps the validated marked strings for their placeholder and one ``str.replace_all``
   unwraps the rejected ones.

Validation depends only on the candidate string (plus an optional prefix such as ``password = "``), so one
batch-wide table of validated candidates is exact for every document. Chat documents are redacted in ``text`` and
in every ``messages[].content``. A document with more PII hits than ``max_hits_per_doc`` is dropped with
``pii.too_many_hits`` instead (Dolma); redacted documents get one ``redact`` verdict per type.

Decisions on look-alikes: a 4-part dotted number right after ``version``/``ver``/``release``/``build`` or a ``v``
is a version, not an address; every other public-range dotted quad (even ``1.2.3.4`` in prose) is treated as an
IP. Dotted runs of 5+ parts, parts above 255 and zero-padded parts are never addresses. SSNs are recognised only
in the dashed ``AAA-GG-SSSS`` form; bare 9-digit numbers are too ambiguous. Card numbers need a 2-6 major
industry digit as well as a valid Luhn checksum (millisecond timestamps pass Luhn one time in ten).

``scan_pii`` is the independent second opinion used by the residual-PII gate: it finds candidates with its own
patterns (token based for emails and IPs) and shares only the validators with the redactor.

The markers are Unicode noncharacters U+FDD0..U+FDD2 (reserved for internal use, never meaningful in text);
any that appear in the input are removed before redaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.records import DROP, REDACT, StageResult, split_by_verdicts

PiiType = Literal["email", "phone", "ip_address", "credit_card", "iban", "us_ssn", "secret"]
PII_TYPES: tuple[str, ...] = ("email", "phone", "ip_address", "credit_card", "iban", "us_ssn", "secret")
PLACEHOLDERS: dict[str, str] = {t: f"<{t.upper()}>" for t in PII_TYPES}
TOO_MANY_RULE = "pii.too_many_hits"
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
# Every dotted run of 4+ numbers is a candidate so that 5-part versions and 1100.2.3.4 are rejected whole.
_IPV4 = (
    r"(?:(?P<pre>(?i:\b(?:version|ver|release|build)\b[ :.]*|\bv))|\b)(?P<val>[0-9]+(?:\.[0-9]+){3,})\b"
)
_IPV6 = r"(?P<val>(?i:\b[0-9a-f]{1,4}(?:::?[0-9a-f]{1,4}){1,7}(?:::)?)[0-9A-Za-z_]*)"
# Trunk-0 national forms right after "digit + space" belong to a longer digit grouping (an IBAN or account number
# printed in blocks): the guard group ``pre`` captures that digit so the validator can reject the candidate.
_PHONE = r"(?P<pre>[02-9] )?(?P<val>" + "|".join(
    [
        r"\+[1-9][0-9]{0,2}(?:[ .\-]?\(0\))?(?:[ .\-]?\([0-9]{1,4}\))?(?:[ .\-]?[0-9]{1,5}){1,5}",  # +CC ...
        r"(?:\b1-)?(?:\([2-9][0-9]{2}\) ?[0-9]{3}[ .\-]"  # US (555) 123-4567, 1-800-555-0199
        r"|\b[2-9][0-9]{2}-[0-9]{3}-|\b[2-9][0-9]{2}\.[0-9]{3}\.|\b[2-9][0-9]{2} [0-9]{3} )[0-9]{4}\b",  # 555-123-4567
        r"\b0[1-9](?:[ .][0-9]{2}){4}\b",  # FR 01 23 45 67 89
        r"(?:\(0[1-9][0-9]{1,4}\) ?|\b0[1-9][0-9]{1,4}[ /\-])[0-9]{2,8}(?:[ \-][0-9]{2,8})?\b",  # UK, DE trunk 0
    ]
) + ")"

_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
# Image and code file extensions that follow "@" in names like icon@2x.png, never mail domains.
_FILE_TLDS = ["png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "css", "js", "ts", "py", "json", "md"]
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
    parts = values.str.split("-")
    area, group, serial = (parts.list.get(k, null_on_oob=True) for k in range(3))
    # SSA never issues area 000, 666 or 900-999, group 00 or serial 0000.
    area_ok = (area != "000") & (area != "666") & ~area.str.starts_with("9")
    return (area_ok & (group != "00") & (serial != "0000")).fill_null(False)


def _ipv4_redact(values: pl.Series, prefixes: pl.Series, cfg: PiiConfig) -> pl.Series:
    parts = values.str.split(".")
    octet_text = [parts.list.get(k, null_on_oob=True) for k in range(4)]
    a, b, c, d = (o.cast(pl.Int64, strict=False) for o in octet_text)
    no_padding = pl.Series([True] * len(values), dtype=pl.Boolean)
    for o in octet_text:
        no_padding = no_padding & ((o.str.len_chars() == 1) | ~o.str.starts_with("0"))
    well_formed = (parts.list.len() == 4) & (a <= 255) & (b <= 255) & (c <= 255) & (d <= 255) & no_padding
    private = (a == 10) | ((a == 172) & (b >= 16) & (b <= 31)) | ((a == 192) & (b == 168))
    loopback = a == 127
    link_local = (a == 169) & (b == 254)
    documentation = (
        ((a == 192) & (b == 0) & (c == 2))
        | ((a == 198) & (b == 51) & (c == 100))
        | ((a == 203) & (b == 0) & (c == 113))
    )
    reserved = (
        (a == 0) | ((a == 100) & (b >= 64) & (b <= 127)) | ((a == 192) & (b == 0) & (c == 0))
        | ((a == 198) & (b >= 18) & (b <= 19)) | (a >= 224)
    )
    public = ~(private | loopback | link_local | documentation | reserved)
    redact = (
        public
        | (private & (not cfg.keep_private_ips))
        | (loopback & (not cfg.keep_loopback_ips))
        | (link_local & (not cfg.keep_link_local_ips))
        | (documentation & (not cfg.keep_documentation_ips))
        | (reserved & (not cfg.keep_reserved_ips))
    )
    is_version = prefixes.fill_null("").str.len_chars() > 0
    if cfg.keep_version_numbers:
        redact = redact & ~is_version
    return (well_formed & redact).fill_null(False)


def _ipv6_redact(values: pl.Series, cfg: PiiConfig) -> pl.Series:
    groups = values.str.split(":")
    n_compressions = values.str.count_matches("::", literal=True)
    n_filled = groups.list.eval(pl.element().str.len_chars() > 0).list.sum()
    all_hex = groups.list.eval(pl.element().str.contains(r"^[0-9A-Fa-f]{0,4}$")).list.all()
    well_formed = (
        all_hex
        & ~values.str.contains(":::", literal=True)
        & (((n_compressions == 0) & (groups.list.len() == 8)) | ((n_compressions == 1) & (n_filled <= 7)))
    )
    h0 = groups.list.get(0, null_on_oob=True).str.to_integer(base=16, strict=False)
    h1 = groups.list.get(1, null_on_oob=True).replace("", "0").str.to_integer(base=16, strict=False).fill_null(0)
    global_unicast = (h0 >= 0x2000) & (h0 <= 0x3FFF)
    documentation = ((h0 == 0x2001) & (h1 == 0x0DB8)) | ((h0 == 0x3FFF) & (h1 < 0x1000))
    private = (h0 >= 0xFC00) & (h0 <= 0xFDFF)
    link_local = (h0 >= 0xFE80) & (h0 <= 0xFEBF)
    reserved = ~global_unicast & ~private & ~link_local
    redact = (
        (global_unicast & ~documentation)
        | (documentation & (not cfg.keep_documentation_ips))
        | (private & (not cfg.keep_private_ips))
        | (link_local & (not cfg.keep_link_local_ips))
        | (reserved & (not cfg.keep_reserved_ips))
    )
    return (well_formed & redact).fill_null(False)


def _email_valid(values: pl.Series, cfg: PiiConfig) -> pl.Series:
    domain = values.str.split("@").list.last()
    tld = domain.str.split(".").list.last().str.to_lowercase()
    local = values.str.split("@").list.first()
    return (
        tld.str.contains(r"^[^\W\d_]{2,}$")
        & ~tld.is_in(_FILE_TLDS)
        & ~local.str.starts_with(".")
        & ~local.str.ends_with(".")
    ).fill_null(False)


def _phone_valid(values: pl.Series, prefixes: pl.Series, cfg: PiiConfig) -> pl.Series:
    n_digits = values.str.replace_all(r"\(0\)", "").str.count_matches(r"[0-9]")
    international = values.str.starts_with("+")
    trunk = values.str.contains(r"^\(?0")
    # E.164 numbers have at most 15 digits; 8 is the shortest real country code + subscriber number.
    intl_ok = international & (n_digits >= 8) & (n_digits <= 15)
    trunk_ok = trunk & (n_digits >= 9) & (n_digits <= 13)
    # The remaining alternative of the pattern is the exact NANP shape, already checked by the regex.
    nanp_ok = ~international & ~trunk & (n_digits >= 10) & (n_digits <= 11)
    inside_digit_blocks = (prefixes.fill_null("").str.len_chars() > 0) & trunk
    return ((intl_ok | trunk_ok | nanp_ok) & ~inside_digit_blocks).fill_null(False)


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


def _value_only(fn: Callable[[pl.Series, PiiConfig], pl.Series]) -> Validator:
    return lambda values, prefixes, cfg: fn(values, cfg)


def _detectors(cfg: PiiConfig) -> list[_Detector]:
    """Detectors in application order: the most specific shapes first, so a key body never reads as a phone."""
    detectors = [
        _Detector("secret", f"(?P<val>{_PRIVATE_KEY})"),
        _Detector("secret", f"(?P<val>{_TOKEN_SECRETS})"),
        _Detector("email", _EMAIL, _value_only(_email_valid)),
    ]
    assignment = _secret_assignment_pattern(cfg)
    if assignment:
        detectors.append(_Detector("secret", assignment, _secret_value_valid))
    detectors += [
        _Detector("iban", _IBAN, _value_only(lambda v, c: iban_valid(v))),
        _Detector("us_ssn", _SSN, _value_only(_ssn_valid)),
        _Detector("credit_card", _CARD, _card_valid, _card_rewrite, repeat=True),
        _Detector("ip_address", _IPV6, _value_only(_ipv6_redact)),
        _Detector("ip_address", _IPV4, _ipv4_redact),
        _Detector("phone", _PHONE, _phone_valid),
    ]
    enabled = set(cfg.enabled_types)
    return [d for d in detectors if d.pii_type in enabled]


def _apply_detector(texts: pl.Series, det: _Detector, cfg: PiiConfig) -> pl.Series:
    """Replace the validated matches of one detector in a String Series; everything else is left untouched."""
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


def _redact_texts(texts: pl.Series, cfg: PiiConfig) -> tuple[pl.Series, pl.DataFrame]:
    """Redact a String Series; returns the redacted texts and per-row hit counts per type (Int64 columns)."""
    texts = texts.cast(pl.String)
    if texts.str.contains(_MARKER_CHARS).any():
        texts = texts.str.replace_all(_MARKER_CHARS, "")
    before = _count_placeholders(texts)
    out = texts
    for det in _detectors(cfg):
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
    ``pii.too_many_hits`` for documents with more than ``cfg.max_hits_per_doc`` hits; one ``redact`` verdict per
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
    redacted, counts = _redact_texts(segments["_seg"], cfg)
    segments = pl.concat([segments.with_columns(redacted.alias("_seg")), counts], how="horizontal")

    # A chat document's text is usually a rendering of its messages: per type, count the larger of the two sides
    # so the same phone number in both is one hit, not two.
    per_doc = (
        segments.group_by("_row", pl.col("_msg") >= 0)
        .agg([pl.col(t).sum() for t in PII_TYPES])
        .group_by("_row")
        .agg([pl.col(t).max() for t in PII_TYPES])
        .with_columns(pii_total=pl.sum_horizontal(PII_TYPES))
    )
    out = rows.join(per_doc, on="_row", how="left", maintain_order="left").with_columns(
        pl.col("text").cast(pl.String)
    )
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
    out = out.with_columns(
        pl.struct([pl.col(t).fill_null(0) for t in PII_TYPES]).alias("pii_counts"),
        pl.col("pii_total").fill_null(0).cast(pl.Int64).alias("_total"),
    ).drop(["_row", "_text", "pii_total", *PII_TYPES]).rename({"_total": "pii_total"})

    verdicts, metrics = _verdicts(out, cfg)
    return split_by_verdicts(out, verdicts, metrics)


def _verdicts(docs: pl.DataFrame, cfg: PiiConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
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
    kept = counts.filter(~too_many)
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
        "documents_redacted": int(kept.filter(pl.col("pii_total") > 0).height),
        "hits_per_type": {t: int(counts[t].sum()) for t in PII_TYPES},
        "redactions_per_type": {t: int(kept[t].sum()) for t in PII_TYPES},
    }
    return pl.concat([drops, redactions], how="vertical_relaxed"), metrics


# ----- the independent residual scan -----------------------------------------------------------------------------
# Written apart from the redaction patterns: emails and IPv4/IPv6 are found as whole tokens and checked with
# anchored canonical patterns, the rest with their textbook shapes. Only the validators are shared.
_SCAN_TOKEN_EMAIL = r"[^\s<>()\[\]{}\"'`,;:=|/\\]+@[^\s<>()\[\]{}\"'`,;:=|/\\]+"
_SCAN_EMAIL_FULL = r"^[\w.%+\-]+@[\w\-]+(?:\.[\w\-]+)+$"
_SCAN_TOKEN_IPV4 = r"(?i)(?:\b(?:version|ver|release|build)\b[ :.]*)?[0-9A-Za-z_.]*[0-9]\.[0-9][0-9A-Za-z_.]*"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_SCAN_IPV4_FULL = rf"^{_OCTET}(?:\.{_OCTET}){{3}}$"
_SCAN_TOKEN_IPV6 = r"[0-9A-Za-z_:]*::?[0-9A-Za-z_:]*"
_H = "[0-9a-fA-F]{1,4}"
_SCAN_IPV6_FULL = (
    f"^(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|(?:{_H}:){{1,6}}:{_H}|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    f"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    f"|{_H}:(?::{_H}){{1,6}})$"
)
# National shapes may carry one leading "digit + space": trunk-0 numbers with it sit inside digit blocks and are
# dropped.
_SCAN_PHONE_NATIONAL = [
    r"\([2-9][0-9]{2}\) ?[0-9]{3}-[0-9]{4}\b",
    r"\b[2-9][0-9]{2}(?:-[0-9]{3}-|\.[0-9]{3}\.| [0-9]{3} )[0-9]{4}\b",
    r"\b0[1-9](?: [0-9]{2}){4}\b",
    r"\b0[1-9](?:\.[0-9]{2}){4}\b",
    r"\(0[1-9][0-9]{1,4}\) ?[0-9]{2,8}\b",
    r"\b0[1-9][0-9]{1,4}[-/ ][0-9]{2,8}(?:[- ][0-9]{2,8})?\b",
]
_SCAN_PHONE_INTERNATIONAL = r"\+[0-9]{1,3}(?:[ .\-]?\(0\))?(?:[ .\-]?\([0-9]+\))?(?:[ .\-]?[0-9]+){1,5}"
_SCAN_PHONE = _SCAN_PHONE_INTERNATIONAL + "|(?:[0-9] )?(?:" + "|".join(_SCAN_PHONE_NATIONAL) + ")"
_SCAN_CARD = r"\b(?:[0-9]{4}[- ]){3}[0-9]{4}\b|\b3[47][0-9]{2}[- ]?[0-9]{6}[- ]?[0-9]{5}\b|\b[0-9]{13,19}\b"
_SCAN_IBAN = r"\b[A-Z]{2}[0-9]{2}(?:[ ]?[0-9A-Z]{4}){2,7}(?:[ ]?[0-9A-Z]{1,4})?\b"
_SCAN_SSN = r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b"
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


def _scan_candidates(texts: pl.Series, pattern: str) -> pl.DataFrame:
    """Long frame (row, match) of every pattern match; row is the position in ``texts``."""
    return (
        pl.DataFrame({"m": texts.str.extract_all(pattern)})
        .with_row_index("row")
        .explode("m")
        .drop_nulls("m")
    )


def _scan_count(n_rows: int, found: pl.DataFrame, name: str) -> pl.Series:
    counts = found.group_by("row").agg(pl.len().cast(pl.Int64).alias(name))
    index = pl.DataFrame({"row": pl.int_range(n_rows, dtype=pl.UInt32, eager=True)})
    return index.join(counts, on="row", how="left").sort("row")[name].fill_null(0)


def scan_pii(texts: pl.Series, cfg: PiiConfig | None = None) -> pl.DataFrame:
    """Count PII still present in each text: one row per input row, an Int64 column per type plus ``total``.

    Used by the residual-PII gate on redacted output (which must scan to zero). Placeholders never count.
    """
    cfg = cfg or PiiConfig()
    texts = texts.cast(pl.String).fill_null("")
    n = len(texts)
    enabled = set(cfg.enabled_types)
    columns: dict[str, pl.Series] = {}

    if "email" in enabled:
        found = _scan_candidates(texts, _SCAN_TOKEN_EMAIL).with_columns(pl.col("m").str.strip_chars_end("."))
        found = found.filter(pl.col("m").str.contains(_SCAN_EMAIL_FULL))
        columns["email"] = _scan_count(n, _keep_valid(found, _email_valid(found["m"], cfg)), "email")
    if "phone" in enabled:
        found = _scan_candidates(texts, _SCAN_PHONE).filter(~pl.col("m").str.contains(r"^[0-9] \(?0"))
        found = found.with_columns(pl.col("m").str.replace(r"^[0-9] ", ""))
        no_prefix = pl.Series([""] * len(found), dtype=pl.String)
        columns["phone"] = _scan_count(n, _keep_valid(found, _phone_valid(found["m"], no_prefix, cfg)), "phone")
    if "ip_address" in enabled:
        v4 = _scan_candidates(texts, _SCAN_TOKEN_IPV4).with_columns(
            pre=pl.col("m").str.extract(r"(?i)^((?:version|ver|release|build)[ :.]*)", 1).fill_null("")
        )
        v4 = v4.with_columns(ip=pl.col("m").str.slice(pl.col("pre").str.len_chars()).str.strip_chars_end("."))
        v4 = v4.filter(pl.col("ip").str.contains(_SCAN_IPV4_FULL))
        v4 = _keep_valid(v4, _ipv4_redact(v4["ip"], v4["pre"], cfg))
        v6 = _scan_candidates(texts, _SCAN_TOKEN_IPV6).with_columns(pl.col("m").str.replace(r"([^:]):$", "${1}"))
        v6 = v6.filter(pl.col("m").str.contains(_SCAN_IPV6_FULL))
        v6 = _keep_valid(v6, _ipv6_redact(v6["m"], cfg))
        columns["ip_address"] = _scan_count(n, pl.concat([v4.select("row", "m"), v6.select("row", "m")]), "ip_address")
    if "credit_card" in enabled:
        found = _scan_candidates(texts, _SCAN_CARD)
        no_prefix = pl.Series([""] * len(found), dtype=pl.String)
        found = _keep_valid(found, _card_valid(found["m"], no_prefix, cfg))
        columns["credit_card"] = _scan_count(n, found, "credit_card")
    if "iban" in enabled:
        found = _scan_candidates(texts, _SCAN_IBAN)
        columns["iban"] = _scan_count(n, _keep_valid(found, iban_valid(found["m"])), "iban")
    if "us_ssn" in enabled:
        found = _scan_candidates(texts, _SCAN_SSN)
        columns["us_ssn"] = _scan_count(n, _keep_valid(found, _ssn_valid(found["m"], cfg)), "us_ssn")
    if "secret" in enabled:
        shapes = _scan_candidates(texts, "|".join(_SCAN_SECRET_SHAPES)).select("row", "m")
        assigned = _scan_assigned_secrets(texts, cfg)
        columns["secret"] = _scan_count(n, pl.concat([shapes, assigned]), "secret")
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
    found = _scan_candidates(texts, pattern)
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
