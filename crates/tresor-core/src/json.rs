//! The strict JSON reader for values, and the two measures the limits need.
//!
//! [`parse_strict`] accepts exactly the RFC 8259 grammar and enforces the contract's value rules
//! (API.md, "Conventions", Values): valid UTF-8, no repeated member names, a nesting limit checked
//! while descending, and numbers kept exactly as written. serde_json cannot be used for this: it
//! accepts repeated names (the last wins), and with `arbitrary_precision` it rewrites exponents
//! (`1e400` becomes `1e+400`, `1E5` becomes `1e+5`), so a value would not round-trip as written.
//!
//! The parser is iterative (an explicit stack of open containers), so neither a deep input nor a
//! large `max_depth` can overflow the thread's stack. Error messages carry byte offsets and what
//! was expected, never any part of the input: values are secrets.

use std::io;

use serde_json::{Map, Number, Value};

use crate::error::CoreError;

/// Parses `input` as one JSON value under the strict rules of the module doc. Containers nested
/// deeper than `max_depth` (`{}` and `[]` count 1 each) are rejected as soon as the parser
/// enters the first container too many. Every error is [`CoreError::InvalidRequest`].
pub fn parse_strict(input: &[u8], max_depth: usize) -> Result<Value, CoreError> {
    let text =
        std::str::from_utf8(input).map_err(|e| malformed(e.valid_up_to(), "invalid UTF-8"))?;
    Parser {
        text,
        bytes: input,
        pos: 0,
        max_depth,
    }
    .parse_document()
}

