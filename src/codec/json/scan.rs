//! A single-pass reader for the shape producers actually send: one flat object whose
//! values are ASCII strings without escapes, non-negative integers or `null`.
//!
//! Why: serde_json's derived deserializer spends most of a record's time on field-name
//! matching, per-string UTF-8 checks and `Option`/`Cow` visitors. This reads such a
//! record in one scan of its bytes. It never decides anything serde_json
//! would decide differently: on whatever it does not handle (an escape, a non-ASCII byte,
//! a nested value, a float, a repeated field, bad syntax) it returns `None` and the record
//! goes through serde_json, which accepts or rejects it. The property test below and the
//! `decode_json` fuzz target check that every record it reads, serde_json reads the same.

use super::Flat;

/// What one value was.
enum Value<'a> {
    Str(&'a str),
    Int(u32),
    Null,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    /// The body of a string after its opening quote, up to the closing one: only
    /// printable ASCII without backslashes (so it is valid UTF-8 and needs no unescaping).
    /// Eight bytes at a time: strings are most of a record's bytes. (Trying first the
    /// length the field had in the previous record, its words tested independently, is
    /// slower: the loop's exit is predicted as well, and the guess costs its own checks.)
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        let (b, start) = (self.b, self.i);
        let mut i = start;
        let end = loop {
            match b.get(i..i + 8) {
                Some(w) => {
                    let word = u64::from_le_bytes(<[u8; 8]>::try_from(w).ok()?);
                    let flags = special(word);
                    if flags != 0 {
                        break i + (flags.trailing_zeros() / 8) as usize;
                    }
                    i += 8;
                }
                None => break i + b[i..].iter().position(|&c| is_special(c))?,
            }
        };
        if b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        let plain = &b[start..end];
        // SAFETY: every byte of `plain` passed `special`: printable ASCII (0x20..0x80), so
        // the bytes are valid UTF-8. (Checking each string, or the whole record, as UTF-8
        // cost more than the scan.)
        #[allow(unsafe_code)]
        Some(unsafe { std::str::from_utf8_unchecked(plain) })
    }

    /// A key after its opening quote, as its field number (16: unknown, ignored as
    /// serde_json ignores it). The known names are compared in place, picked by their
    /// first byte, rather than scanned for their closing quote and then matched. (A table
    /// looked up by a hash of a key's first bytes is slower: the branch per first byte is
    /// predicted, while a lookup puts a load and a multiply between one field's position
    /// and the next one's.)
    #[inline]
    fn key(&mut self) -> Option<u8> {
        let rest = &self.b[self.i..];
        // Literal names (with the closing quote): fixed-length compares the compiler
        // inlines, where a table of names cost a `memcmp` call each.
        let known: Option<(u8, usize)> = match rest.first()? {
            b'e' if rest.starts_with(b"event_id\"") => Some((0, 9)),
            b'e' if rest.starts_with(b"enqueued_at\"") => Some((7, 12)),
            b'e' if rest.starts_with(b"error\"") => Some((11, 6)),
            b't' if rest.starts_with(b"tenant\"") => Some((1, 7)),
            b'p' if rest.starts_with(b"platform\"") => Some((2, 9)),
            b'd' if rest.starts_with(b"direction\"") => Some((3, 10)),
            b'a' if rest.starts_with(b"attempt\"") => Some((4, 8)),
            b'm' if rest.starts_with(b"max_attempts\"") => Some((5, 13)),
            b'o' if rest.starts_with(b"outcome\"") => Some((6, 8)),
            b's' if rest.starts_with(b"started_at\"") => Some((8, 11)),
            b'c' if rest.starts_with(b"completed_at\"") => Some((9, 13)),
            b'h' if rest.starts_with(b"http_status\"") => Some((10, 12)),
            _ => None,
        };
        if let Some((field, len)) = known {
            self.i += len;
            return Some(field);
        }
        self.string()?;
        Some(16)
    }

    /// `0` or a digit string without a leading zero that fits a u32, ended by what can
    /// follow a value (so `1.5`, `1e3` and `-1` are left to serde_json).
    #[inline]
    fn int(&mut self, first: u8) -> Option<u32> {
        let mut n = u64::from(first - b'0');
        let mut digits = 1;
        while let Some(&c @ b'0'..=b'9') = self.b.get(self.i) {
            if n == 0 || digits == 10 {
                return None;
            }
            n = n * 10 + u64::from(c - b'0');
            digits += 1;
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}') => u32::try_from(n).ok(),
            _ => None,
        }
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.next()? {
            b'"' => self.string().map(Value::Str),
            b'n' => {
                let lit = self.b.get(self.i..self.i + 3)?;
                self.i += 3;
                (lit == b"ull").then_some(Value::Null)
            }
            c @ b'0'..=b'9' => self.int(c).map(Value::Int),
            _ => None,
        }
    }
}

