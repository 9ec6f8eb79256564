//! Argument normalisation: volatile values collapse to typed placeholders.
//!
//! One left-to-right pass over the bytes. Matchers run only at a *boundary*
//! (the start of the string, or a position after a byte that is not an ASCII
//! letter or digit), try the placeholder shapes in a fixed order and either
//! consume a span or fall through to copying. Every matcher looks ahead a
//! bounded distance or over a run it then consumes, so the pass is linear in
//! the input length. Non-ASCII text is copied unchanged.
//!
//! The placeholders are documented in `docs/embeddings.md`.

/// Placeholder for a universally unique identifier.
const UUID: &str = "<uuid>";
/// Placeholder for an ISO 8601 date or date-time.
const TIMESTAMP: &str = "<ts>";
/// Placeholder for a Unix time in seconds, milliseconds, micro- or nanoseconds.
const EPOCH: &str = "<epoch>";
/// Placeholder for an IPv4 address.
const IPV4: &str = "<ipv4>";
/// Placeholder for an IPv6 address.
const IPV6: &str = "<ipv6>";
/// Placeholder for a MAC address.
const MAC: &str = "<mac>";
/// Placeholder for a hexadecimal identifier (container ids, hashes, `0x…`).
const HEX: &str = "<hex>";
/// Placeholder for a long random-looking base64/base64url token.
const BASE64: &str = "<b64>";
/// Placeholder for the random part of a temporary file name.
const TEMP: &str = "<tmp>";
/// Placeholder for a number (integers, decimals, dotted versions).
const NUMBER: &str = "<num>";

/// Longest base64-ish candidate that is inspected; longer runs are judged by
/// their first `B64_INSPECT` bytes (and consumed whole).
const B64_INSPECT: usize = 1024;
/// Shortest base64-ish token that is collapsed.
const B64_MIN: usize = 20;
/// Longest path segment inspected for a temporary name.
const TEMP_SEGMENT_MAX: usize = 255;
/// Directories whose direct children are temporary names when they look random.
const TEMP_DIRS: [&[u8]; 3] = [b"/tmp/", b"/var/tmp/", b"/dev/shm/"];