/// The nesting depth of `v`: each `{}` or `[]` counts 1 per level, scalars 0, so
/// `{"a":{"b":1}}` is 2 and `[]` is 1. Iterative, like the parser.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    // Each entry is a value and the number of containers around it.
    let mut pending: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((value, outer)) = pending.pop() {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(outer + 1);
                pending.extend(items.iter().map(|item| (item, outer + 1)));
            }
            Value::Object(members) => {
                deepest = deepest.max(outer + 1);
                pending.extend(members.values().map(|member| (member, outer + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// The length in bytes of `serde_json::to_vec(v)` (the compact encoding the size limits are
/// measured on), counted without building the encoding.
pub fn compact_len(v: &Value) -> usize {
    let mut counter = CountingWriter(0);
    // Serializing a `Value` fails only when the writer fails (its keys are always strings), and
    // this writer never fails; should that ever change, an error here must not hide a size, so
    // it counts as unlimited and the caller's limit check rejects the value.
    match serde_json::to_writer(&mut counter, v) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// An `io::Write` that only counts the bytes written to it.
struct CountingWriter(usize);

impl io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The error for malformed input at byte `offset`.
fn malformed(offset: usize, what: &str) -> CoreError {
    CoreError::InvalidRequest(format!("malformed JSON at byte {offset}: {what}"))
}

/// A container the parser is inside of, with what it has collected so far.
enum Frame {
    Array(Vec<Value>),
    /// The members so far and the name of the member whose value is being parsed.
    Object(Map<String, Value>, String),
}

struct Parser<'a> {
    /// The whole input, already checked to be UTF-8; `bytes` is the same input.
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl Parser<'_> {
    fn parse_document(mut self) -> Result<Value, CoreError> {
        let mut stack: Vec<Frame> = Vec::new();
        self.skip_whitespace();
        'value: loop {
            // Parse one value; opening a non-empty container pushes a frame and starts over
            // with its first element.
            let mut value = match self.peek() {
                Some(b'[') => {
                    self.enter(stack.len())?;
                    self.skip_whitespace();
                    if self.eat(b']') {
                        Value::Array(Vec::new())
                    } else {
                        stack.push(Frame::Array(Vec::new()));
                        continue 'value;
                    }
                }
                Some(b'{') => {
                    self.enter(stack.len())?;
                    self.skip_whitespace();
                    if self.eat(b'}') {
                        Value::Object(Map::new())
                    } else {
                        let members = Map::new();
                        let name = self.parse_member_name(&members)?;
                        stack.push(Frame::Object(members, name));
                        continue 'value;
                    }
                }
                Some(b'"') => Value::String(self.parse_string()?),
                Some(b't') => self.parse_literal("true", Value::Bool(true))?,
                Some(b'f') => self.parse_literal("false", Value::Bool(false))?,
                Some(b'n') => self.parse_literal("null", Value::Null)?,
                Some(b'-' | b'0'..=b'9') => Value::Number(self.parse_number()?),
                Some(_) => return Err(malformed(self.pos, "expected a value")),
                None => return Err(malformed(self.pos, "unexpected end of input")),
            };
            // The value is complete: hand it to the enclosing containers, closing every one
            // that ends here.
            loop {
                self.skip_whitespace();
                match stack.pop() {
                    None => {
                        if self.pos != self.bytes.len() {
                            return Err(malformed(self.pos, "unexpected data after the value"));
                        }
                        return Ok(value);
                    }
                    Some(Frame::Array(mut items)) => {
                        items.push(value);
                        if self.eat(b',') {
                            self.skip_whitespace();
                            stack.push(Frame::Array(items));
                            continue 'value;
                        }
                        if !self.eat(b']') {
                            return Err(malformed(self.pos, "expected ',' or ']'"));
                        }
                        value = Value::Array(items);
                    }
                    Some(Frame::Object(mut members, name)) => {
                        members.insert(name, value);
                        if self.eat(b',') {
                            self.skip_whitespace();
                            let name = self.parse_member_name(&members)?;
                            stack.push(Frame::Object(members, name));
                            continue 'value;
                        }
                        if !self.eat(b'}') {
                            return Err(malformed(self.pos, "expected ',' or '}'"));
                        }
                        value = Value::Object(members);
                    }
                }
            }
        }
    }

    /// Consumes the opening bracket of a container that `open` containers enclose, refusing it
    /// when it would be one level too many.
    fn enter(&mut self, open: usize) -> Result<(), CoreError> {
        if open >= self.max_depth {
            return Err(CoreError::InvalidRequest(format!(
                "JSON nested deeper than {} levels at byte {}",
                self.max_depth, self.pos
            )));
        }
        self.pos += 1;
        Ok(())
    }

    /// Parses `"name"` and the `:` after it (with the whitespace around), refusing a name that
    /// `members` already has.
    fn parse_member_name(&mut self, members: &Map<String, Value>) -> Result<String, CoreError> {
        let start = self.pos;
        if self.peek() != Some(b'"') {
            return Err(malformed(self.pos, "expected a member name"));
        }
        let name = self.parse_string()?;
        if members.contains_key(&name) {
            return Err(CoreError::InvalidRequest(format!(
                "object has a repeated member name at byte {start}"
            )));
        }
        self.skip_whitespace();
        if !self.eat(b':') {
            return Err(malformed(self.pos, "expected ':'"));
        }
        self.skip_whitespace();
        Ok(name)
    }

    /// Parses a string starting at its opening quote.
    fn parse_string(&mut self) -> Result<String, CoreError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            // Copy the longest run of bytes that need no attention in one go; the run ends at a
            // quote, a backslash or a control byte, all ASCII, so it ends on a char boundary.
            let run_start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            let run = self
                .text
                .get(run_start..self.pos)
                .ok_or_else(|| malformed(run_start, "invalid UTF-8"))?;
            out.push_str(run);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = self.parse_escape()?;
                    out.push(escaped);
                }
                Some(_) => {
                    return Err(malformed(
                        self.pos,
                        "control character in a string (must be escaped)",
                    ));
                }
                None => return Err(malformed(self.pos, "unterminated string")),
            }
        }
    }

    /// Parses the escape after a backslash.
    fn parse_escape(&mut self) -> Result<char, CoreError> {
        let at = self.pos;
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                return self.parse_unicode_escape(at);
            }
            Some(_) => return Err(malformed(at, "invalid escape")),
            None => return Err(malformed(at, "unterminated string")),
        };
        self.pos += 1;
        Ok(c)
    }

    /// Parses the hex digits of a `\u` escape (and the low half of a surrogate pair). `at` is
    /// the offset of the `u`, for errors.
    fn parse_unicode_escape(&mut self, at: usize) -> Result<char, CoreError> {
        let first = self.parse_hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                // A high surrogate is only valid as the first half of a pair.
                if !(self.eat(b'\\') && self.eat(b'u')) {
                    return Err(malformed(at, "lone surrogate in a \\u escape"));
                }
                let second = self.parse_hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(malformed(at, "lone surrogate in a \\u escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(malformed(at, "lone surrogate in a \\u escape")),
            other => other,
        };
        char::from_u32(code).ok_or_else(|| malformed(at, "invalid \\u escape"))
    }

    fn parse_hex4(&mut self) -> Result<u32, CoreError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| malformed(self.pos, "expected 4 hex digits in a \\u escape"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }

    fn parse_literal(&mut self, word: &str, value: Value) -> Result<Value, CoreError> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if rest.starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(malformed(self.pos, "expected a value"))
        }
    }

    /// Parses `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` and keeps its exact text.
    fn parse_number(&mut self) -> Result<Number, CoreError> {
        let start = self.pos;
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(malformed(self.pos, "leading zero in a number"));
                }
            }
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(malformed(self.pos, "expected a digit")),
        }
        if self.eat(b'.') {
            self.expect_digits()?;
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.expect_digits()?;
        }
        let text = self
            .text
            .get(start..self.pos)
            .ok_or_else(|| malformed(start, "invalid number"))?;
        Ok(exact_number(text))
    }

    fn expect_digits(&mut self) -> Result<(), CoreError> {
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err(malformed(self.pos, "expected a digit"));
        }
        self.skip_digits();
        Ok(())
    }

    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `b` if it is next.
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