/// What ends the plain part of a string: its closing quote, or what the scanner leaves to
/// serde_json (a backslash, a control character, a non-ASCII byte).
#[inline]
fn is_special(c: u8) -> bool {
    !(0x20..0x80).contains(&c) || c == b'"' || c == b'\\'
}

/// [`is_special`] for eight bytes (little-endian): the lowest set high bit marks the first
/// special byte. (Bytes after a special one may be flagged wrongly by borrows; only the
/// first flag is used.)
#[inline]
fn special(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    let quote = zero(x ^ (ONES * u64::from(b'"')));
    let backslash = zero(x ^ (ONES * u64::from(b'\\')));
    quote | backslash | below_space | (x & HIGH)
}

/// The fields of a record of the simple shape, or `None` for serde_json to decide.
pub(super) fn scan(bytes: &[u8]) -> Option<Flat<'_>> {
    let mut c = Cursor { b: bytes, i: 0 };
    let mut f = Flat::default();
    let mut seen = 0u16;
    c.ws();
    if c.next()? != b'{' {
        return None;
    }
    c.ws();
    if c.b.get(c.i) == Some(&b'}') {
        c.i += 1;
    } else {
        loop {
            if c.next()? != b'"' {
                return None;
            }
            let field = c.key()?;
            c.ws();
            if c.next()? != b':' {
                return None;
            }
            c.ws();
            let v = c.value()?;
            if field < 16 {
                if seen & (1 << field) != 0 {
                    return None; // serde_json rejects a repeated field
                }
                seen |= 1 << field;
                set(&mut f, field, v)?;
            }
            c.ws();
            match c.next()? {
                b',' => c.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.ws();
    (c.i == bytes.len()).then_some(f)
}

/// Stores a known field's value where its type allows it (`None`: serde_json decides,
/// e.g. a string where a number belongs, or `null` for a count).
fn set<'a>(f: &mut Flat<'a>, field: u8, v: Value<'a>) -> Option<()> {
    let text = |v: Value<'a>| match v {
        Value::Str(s) => Some(Some(s)),
        Value::Null => Some(None),
        Value::Int(_) => None,
    };
    match field {
        0 => f.event_id = text(v)?,
        1 => f.tenant = text(v)?,
        2 => f.platform = text(v)?,
        3 => f.direction = text(v)?,
        4 | 5 => {
            let Value::Int(n) = v else { return None };
            if field == 4 {
                f.attempt = n;
            } else {
                f.max_attempts = n;
            }
        }
        6 => f.outcome = text(v)?,
        7 => f.enqueued_at = text(v)?,
        8 => f.started_at = text(v)?,
        9 => f.completed_at = text(v)?,
        10 => {
            f.http_status = match v {
                Value::Int(n) => Some(n),
                Value::Null => None,
                Value::Str(_) => return None,
            }
        }
        _ => f.error = text(v)?,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_the_generator_writes() {
        let line = br#"{"event_id":"e-1","tenant":"globex","platform":"workday","direction":"outbound","attempt":2,"max_attempts":5,"outcome":"delivered","enqueued_at":"2025-10-01T00:00:00.000Z","started_at":"2025-10-01T00:00:00.100Z","completed_at":"2025-10-01T00:00:00.350Z","http_status":200,"error":""}"#;
        let f = scan(line).expect("the simple shape is scanned");
        assert_eq!(f.tenant, Some("globex"));
        assert_eq!(
            (f.attempt, f.max_attempts, f.http_status),
            (2, 5, Some(200))
        );
        assert_eq!(f.error, Some(""));
        assert_eq!(super::super::scanner_agrees(line), Ok(true));
    }

    #[test]
    fn leaves_to_serde_json_what_it_does_not_handle() {
        for s in [
            r#"{"tenant":"a\"b"}"#,           // escape
            r#"{"tenant":"é"}"#,              // non-ASCII
            r#"{"x":{"y":1}}"#,               // nested unknown field
            r#"{"attempt":1.0}"#,             // float
            r#"{"attempt":-1}"#,              // negative
            r#"{"attempt":01}"#,              // leading zero
            r#"{"attempt":4294967296}"#,      // beyond u32
            r#"{"attempt":null}"#,            // null count
            r#"{"tenant":"a","tenant":"b"}"#, // repeated field
            r#"{"tenant":"a",}"#,             // trailing comma
            r#"{"tenant":"a"} x"#,            // trailing bytes
            r#"{"tenant":1}"#,                // number for a string
            r#"{"http_status":"200"}"#,       // string for a number
            r#"{"flag":true}"#,               // boolean
        ] {
            assert!(scan(s.as_bytes()).is_none(), "{s}");
        }
    }

    #[test]
    fn the_word_test_finds_the_first_special_byte() {
        for pos in 0..8 {
            for c in (0u8..=255).filter(|&c| is_special(c)) {
                let mut w = *b"abcdefgh";
                w[pos] = c;
                if pos < 7 {
                    w[pos + 1] = b'"';
                }
                let flags = special(u64::from_le_bytes(w));
                assert_eq!(
                    (flags.trailing_zeros() / 8) as usize,
                    pos,
                    "byte {c:#x} at {pos}"
                );
            }
        }
        assert_eq!(special(u64::from_le_bytes(*b" ~az09:Z")), 0);
    }

    /// Pieces of records, right and wrong, from which the property test builds lines.
    fn piece() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("event_id"),
            Just("tenant"),
            Just("platform"),
            Just("direction"),
            Just("attempt"),
            Just("max_attempts"),
            Just("outcome"),
            Just("enqueued_at"),
            Just("started_at"),
            Just("completed_at"),
            Just("http_status"),
            Just("error"),
            Just("extra"),
            Just("Tenant"),
            Just(""),
        ];
        let value = prop_oneof![
            8 => "[a-z0-9:.TZ-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            1 => Just("\"a\\\"b\"".to_string()),
            1 => Just("\"\\u00e9\"".to_string()),
            1 => Just("\"é\"".to_string()),
            1 => Just("\"a\tb\"".to_string()),
            3 => (0u64..6_000_000_000).prop_map(|n| n.to_string()),
            3 => (0u64..1000).prop_map(|n| n.to_string()),
            1 => prop_oneof![Just("0"), Just("00"), Just("-1"), Just("1.5"), Just("2e3"), Just("7x")]
                .prop_map(str::to_string),
            3 => Just("null".to_string()),
            1 => Just("nul".to_string()),
            1 => Just("true".to_string()),
            1 => Just("[1,{\"a\":null}]".to_string()),
            1 => Just("{}".to_string()),
        ];
        let ws = prop_oneof![Just(""), Just(""), Just(" "), Just("\n\t"), Just("\r ")];
        (key, ws.clone(), value, ws).prop_map(|(k, a, v, b)| format!("\"{k}\"{a}:{b}{v}"))
    }

    /// A well-formed record: distinct keys in any order, values mostly of their field's
    /// type, any JSON whitespace between tokens.
    fn record() -> impl Strategy<Value = String> {
        const KEYS: [&str; 15] = [
            "event_id",
            "tenant",
            "platform",
            "direction",
            "attempt",
            "max_attempts",
            "outcome",
            "enqueued_at",
            "started_at",
            "completed_at",
            "http_status",
            "error",
            "extra",
            "note",
            "Tenant",
        ];
        let ws = || prop_oneof![4 => Just(""), 1 => Just(" "), 1 => Just("\r\n\t ")];
        // Plain strings of any length (the scanner reads words of eight bytes), and some
        // with one byte it must leave to serde_json at any position.
        let text = || {
            let plain = || "[ -!#-\\[\\]-~]{0,40}";
            let odd = prop_oneof![
                Just("\\\""),
                Just("\\\\"),
                Just("\\n"),
                Just("\\u00e9"),
                Just("é"),
                Just("\t"),
                Just("\u{1}"),
                Just("\u{7f}"),
                Just("\\x")
            ];
            prop_oneof![
                12 => plain().prop_map(|s| format!("\"{s}\"")),
                1 => (plain(), odd, plain()).prop_map(|(a, o, b)| format!("\"{a}{o}{b}\"")),
            ]
        };
        let int = || {
            prop_oneof![
                8 => prop_oneof![4 => 0u64..100_000, 1 => 0u64..6_000_000_000].prop_map(|n| n.to_string()),
                1 => "0[0-9]{1,3}|-?[0-9]{1,3}(\\.[0-9])?([eE][+-]?[0-9])?",
            ]
        };
        let value = move |k: &str| -> BoxedStrategy<String> {
            match k {
                "attempt" | "max_attempts" => prop_oneof![9 => int(), 1 => text()].boxed(),
                "http_status" => {
                    prop_oneof![6 => int(), 3 => Just("null".into()), 1 => text()].boxed()
                }
                "extra" | "note" => prop_oneof![text(), int(), Just("null".into())].boxed(),
                _ => prop_oneof![8 => text(), 2 => Just("null".into()), 1 => int()].boxed(),
            }
        };
        prop::sample::subsequence(KEYS.to_vec(), 0..=KEYS.len())
            .prop_shuffle()
            .prop_flat_map(move |keys| {
                keys.into_iter()
                    .map(|k| (Just(k), value(k), ws(), ws(), ws()))
                    .collect::<Vec<_>>()
            })
            .prop_map(|fields| {
                let body: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v, a, b, c)| format!("{a}\"{k}\"{b}:{c}{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            })
    }

    fn line() -> impl Strategy<Value = String> {
        let sep = prop_oneof![
            Just(","),
            Just(","),
            Just(","),
            Just(", "),
            Just(""),
            Just(",,")
        ];
        let end = prop_oneof![
            Just("}"),
            Just("}"),
            Just("} "),
            Just(""),
            Just("}x"),
            Just("}}"),
            Just(",}")
        ];
        (
            prop::collection::vec((piece(), sep), 0..14),
            end,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(pieces, end, lead)| {
                let mut s = String::from(if lead { " {" } else { "{" });
                for (i, (p, sep)) in pieces.iter().enumerate() {
                    if i > 0 {
                        s.push_str(sep);
                    }
                    s.push_str(p);
                }
                s.push_str(end);
                s
            })
    }

    /// The property below means something only if many of its records take the scanner.
    #[test]
    fn most_generated_records_take_the_scanner() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = record();
        let scanned = (0..1000)
            .filter(|_| {
                let line = strategy.new_tree(&mut runner).map(|t| t.current());
                line.is_ok_and(|l| scan(l.as_bytes()).is_some())
            })
            .count();
        assert!(scanned >= 300, "only {scanned} of 1000 records scanned");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Whatever the scanner reads, serde_json reads the same; whatever serde_json
        /// rejects, the scanner leaves to it.
        #[test]
        fn agrees_with_serde_json(s in prop_oneof![line(), record()]) {
            let agrees = super::super::scanner_agrees(s.as_bytes());
            prop_assert!(agrees.is_ok(), "{}: {:?}", s, agrees);
        }
    }
}