/// Normalises a process argument string for embedding and caching.
///
/// Numbers, hex ids, UUIDs, ISO timestamps, epoch times, IPv4/IPv6 and MAC
/// addresses, temporary file names and long base64-ish tokens become typed
/// placeholders (`<num>`, `<hex>`, `<uuid>`, `<ts>`, `<epoch>`, `<ipv4>`,
/// `<ipv6>`, `<mac>`, `<tmp>`, `<b64>`); runs of whitespace and control
/// characters become one space and the ends are trimmed. The result is the
/// exact-cache key, so two invocations that differ only in such values share
/// one embedding.
///
/// ```
/// use kestrel_embed::normalize;
/// assert_eq!(
///     normalize("java -jar app.jar --timestamp=12345"),
///     normalize("java -jar app.jar --timestamp=99999"),
/// );
/// assert_eq!(
///     normalize("curl http://10.0.0.7:8080/api?id=550e8400-e29b-41d4-a716-446655440000"),
///     "curl http://<ipv4>:<num>/api?id=<uuid>",
/// );
/// ```
pub fn normalize(text: &str) -> String {
    let b = text.as_bytes();
    let n = b.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    // End of the last base64 candidate run that was rejected: no new base64
    // check starts inside it (keeps the pass linear).
    let mut b64_rejected_until = 0usize;
    let mut i = 0usize;
    while i < n {
        let c = b[i];
        if c.is_ascii_whitespace() || c.is_ascii_control() {
            let mut j = i + 1;
            while j < n && (b[j].is_ascii_whitespace() || b[j].is_ascii_control()) {
                j += 1;
            }
            if !out.is_empty() && j < n {
                out.push(b' ');
            }
            i = j;
            continue;
        }
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if boundary && (c.is_ascii_alphanumeric() || c == b':') {
            if let Some((len, placeholder)) = match_at(b, i, &mut b64_rejected_until) {
                out.extend_from_slice(placeholder.as_bytes());
                i += len;
                continue;
            }
        }
        if c.is_ascii_digit() {
            let j = digit_run_end(b, i);
            let glued_to_letter = i > 0 && b[i - 1].is_ascii_alphabetic();
            if glued_to_letter && j - i <= 3 {
                // `python3`, `x86`, `sha256`, `log4j`: part of a name, not a value.
                out.extend_from_slice(&b[i..j]);
            } else {
                out.extend_from_slice(NUMBER.as_bytes());
            }
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() {
            let mut j = i + 1;
            while j < n && b[j].is_ascii_alphabetic() {
                j += 1;
            }
            out.extend_from_slice(&b[i..j]);
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    // Only whole ASCII spans were replaced or dropped, so `out` is valid UTF-8;
    // the lossy fallback is unreachable but keeps this function panic-free.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Tries every placeholder shape at boundary position `i`, in priority order.
fn match_at(b: &[u8], i: usize, b64_rejected_until: &mut usize) -> Option<(usize, &'static str)> {
    if b[i] == b':' {
        // Only `::`-led IPv6 (`::1`, `[::]:80`) starts with a colon.
        return match_ipv6(b, i).map(|len| (len, IPV6));
    }
    if let Some(len) = match_temp(b, i) {
        return Some((len, TEMP));
    }
    if let Some(len) = match_uuid(b, i) {
        return Some((len, UUID));
    }
    if let Some(len) = match_timestamp(b, i) {
        return Some((len, TIMESTAMP));
    }
    if let Some(len) = match_mac(b, i) {
        return Some((len, MAC));
    }
    if let Some(len) = match_ipv6(b, i) {
        return Some((len, IPV6));
    }
    if let Some(len) = match_hex(b, i) {
        return Some((len, HEX));
    }
    if i >= *b64_rejected_until {
        match match_base64(b, i) {
            Ok(len) => return Some((len, BASE64)),
            Err(run_end) => *b64_rejected_until = run_end,
        }
    }
    if b[i].is_ascii_digit() {
        return Some(match_number(b, i));
    }
    None
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

/// True when `i` is the end of the input or not followed by a letter or digit.
fn ends_token(b: &[u8], i: usize) -> bool {
    i >= b.len() || !b[i].is_ascii_alphanumeric()
}

fn digit_run_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

fn hex_run_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_hex(b[i]) {
        i += 1;
    }
    i
}

/// Exactly `count` digits at `i`.
fn digits(b: &[u8], i: usize, count: usize) -> bool {
    i + count <= b.len() && b[i..i + count].iter().all(u8::is_ascii_digit)
}

/// `8-4-4-4-12` hex digits.
fn match_uuid(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    for (k, len) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if k > 0 {
            if b.get(p) != Some(&b'-') {
                return None;
            }
            p += 1;
        }
        if p + len > b.len() || !b[p..p + len].iter().all(|&c| is_hex(c)) {
            return None;
        }
        p += len;
    }
    ends_token(b, p).then_some(p - i)
}

/// `YYYY-MM-DD`, optionally followed by `T`/space/`_` and `hh:mm[:ss[.frac]]`
/// and a zone (`Z`, `±hh:mm`, `±hhmm`).
fn match_timestamp(b: &[u8], i: usize) -> Option<usize> {
    if !(digits(b, i, 4)
        && b.get(i + 4) == Some(&b'-')
        && digits(b, i + 5, 2)
        && b.get(i + 7) == Some(&b'-')
        && digits(b, i + 8, 2))
    {
        return None;
    }
    let mut p = i + 10;
    let has_time = matches!(b.get(p), Some(b'T' | b't' | b' ' | b'_'))
        && digits(b, p + 1, 2)
        && b.get(p + 3) == Some(&b':')
        && digits(b, p + 4, 2);
    if has_time {
        p += 6;
        if b.get(p) == Some(&b':') && digits(b, p + 1, 2) {
            p += 3;
            if matches!(b.get(p), Some(b'.' | b',')) && b.get(p + 1).is_some_and(u8::is_ascii_digit)
            {
                p = digit_run_end(b, p + 1);
            }
        }
        match b.get(p) {
            Some(b'Z' | b'z') => p += 1,
            Some(b'+' | b'-') if digits(b, p + 1, 2) => {
                if b.get(p + 3) == Some(&b':') && digits(b, p + 4, 2) {
                    p += 6;
                } else if digits(b, p + 3, 2) {
                    p += 5;
                } else {
                    p += 3;
                }
            }
            _ => {}
        }
    }
    ends_token(b, p).then_some(p - i)
}

/// Six pairs of hex digits separated by `:` or `-` (one separator kind).
fn match_mac(b: &[u8], i: usize) -> Option<usize> {
    let sep = *b.get(i + 2)?;
    if sep != b':' && sep != b'-' {
        return None;
    }
    for k in 0..6 {
        let p = i + k * 3;
        if p + 2 > b.len() || !is_hex(b[p]) || !is_hex(b[p + 1]) {
            return None;
        }
        if k < 5 && b.get(p + 2) != Some(&sep) {
            return None;
        }
    }
    let end = i + 17;
    ends_token(b, end).then_some(17)
}

/// An address that `std::net::Ipv6Addr` parses, with at least two colons and
/// a digit (or exactly `::`), so `std::io` or `a::b` stay text.
fn match_ipv6(b: &[u8], i: usize) -> Option<usize> {
    const MAX: usize = 45;
    let mut end = i;
    let mut colons = 0usize;
    while end < b.len() && end - i <= MAX && (is_hex(b[end]) || b[end] == b':' || b[end] == b'.') {
        colons += usize::from(b[end] == b':');
        end += 1;
    }
    if end - i > MAX || colons < 2 {
        return None;
    }
    // A trailing `:` or `.` belongs to the surrounding text (`[::1]:`, `addr.`),
    // except for the `::` shorthand itself.
    while end > i + 2
        && matches!(b[end - 1], b'.' | b':')
        && !(b[end - 1] == b':' && b[end - 2] == b':')
    {
        end -= 1;
    }
    if !ends_token(b, end) {
        return None;
    }
    let s = std::str::from_utf8(&b[i..end]).ok()?;
    let has_digit = s.bytes().any(|c| c.is_ascii_digit());
    (s.parse::<std::net::Ipv6Addr>().is_ok() && (has_digit || s == "::")).then_some(end - i)
}

/// `0x` + hex digits, or a run of ≥ 8 hex digits with at least one digit and
/// one letter `a–f` in a single case (container ids, git hashes, digests).
fn match_hex(b: &[u8], i: usize) -> Option<usize> {
    if b[i] == b'0'
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(|&c| is_hex(c))
    {
        let end = hex_run_end(b, i + 2);
        return ends_token(b, end).then_some(end - i);
    }
    let end = hex_run_end(b, i);
    if end - i < 8 || !ends_token(b, end) {
        return None;
    }
    let run = &b[i..end];
    let has_digit = run.iter().any(u8::is_ascii_digit);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    let upper = run.iter().any(u8::is_ascii_uppercase);
    (has_digit && (lower ^ upper)).then_some(end - i)
}

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-')
}

/// A long token over the base64/base64url alphabet (plus `=` padding) that
/// looks random: ≥ 20 characters with upper case, lower case and digits, a
/// class change at ≥ 30 % of adjacent pairs, a separator-free stretch of
/// ≥ 12 characters and few `/` (so paths stay paths). On rejection returns
/// the end of the candidate run.
fn match_base64(b: &[u8], i: usize) -> Result<usize, usize> {
    let mut end = i;
    while end < b.len() && is_b64(b[end]) {
        end += 1;
    }
    let body_end = end;
    while end < b.len() && b[end] == b'=' && end - body_end < 2 {
        end += 1;
    }
    let len = body_end - i;
    if len < B64_MIN {
        return Err(end);
    }
    let inspect = &b[i..i + len.min(B64_INSPECT)];
    let (mut upper, mut lower, mut digit) = (false, false, false);
    let (mut changes, mut slashes, mut stretch, mut longest) = (0usize, 0usize, 0usize, 0usize);
    let class = |c: u8| -> u8 {
        if c.is_ascii_uppercase() {
            0
        } else if c.is_ascii_lowercase() {
            1
        } else if c.is_ascii_digit() {
            2
        } else {
            3
        }
    };
    let mut prev = 255u8;
    for &c in inspect {
        let k = class(c);
        upper |= k == 0;
        lower |= k == 1;
        digit |= k == 2;
        if k == 3 {
            slashes += usize::from(c == b'/');
            stretch = 0;
        } else {
            stretch += 1;
            longest = longest.max(stretch);
        }
        if prev != 255 && k != prev {
            changes += 1;
        }
        prev = k;
    }
    let n = inspect.len();
    let random =
        upper && lower && digit && changes * 10 >= n * 3 && longest >= 12 && slashes * 16 <= n;
    if random {
        Ok(end - i)
    } else {
        Err(end)
    }
}

/// A number at a boundary: Unix times (10/13/16/19 digits starting with `1`,
/// optional fraction) → `<epoch>`, four dotted octets → `<ipv4>`, anything
/// else digits-and-dots (`42`, `3.14`, `1.2.3`) → `<num>`.
fn match_number(b: &[u8], i: usize) -> (usize, &'static str) {
    let first_end = digit_run_end(b, i);
    let mut end = first_end;
    let mut parts = 1usize;
    let mut octets = first_end - i <= 3;
    let octet_ok =
        |s: &[u8]| s.len() <= 3 && s.iter().fold(0u32, |v, &c| v * 10 + u32::from(c - b'0')) <= 255;
    octets &= octet_ok(&b[i..first_end]);
    while end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
        let part_end = digit_run_end(b, end + 1);
        octets &= octet_ok(&b[end + 1..part_end]);
        parts += 1;
        end = part_end;
    }
    let first_len = first_end - i;
    if b[i] == b'1' && matches!(first_len, 10 | 13 | 16 | 19) && parts <= 2 {
        return (end - i, EPOCH);
    }
    if parts == 4 && octets {
        return (end - i, IPV4);
    }
    (end - i, NUMBER)
}

/// A temporary name: `tmp` + optional `.`/`_`/`-` + ≥ 6 random characters
/// (mktemp, Python `tempfile`), or a random-looking path segment directly
/// under `/tmp/`, `/var/tmp/` or `/dev/shm/` (≥ 6 characters with ≥ 2 digits
/// and ≥ 2 letters, or ≥ 3 case changes). A file extension is kept
/// (`/tmp/tmpab12cd34.py` → `/tmp/<tmp>.py`).
fn match_temp(b: &[u8], i: usize) -> Option<usize> {
    let seg_end = {
        let mut e = i;
        while e < b.len()
            && e - i <= TEMP_SEGMENT_MAX
            && (b[e].is_ascii_alphanumeric() || matches!(b[e], b'_' | b'-' | b'.'))
        {
            e += 1;
        }
        e
    };
    if seg_end - i > TEMP_SEGMENT_MAX {
        return None;
    }
    let seg = &b[i..seg_end];
    // Keep a short alphabetic extension out of the placeholder.
    let stem_len = match seg.iter().rposition(|&c| c == b'.') {
        Some(dot)
            if dot > 0
                && seg.len() - dot - 1 <= 5
                && seg[dot + 1..].iter().all(u8::is_ascii_alphabetic)
                && seg.len() > dot + 1 =>
        {
            dot
        }
        _ => seg.len(),
    };
    let stem = &seg[..stem_len];
    if stem.len() >= 9 && stem[..3].eq_ignore_ascii_case(b"tmp") {
        let rest = if matches!(stem[3], b'.' | b'_' | b'-') {
            &stem[4..]
        } else {
            &stem[3..]
        };
        let random_chars = rest.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let mixed = rest
            .iter()
            .any(|&c| c.is_ascii_digit() || c.is_ascii_uppercase());
        if rest.len() >= 6 && random_chars && mixed {
            return Some(stem_len);
        }
    }
    let under_temp_dir = TEMP_DIRS
        .iter()
        .any(|d| i >= d.len() && &b[i - d.len()..i] == *d);
    if under_temp_dir && stem.len() >= 6 {
        let digits = stem.iter().filter(|c| c.is_ascii_digit()).count();
        let letters = stem.iter().filter(|c| c.is_ascii_alphabetic()).count();
        let case_changes = stem
            .windows(2)
            .filter(|w| {
                w[0].is_ascii_alphabetic()
                    && w[1].is_ascii_alphabetic()
                    && w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase()
            })
            .count();
        if (digits >= 2 && letters >= 2) || case_changes >= 3 {
            return Some(stem_len);
        }
    }
    None
}

/// How each placeholder is spelled in the text given to the model: one word
/// piece each (`<num>` alone is four: `<` `nu` `##m` `>`), which cuts 11–13 %
/// of the tokens of real argument strings. The normalised string, with its
/// `<…>` placeholders, stays the cache key and what people see.
const MODEL_SPELLING: [(&str, &str); 10] = [
    (NUMBER, "0"),
    (IPV4, "ip"),
    (IPV6, "ip"),
    (UUID, "id"),
    (HEX, "hash"),
    (BASE64, "key"),
    (TEMP, "file"),
    (TIMESTAMP, "date"),
    (EPOCH, "time"),
    (MAC, "mac"),
];

/// The text the model embeds for a normalised string: each placeholder
/// spelled as one word piece ([`MODEL_SPELLING`]); other text unchanged.
///
/// ```
/// use kestrel_embed::model_text;
/// assert_eq!(model_text("-p <num> -h <ipv4> --id=<uuid>"), "-p 0 -h ip --id=id");
/// assert_eq!(model_text("<numb> <>"), "<numb> <>");
/// ```
pub fn model_text(normalised: &str) -> std::borrow::Cow<'_, str> {
    if !normalised.contains('<') {
        return normalised.into();
    }
    let mut out = String::with_capacity(normalised.len());
    let mut rest = normalised;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match MODEL_SPELLING.iter().find(|(p, _)| rest.starts_with(p)) {
            Some((p, spelled)) => {
                out.push_str(spelled);
                rest = &rest[p.len()..];
            }
            None => {
                out.push('<');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_given_as_numbers_collapse_to_one_key() {
        assert_eq!(
            normalize("java -jar app.jar --timestamp=12345"),
            "java -jar app.jar --timestamp=<num>"
        );
        assert_eq!(
            normalize("java -jar app.jar --timestamp=12345"),
            normalize("java -jar app.jar --timestamp=99999")
        );
    }

    #[test]
    fn each_value_kind_gets_its_typed_placeholder() {
        let cases = [
            ("id=550e8400-e29b-41d4-a716-446655440000", "id=<uuid>"),
            ("at 2024-05-01T12:30:45.123Z", "at <ts>"),
            ("since 2024-05-01 12:30:45+02:00 ok", "since <ts> ok"),
            ("day 2024-05-01", "day <ts>"),
            ("--since=1714566645", "--since=<epoch>"),
            ("t=1714566645123", "t=<epoch>"),
            ("t=1714566645.25", "t=<epoch>"),
            ("connect 192.168.10.7:8080", "connect <ipv4>:<num>"),
            ("listen [::1]:443", "listen [<ipv6>]:<num>"),
            ("peer fe80::1ff:fe23:4567:890a", "peer <ipv6>"),
            ("bind [::]:80", "bind [<ipv6>]:<num>"),
            ("hw 00:1a:2b:3c:4d:5e", "hw <mac>"),
            ("docker exec 3f4e5d6c7b8a sh", "docker exec <hex> sh"),
            ("addr 0xdeadbeef", "addr <hex>"),
            (
                "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "sha256:<hex>",
            ),
            (
                "--token=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
                "--token=<b64>",
            ),
            ("python /tmp/tmpa1b2c3d4.py", "python /tmp/<tmp>.py"),
            ("sh /tmp/tmp.Xy3kLm9QzA", "sh /tmp/<tmp>"),
            ("cat /dev/shm/Ab3dE9xyZ1", "cat /dev/shm/<tmp>"),
            (
                "-Xmx2048m -Xss512k worker12345",
                "-Xmx<num>m -Xss512k worker<num>",
            ),
            ("node v18.17.0", "node v18.<num>"),
            ("retry 3.5", "retry <num>"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "input {input:?}");
            assert_eq!(normalize(want), want, "not idempotent on {want:?}");
        }
    }

    #[test]
    fn names_and_words_are_left_alone() {
        let cases = [
            "python3 -m http.server",
            "nginx -g daemon off;",
            "/usr/lib/jvm/java-17-openjdk/bin/java",
            "/opt/MyApplicationServer/Config/FileName.yaml",
            "/tmp/xmrig -o stratum+tcp://pool.minexmr.com",
            "/tmp/kinsing2",
            "std::io::Error",
            "log4j x86 h2 md5sum k8s",
            "/tmp/hsperfdata_root",
            "tmpfiles --create",
        ];
        for input in cases {
            assert_eq!(
                normalize(input),
                input.replace("-17-", "-<num>-"),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn whitespace_runs_and_control_characters_collapse_to_one_space() {
        assert_eq!(normalize("  a \t\n b\u{0}c  "), "a b c");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \t "), "");
    }

    #[test]
    fn non_ascii_text_is_copied_unchanged() {
        assert_eq!(normalize("échec 42 фaйл"), "échec <num> фaйл");
    }

    #[test]
    fn pathological_inputs_finish_quickly() {
        let long_path = "a/".repeat(60_000);
        let long_b64 = "aB3+".repeat(30_000);
        let dots = "1.".repeat(60_000);
        let colons = "a:".repeat(60_000);
        for s in [long_path, long_b64, dots, colons] {
            let start = std::time::Instant::now();
            let _ = normalize(&s);
            assert!(start.elapsed() < std::time::Duration::from_secs(1));
        }
    }

    #[test]
    fn every_placeholder_has_a_one_word_model_spelling() {
        let all = [
            UUID, TIMESTAMP, EPOCH, IPV4, IPV6, MAC, HEX, BASE64, TEMP, NUMBER,
        ];
        for p in all {
            let spelled = model_text(p);
            assert!(!spelled.contains('<'), "{p} -> {spelled}");
            assert!(
                spelled.chars().all(|c| c.is_ascii_alphanumeric()),
                "{p} -> {spelled}"
            );
        }
        assert_eq!(model_text("a<num>b <<num>>"), "a0b <0>");
        assert_eq!(model_text("no placeholders"), "no placeholders");
    }
}