/// The `Number` whose text is exactly `text`, which the caller has checked against the RFC 8259
/// number grammar.
///
/// `Number::from_str` would rewrite the exponent (`1e400` → `1e+400`), breaking "numbers
/// round-trip as written", and serde_json has no other way to build a number from its text; so
/// this uses `from_string_unchecked`, which is public but hidden from serde_json's docs. Its only
/// precondition is that the text is a valid JSON number, which the grammar check guarantees. The
/// tests pin the behaviour, so a serde_json release that drops or changes it fails the build or
/// the tests rather than silently changing stored numbers.
fn exact_number(text: &str) -> Number {
    Number::from_string_unchecked(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Expected outcome of a parse: `Ok(compact re-encoding)` or `Err(message substring)`.
    type Want = Result<&'static str, &'static str>;

    fn check(input: &[u8], max_depth: usize, want: Want) {
        let got = parse_strict(input, max_depth);
        let shown = String::from_utf8_lossy(input);
        match (got, want) {
            (Ok(v), Ok(encoding)) => {
                let text = serde_json::to_string(&v).unwrap();
                assert_eq!(text, encoding, "input {shown:?}");
            }
            (Err(e), Err(fragment)) => {
                assert!(
                    matches!(e, CoreError::InvalidRequest(_)),
                    "input {shown:?}: {e:?}"
                );
                let msg = e.to_string();
                assert!(
                    msg.contains(fragment),
                    "input {shown:?}: message {msg:?} lacks {fragment:?}"
                );
            }
            (got, want) => panic!("input {shown:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn accepts_and_rejects_per_rfc_8259() {
        let cases: &[(&str, Want)] = &[
            // Scalars at the top level.
            ("true", Ok("true")),
            ("false", Ok("false")),
            ("null", Ok("null")),
            ("\"\"", Ok("\"\"")),
            ("\"abc\"", Ok("\"abc\"")),
            (" \t\r\n1 \t\r\n", Ok("1")),
            // Containers.
            ("[]", Ok("[]")),
            ("{}", Ok("{}")),
            ("[ ]", Ok("[]")),
            ("{ }", Ok("{}")),
            ("[1,2,3]", Ok("[1,2,3]")),
            ("[ 1 , [ 2 , { } ] ]", Ok("[1,[2,{}]]")),
            (
                "{\"b\":1,\"a\":[true,null],\"c\":{\"d\":\"e\"}}",
                Ok("{\"b\":1,\"a\":[true,null],\"c\":{\"d\":\"e\"}}"),
            ),
            ("{ \"a\" : 1 , \"b\" : 2 }", Ok("{\"a\":1,\"b\":2}")),
            // Numbers keep their text.
            ("0", Ok("0")),
            ("-0", Ok("-0")),
            ("-0.0", Ok("-0.0")),
            ("1.10", Ok("1.10")),
            ("1e400", Ok("1e400")),
            ("1E400", Ok("1E400")),
            ("1e+5", Ok("1e+5")),
            ("2.5e-3", Ok("2.5e-3")),
            ("0.000", Ok("0.000")),
            ("12345678901234567890123", Ok("12345678901234567890123")),
            (
                "-12345678901234567890123.000000000000000000001",
                Ok("-12345678901234567890123.000000000000000000001"),
            ),
            // Strings: escapes and Unicode.
            (r#""\"\\\/\b\f\n\r\t""#, Ok(r#""\"\\/\b\f\n\r\t""#)),
            (r#""\u0041\u00e9\u20AC""#, Ok("\"Aé€\"")),
            (r#""\ud83d\ude00""#, Ok("\"😀\"")),
            (r#""\uD83D\uDE00x""#, Ok("\"😀x\"")),
            (r#""\u0000""#, Ok(r#""\u0000""#)),
            ("\"é€😀 \u{7f}\"", Ok("\"é€😀 \u{7f}\"")),
            (r#"{"\u0061":1,"b":2}"#, Ok("{\"a\":1,\"b\":2}")),
            // Grammar errors.
            ("", Err("byte 0: unexpected end of input")),
            ("   ", Err("byte 3: unexpected end of input")),
            ("[", Err("byte 1: unexpected end of input")),
            ("[1", Err("byte 2: expected ',' or ']'")),
            ("[1,]", Err("byte 3: expected a value")),
            ("[,1]", Err("byte 1: expected a value")),
            ("[1 2]", Err("byte 3: expected ',' or ']'")),
            ("{\"a\":1,}", Err("byte 7: expected a member name")),
            ("{\"a\" 1}", Err("byte 5: expected ':'")),
            ("{\"a\":}", Err("byte 5: expected a value")),
            ("{a:1}", Err("byte 1: expected a member name")),
            ("{1:1}", Err("byte 1: expected a member name")),
            ("{\"a\":1]", Err("byte 6: expected ',' or '}'")),
            ("[1}", Err("byte 2: expected ',' or ']'")),
            ("}", Err("byte 0: expected a value")),
            ("1 2", Err("byte 2: unexpected data after the value")),
            ("{} {}", Err("byte 3: unexpected data after the value")),
            ("[]]", Err("byte 2: unexpected data after the value")),
            ("nul", Err("byte 0: expected a value")),
            ("tru", Err("byte 0: expected a value")),
            ("True", Err("byte 0: expected a value")),
            ("nulll", Err("byte 4: unexpected data after the value")),
            ("// c\n1", Err("byte 0: expected a value")),
            ("/* c */ 1", Err("byte 0: expected a value")),
            ("[1] // c", Err("byte 4: unexpected data")),
            ("'a'", Err("byte 0: expected a value")),
            ("\u{feff}1", Err("byte 0: expected a value")),
            ("\u{a0}1", Err("byte 0: expected a value")),
            ("\u{b}1", Err("byte 0: expected a value")),
            ("\u{c}1", Err("byte 0: expected a value")),
            ("1\u{0}", Err("byte 1: unexpected data")),
            // Number errors.
            ("01", Err("byte 1: leading zero")),
            ("-01", Err("byte 2: leading zero")),
            ("00", Err("byte 1: leading zero")),
            ("+1", Err("byte 0: expected a value")),
            ("-", Err("byte 1: expected a digit")),
            ("-a", Err("byte 1: expected a digit")),
            (".5", Err("byte 0: expected a value")),
            ("1.", Err("byte 2: expected a digit")),
            ("1.e5", Err("byte 2: expected a digit")),
            ("1e", Err("byte 2: expected a digit")),
            ("1e+", Err("byte 3: expected a digit")),
            ("1e-x", Err("byte 3: expected a digit")),
            ("1x", Err("byte 1: unexpected data")),
            ("0x10", Err("byte 1: unexpected data")),
            ("NaN", Err("byte 0: expected a value")),
            ("Infinity", Err("byte 0: expected a value")),
            ("-Infinity", Err("byte 1: expected a digit")),
            ("[1.5.2]", Err("byte 4: expected ',' or ']'")),
            // String errors.
            ("\"abc", Err("byte 4: unterminated string")),
            ("\"\\", Err("byte 2: unterminated string")),
            ("\"a\nb\"", Err("byte 2: control character")),
            ("\"\t\"", Err("byte 1: control character")),
            ("\"\u{1f}\"", Err("byte 1: control character")),
            ("\"\u{0}\"", Err("byte 1: control character")),
            (r#""\x41""#, Err("byte 2: invalid escape")),
            (r#""\'""#, Err("byte 2: invalid escape")),
            (r#""\U0041""#, Err("byte 2: invalid escape")),
            (r#""\u00G1""#, Err("byte 5: expected 4 hex digits")),
            (r#""\u12""#, Err("byte 5: expected 4 hex digits")),
            (r#""\ud800""#, Err("byte 2: lone surrogate")),
            (r#""\ud800x""#, Err("byte 2: lone surrogate")),
            (r#""\udbff\u0041""#, Err("byte 2: lone surrogate")),
            (r#""\ud800\ud800""#, Err("byte 2: lone surrogate")),
            (r#""\udc00""#, Err("byte 2: lone surrogate")),
            (r#""\ude00\ud83d""#, Err("byte 2: lone surrogate")),
            (r#""\ud800\n""#, Err("byte 2: lone surrogate")),
            // Repeated member names, also after unescaping and nested.
            (
                "{\"a\":1,\"a\":2}",
                Err("object has a repeated member name at byte 7"),
            ),
            (
                r#"{"a":1,"\u0061":2}"#,
                Err("object has a repeated member name at byte 7"),
            ),
            (
                r#"{"x":[{"b":1,"c":2,"b":3}]}"#,
                Err("object has a repeated member name at byte 19"),
            ),
            (
                r#"{"x":{"y":{"":1,"":2}}}"#,
                Err("object has a repeated member name at byte 16"),
            ),
            // The same name in different objects is fine.
            (
                r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
                Ok(r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#),
            ),
            // Names differing only in case or normalisation are different names.
            (r#"{"a":1,"A":2}"#, Ok(r#"{"a":1,"A":2}"#)),
            ("{\"é\":1,\"e\u{301}\":2}", Ok("{\"é\":1,\"e\u{301}\":2}")),
        ];
        for (input, want) in cases {
            check(input.as_bytes(), 64, *want);
        }
    }

    #[test]
    fn rejects_invalid_utf8() {
        let cases: &[(&[u8], Want)] = &[
            (b"\"\xff\"", Err("byte 1: invalid UTF-8")),
            (b"\"ab\xc3\"", Err("byte 3: invalid UTF-8")),
            (b"[\"\xed\xa0\x80\"]", Err("byte 2: invalid UTF-8")), // an encoded surrogate
            (b"\"\xc0\xaf\"", Err("byte 1: invalid UTF-8")),       // overlong '/'
            (b"\xef\xbb\xbf{}", Err("byte 0: expected a value")),  // a BOM is not whitespace
            (b"{} \x80", Err("byte 3: invalid UTF-8")),
            (b"\"\xf0\x9f\x98\x80\"", Ok("\"😀\"")),
        ];
        for (input, want) in cases {
            check(input, 64, *want);
        }
    }

    #[test]
    fn depth_limit_is_exact() {
        // `n` containers: arrays, or objects with one member each.
        let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let objects = |n: usize| format!("{}{{}}{}", "{\"a\":".repeat(n - 1), "}".repeat(n - 1));
        for nested in [arrays, objects] {
            let at_limit = nested(64);
            let v = parse_strict(at_limit.as_bytes(), 64).unwrap();
            assert_eq!(depth(&v), 64);
            check(
                nested(65).as_bytes(),
                64,
                Err("JSON nested deeper than 64 levels"),
            );
        }
        // The error names the offset of the first container too many.
        let over = "[".repeat(65);
        check(over.as_bytes(), 64, Err("levels at byte 64"));
        // Mixed containers with content count the same way.
        let mixed = format!("{}1{}", "[{\"k\":".repeat(32), "}]".repeat(32));
        assert_eq!(depth(&parse_strict(mixed.as_bytes(), 64).unwrap()), 64);
        let mixed = format!("[{}1{}]", "[{\"k\":".repeat(32), "}]".repeat(32));
        check(mixed.as_bytes(), 64, Err("nested deeper than 64"));
        // Depth 0 allows scalars only.
        check(b"1", 0, Ok("1"));
        check(b"[]", 0, Err("nested deeper than 0 levels at byte 0"));
        check(b"[]", 1, Ok("[]"));
        check(b"[[]]", 1, Err("nested deeper than 1 levels at byte 1"));
    }

    #[test]
    fn huge_nesting_fails_fast_without_overflowing_the_stack() {
        let input = "[".repeat(1 << 20);
        check(input.as_bytes(), 64, Err("nested deeper than 64"));
        let input = "{\"a\":".repeat(1 << 18);
        check(input.as_bytes(), 100, Err("nested deeper than 100"));
        // Even an unreasonable limit cannot overflow the stack: the parser is iterative. (Drop
        // of the result is recursive in serde_json, so this input is unbalanced and fails.)
        let input = "[".repeat(1 << 18);
        check(input.as_bytes(), usize::MAX, Err("unexpected end of input"));
    }

    #[test]
    fn numbers_round_trip_as_written() {
        for text in [
            "1.10",
            "1e400",
            "-0",
            "12345678901234567890123",
            "-1E-400",
            "0.1e+01",
            "5",
            "-5",
            "18446744073709551616",
        ] {
            let v = parse_strict(text.as_bytes(), 64).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), text);
            let wrapped = format!("{{\"n\":[{text}]}}");
            let v = parse_strict(wrapped.as_bytes(), 64).unwrap();
            assert_eq!(serde_json::to_string(&v).unwrap(), wrapped);
        }
        let five = parse_strict(b"5", 64).unwrap();
        assert!(five.is_i64() && five.is_u64() && !five.is_f64());
        assert_eq!(five.as_i64(), Some(5));
        assert_eq!(five, serde_json::json!(5));
        let big = parse_strict(b"18446744073709551615", 64).unwrap();
        assert_eq!(big.as_u64(), Some(u64::MAX));
        let neg = parse_strict(b"-9223372036854775808", 64).unwrap();
        assert_eq!(neg.as_i64(), Some(i64::MIN));
        let float = parse_strict(b"1.5", 64).unwrap();
        assert!(float.is_f64());
        assert_eq!(float.as_f64(), Some(1.5));
    }

    #[test]
    fn errors_never_contain_input() {
        let secret = "s3cr3t-value";
        for input in [
            format!("{{\"{secret}\":1,\"{secret}\":2}}"),
            format!("[\"{secret}\" \"{secret}\"]"),
            format!("\"{secret}\n\""),
            secret.to_owned(),
            format!("[\"{secret}\\q\"]"),
            format!("\"{secret}"),
        ] {
            let e = parse_strict(input.as_bytes(), 64).unwrap_err();
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn depth_counts_containers() {
        let cases: &[(&str, usize)] = &[
            ("1", 0),
            ("\"x\"", 0),
            ("null", 0),
            ("[]", 1),
            ("{}", 1),
            ("[1,2]", 1),
            (r#"{"a":{"b":1}}"#, 2),
            (r#"[[],[[]],{"a":[{}]}]"#, 4),
            (r#"{"a":1,"b":[[[]]],"c":{}}"#, 4),
        ];
        for (input, want) in cases {
            let v = parse_strict(input.as_bytes(), 64).unwrap();
            assert_eq!(depth(&v), *want, "{input}");
        }
    }

    #[test]
    fn compact_len_matches_to_vec() {
        for input in [
            "1",
            "{}",
            r#"{"a": [1, 2.50, "x\u0000\n\"é😀"], "b" : {"c": null, "d": true}}"#,
            r#""\u007f\u001f\u2028""#,
            "1e400",
        ] {
            let v = parse_strict(input.as_bytes(), 64).unwrap();
            assert_eq!(
                compact_len(&v),
                serde_json::to_vec(&v).unwrap().len(),
                "{input}"
            );
        }
    }

    /// Any JSON value without repeated names (maps have unique keys), numbers of every kind.
    fn any_value() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<i64>().prop_map(Number::from),
            any::<u64>().prop_map(Number::from),
            any::<f64>().prop_filter_map("finite", Number::from_f64),
            "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?"
                .prop_map(|t| exact_number(&t)),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number.prop_map(Value::Number),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(8, 128, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Token soup: mostly near-JSON, often valid, often broken in interesting ways.
    fn json_ish() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"a\"",
            "\"b\"",
            "\"\\u0061\"",
            "\"\\n\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "0",
            "-0",
            "1.5",
            "1e5",
            "01",
            "-",
            "true",
            "null",
            "nul",
            "\"",
            "\\",
            "\u{1}",
            "é",
        ]);
        prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
    }

    proptest! {
        #[test]
        fn serde_json_encoding_parses_back_to_the_same_value(v in any_value()) {
            let bytes = serde_json::to_vec(&v).unwrap();
            let parsed = parse_strict(&bytes, 64).unwrap();
            prop_assert_eq!(&parsed, &v);
            prop_assert_eq!(compact_len(&parsed), bytes.len());
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            prop_assert_eq!(parse_strict(&pretty, 64).unwrap(), v);
        }

        /// Against serde_json, which is strict RFC 8259 too except that it allows repeated
        /// names (and nests 128 deep): whatever one accepts the other accepts with the same
        /// meaning, unless a name repeats.
        #[test]
        fn agrees_with_serde_json(input in json_ish()) {
            let ours = parse_strict(input.as_bytes(), 1000);
            let theirs = serde_json::from_str::<Value>(&input);
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => {
                    // serde_json normalises exponents; compare after its own round trip.
                    let reread: Value =
                        serde_json::from_str(&serde_json::to_string(&ours).unwrap()).unwrap();
                    prop_assert_eq!(reread, theirs);
                }
                (Err(e), Ok(_)) => {
                    prop_assert!(e.to_string().contains("repeated member name"), "{}", e);
                }
                (Ok(_), Err(e)) => prop_assert!(false, "only serde_json refused: {}", e),
                (Err(_), Err(_)) => {}
            }
        }
    }
}
