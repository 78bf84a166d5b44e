//! A small streaming EDN reader: one history element at a time, in memory bounded by the element.
//!
//! Jepsen writes a history as one top-level vector (or list) of maps, or as a bare sequence of
//! maps, and a long run gives a file of a gigabyte. Parsing such a file as one EDN value would
//! hold all of it; this reader is streaming by construction instead:
//!
//! - [`Scanner`] reads the input through a fixed 64 KiB buffer; nothing else holds raw input.
//! - [`ElementReader`] consumes the opening `[` or `(` of the top-level collection itself and
//!   then parses its elements one at a time with a recursive-descent parser ([`Parser`]),
//!   returning each one before reading the next. What stays alive between two elements is the
//!   buffer and a few counters.
//! - One element may not span more than [`MAX_ELEMENT_BYTES`] of input (the line cap of the
//!   line formats) and may not nest deeper than [`MAX_DEPTH`], so that neither the heap nor
//!   the stack can be exhausted by hostile input: the cap is checked each time the buffer is
//!   refilled, so it overshoots by at most one buffer.
//!
//! EDN values become JSON values (`serde_json::Value`) as the importers need them:
//! keywords and symbols become strings without the colon, `nil` becomes `null`, vectors,
//! lists and sets become arrays, maps become objects with stringified keys, integers that
//! fit neither `i64` nor `u64` become strings of digits, tagged literals become their form
//! and `#_` discards the next form. The syntax follows <https://github.com/edn-format/edn>.

use crate::lines::MAX_LINE_BYTES;
use serde_json::{Map, Number, Value};
use std::io::ErrorKind;

/// The deepest nesting of collections, tags and discards within one element.
pub const MAX_DEPTH: u32 = 256;

/// The most input one history element may span: the same cap as one line of a line format.
pub const MAX_ELEMENT_BYTES: usize = MAX_LINE_BYTES;

/// The size of the read buffer of a [`Scanner`] over a file.
const BUFFER_BYTES: usize = 64 * 1024;

/// A failure to read EDN: the input could not be read, or it is not valid EDN.
#[derive(Debug)]
pub enum EdnError {
    /// The underlying reader failed.
    Io(std::io::Error),
    /// The text is not valid EDN, or breaks a limit; `line` is 1-based.
    Syntax {
        /// Where the problem was seen.
        line: u64,
        /// What was expected and what was found, lowercase.
        message: String,
    },
}

impl EdnError {
    fn syntax(line: u64, message: impl Into<String>) -> EdnError {
        EdnError::Syntax {
            line,
            message: message.into(),
        }
    }

    /// Turns this into the crate's input error, naming `file` and, when given, the field.
    pub fn into_input_error(self, file: &str, field: Option<&str>) -> crate::InputError {
        match self {
            EdnError::Io(source) => crate::InputError::Io {
                file: file.to_string(),
                source,
            },
            EdnError::Syntax { line, message } => {
                crate::InputError::malformed(file, line, field, message)
            }
        }
    }
}

/// What kind of EDN form a value was read from, for error messages and for callers that
/// must tell a keyword from a string (a Jepsen log's `:timed-out`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `{...}`
    Map,
    /// `[...]`
    Vector,
    /// `(...)`
    List,
    /// `#{...}`
    Set,
    /// `"..."`
    String,
    /// `:name`
    Keyword,
    /// `name`
    Symbol,
    /// `42`, `42N`
    Integer,
    /// `1.5`, `1e3`, `1.5M`, `1/2`, `##Inf`
    Float,
    /// `nil`
    Nil,
    /// `true`, `false`
    Boolean,
    /// `\a`
    Char,
}

impl Kind {
    /// The kind with its article, as error messages say it: "a vector".
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Map => "a map",
            Kind::Vector => "a vector",
            Kind::List => "a list",
            Kind::Set => "a set",
            Kind::String => "a string",
            Kind::Keyword => "a keyword",
            Kind::Symbol => "a symbol",
            Kind::Integer => "an integer",
            Kind::Float => "a number",
            Kind::Nil => "nil",
            Kind::Boolean => "a boolean",
            Kind::Char => "a character",
        }
    }
}

/// One EDN form, converted: its value, its kind and the line on which it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Form {
    /// The form as a JSON value.
    pub value: Value,
    /// What the form was in EDN.
    pub kind: Kind,
    /// The 1-based line of its first character.
    pub line: u64,
}

/// Reads bytes through a fixed buffer, counting lines and the bytes of the current element.
#[derive(Debug)]
pub struct Scanner<R> {
    reader: R,
    buffer: Box<[u8]>,
    /// Invariant: `position <= end <= buffer.len()`.
    position: usize,
    end: usize,
    /// Bytes of input before `buffer[0]`.
    base: u64,
    line: u64,
    /// Absolute offset where the current element started.
    element_start: u64,
    element_line: u64,
    max_element_bytes: usize,
}

impl<R: std::io::Read> Scanner<R> {
    /// A scanner over `reader` whose first byte is on line `first_line`.
    pub fn new(reader: R, first_line: u64, buffer_bytes: usize) -> Scanner<R> {
        Scanner {
            reader,
            buffer: vec![0; buffer_bytes.max(1)].into_boxed_slice(),
            position: 0,
            end: 0,
            base: 0,
            line: first_line,
            element_start: 0,
            element_line: first_line,
            max_element_bytes: MAX_ELEMENT_BYTES,
        }
    }

    /// The bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.base + self.position as u64
    }

    /// Starts counting a new element here, for the element cap.
    fn mark_element(&mut self) {
        self.element_start = self.offset();
        self.element_line = self.line;
    }

    /// The next byte, without consuming it; `None` at the end of input.
    fn peek(&mut self) -> Result<Option<u8>, EdnError> {
        if self.position < self.end {
            return Ok(Some(self.buffer[self.position]));
        }
        self.refill()?;
        Ok((self.position < self.end).then(|| self.buffer[self.position]))
    }

    fn refill(&mut self) -> Result<(), EdnError> {
        let consumed = self.offset() - self.element_start;
        if consumed > self.max_element_bytes as u64 {
            return Err(EdnError::syntax(
                self.line,
                format!(
                    "history element starting on line {} is longer than {} MiB; refusing to buffer it",
                    self.element_line,
                    self.max_element_bytes / (1024 * 1024)
                ),
            ));
        }
        self.base += self.end as u64;
        self.position = 0;
        self.end = 0;
        loop {
            match self.reader.read(&mut self.buffer) {
                Ok(read) => {
                    self.end = read;
                    return Ok(());
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(EdnError::Io(error)),
            }
        }
    }

    /// Consumes the byte that `peek` returned.
    fn bump(&mut self) {
        assert!(self.position < self.end, "bump without a peeked byte");
        if self.buffer[self.position] == b'\n' {
            self.line += 1;
        }
        self.position += 1;
    }

    /// Moves bytes into `out` until `stop` matches one (not consumed) or the input ends.
    fn take_until(&mut self, out: &mut Vec<u8>, stop: impl Fn(u8) -> bool) -> Result<(), EdnError> {
        loop {
            if self.peek()?.is_none() {
                return Ok(());
            }
            let available = &self.buffer[self.position..self.end];
            let length = available
                .iter()
                .position(|&b| stop(b))
                .unwrap_or(available.len());
            let chunk = &available[..length];
            self.line += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            out.extend_from_slice(chunk);
            self.position += length;
            if self.position < self.end {
                return Ok(());
            }
        }
    }

    /// Skips whitespace (commas included) and `;` comments.
    fn skip_blank(&mut self) -> Result<(), EdnError> {
        while let Some(byte) = self.peek()? {
            if is_whitespace(byte) {
                self.bump();
            } else if byte == b';' {
                while let Some(byte) = self.peek()? {
                    self.bump();
                    if byte == b'\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
        Ok(())
    }
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b',' | 0x0b | 0x0c)
}

/// Bytes that end a symbol, keyword, number or character token.
fn is_delimiter(byte: u8) -> bool {
    is_whitespace(byte)
        || matches!(
            byte,
            b'"' | b';' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'\\'
        )
}

/// Bytes that may start a symbol: letters, digits (numbers) and EDN's punctuation.
fn starts_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b".*+!-_?$%&=<>/'|".contains(&byte) || byte >= 0x80
}

/// What the parser found next within a collection or at the top level.
enum Item {
    Form(Form),
    Close(u8),
    End,
}

/// A recursive-descent EDN parser over a [`Scanner`], one form per call.
#[derive(Debug)]
pub struct Parser<R> {
    scanner: Scanner<R>,
    token: Vec<u8>,
}

impl<R: std::io::Read> Parser<R> {
    /// A parser over `reader`, whose first byte is on line `first_line`.
    pub fn new(reader: R, first_line: u64) -> Parser<R> {
        Parser::with_buffer(reader, first_line, BUFFER_BYTES)
    }

    fn with_buffer(reader: R, first_line: u64, buffer_bytes: usize) -> Parser<R> {
        Parser {
            scanner: Scanner::new(reader, first_line, buffer_bytes),
            token: Vec::new(),
        }
    }

    /// Reads the next form; `None` at the end of input, an error at a stray closing bracket.
    pub fn next_form(&mut self) -> Result<Option<Form>, EdnError> {
        self.scanner.mark_element();
        match self.next_item(0)? {
            Item::Form(form) => Ok(Some(form)),
            Item::End => Ok(None),
            Item::Close(close) => Err(self.unexpected_close(close)),
        }
    }

    /// The bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.scanner.offset()
    }

    /// The line the parser is on.
    pub fn line(&self) -> u64 {
        self.scanner.line
    }

    fn unexpected_close(&self, close: u8) -> EdnError {
        EdnError::syntax(
            self.scanner.line,
            format!("unexpected '{}' with no open collection", close as char),
        )
    }

    fn next_item(&mut self, depth: u32) -> Result<Item, EdnError> {
        if depth > MAX_DEPTH {
            return Err(EdnError::syntax(
                self.scanner.line,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        loop {
            self.scanner.skip_blank()?;
            let line = self.scanner.line;
            let Some(byte) = self.scanner.peek()? else {
                return Ok(Item::End);
            };
            let (value, kind) = match byte {
                b')' | b']' | b'}' => {
                    self.scanner.bump();
                    return Ok(Item::Close(byte));
                }
                b'[' | b'(' => {
                    self.scanner.bump();
                    let close = if byte == b'[' { b']' } else { b')' };
                    let kind = if byte == b'[' {
                        Kind::Vector
                    } else {
                        Kind::List
                    };
                    (
                        Value::Array(self.read_sequence(close, kind, line, depth)?),
                        kind,
                    )
                }
                b'{' => {
                    self.scanner.bump();
                    (self.read_map(line, depth)?, Kind::Map)
                }
                b'#' => {
                    self.scanner.bump();
                    match self.read_dispatch(line, depth)? {
                        Some(form) => return Ok(Item::Form(form)),
                        None => continue,
                    }
                }
                b'"' => {
                    self.scanner.bump();
                    (Value::String(self.read_string(line)?), Kind::String)
                }
                b'\\' => {
                    self.scanner.bump();
                    (Value::String(self.read_char(line)?), Kind::Char)
                }
                b':' => {
                    self.scanner.bump();
                    (Value::String(self.read_keyword(line)?), Kind::Keyword)
                }
                _ if starts_token(byte) => self.read_atom(line)?,
                _ => return Err(unexpected_byte(line, byte)),
            };
            return Ok(Item::Form(Form { value, kind, line }));
        }
    }

    fn read_sequence(
        &mut self,
        close: u8,
        kind: Kind,
        open_line: u64,
        depth: u32,
    ) -> Result<Vec<Value>, EdnError> {
        let mut items = Vec::new();
        loop {
            match self.next_item(depth + 1)? {
                Item::Form(form) => items.push(form.value),
                Item::Close(found) if found == close => return Ok(items),
                Item::Close(found) => return Err(self.mismatched(found, close, kind, open_line)),
                Item::End => return Err(self.unclosed(kind, open_line)),
            }
        }
    }

    fn mismatched(&self, found: u8, close: u8, kind: Kind, open_line: u64) -> EdnError {
        EdnError::syntax(
            self.scanner.line,
            format!(
                "expected '{}' to close {} opened on line {open_line}, found '{}'",
                close as char,
                kind.describe(),
                found as char
            ),
        )
    }

    fn unclosed(&self, kind: Kind, open_line: u64) -> EdnError {
        EdnError::syntax(
            self.scanner.line,
            format!(
                "unexpected end of input inside {} opened on line {open_line}; was the file cut short?",
                kind.describe()
            ),
        )
    }

    fn read_map(&mut self, open_line: u64, depth: u32) -> Result<Value, EdnError> {
        let mut map = Map::new();
        loop {
            let key = match self.next_item(depth + 1)? {
                Item::Form(form) => form,
                Item::Close(b'}') => return Ok(Value::Object(map)),
                Item::Close(found) => {
                    return Err(self.mismatched(found, b'}', Kind::Map, open_line))
                }
                Item::End => return Err(self.unclosed(Kind::Map, open_line)),
            };
            let value = match self.next_item(depth + 1)? {
                Item::Form(form) => form.value,
                Item::Close(b'}') => {
                    return Err(EdnError::syntax(
                        key.line,
                        format!("map opened on line {open_line} has a key with no value"),
                    ))
                }
                Item::Close(found) => {
                    return Err(self.mismatched(found, b'}', Kind::Map, open_line))
                }
                Item::End => return Err(self.unclosed(Kind::Map, open_line)),
            };
            let name = key_text(&key.value, key.kind);
            if map.contains_key(&name) {
                return Err(EdnError::syntax(
                    key.line,
                    format!("duplicate key {name:?} in the map opened on line {open_line}"),
                ));
            }
            map.insert(name, value);
        }
    }

    /// After `#`: a set, a discard (`None`), a symbolic value or a tagged literal.
    fn read_dispatch(&mut self, line: u64, depth: u32) -> Result<Option<Form>, EdnError> {
        match self.scanner.peek()? {
            Some(b'{') => {
                self.scanner.bump();
                let items = self.read_sequence(b'}', Kind::Set, line, depth)?;
                Ok(Some(Form {
                    value: Value::Array(items),
                    kind: Kind::Set,
                    line,
                }))
            }
            Some(b'_') => {
                self.scanner.bump();
                match self.next_item(depth + 1)? {
                    Item::Form(_) => Ok(None),
                    _ => Err(EdnError::syntax(line, "expected a form after '#_'")),
                }
            }
            Some(b'#') => {
                self.scanner.bump();
                let text = self.read_token(line)?;
                match text.as_str() {
                    "Inf" | "-Inf" | "NaN" => Ok(Some(Form {
                        value: Value::String(format!("##{text}")),
                        kind: Kind::Float,
                        line,
                    })),
                    _ => Err(EdnError::syntax(
                        line,
                        format!("expected ##Inf, ##-Inf or ##NaN, found ##{text}"),
                    )),
                }
            }
            Some(byte) if byte.is_ascii_alphabetic() => {
                let tag = self.read_token(line)?;
                match self.next_item(depth + 1)? {
                    Item::Form(form) => Ok(Some(Form { line, ..form })),
                    _ => Err(EdnError::syntax(
                        line,
                        format!("expected a form after the tag #{tag}"),
                    )),
                }
            }
            Some(byte) => Err(EdnError::syntax(
                line,
                format!(
                    "expected a set, a tag or '#_' after '#', found {}",
                    show_byte(byte)
                ),
            )),
            None => Err(EdnError::syntax(line, "unexpected end of input after '#'")),
        }
    }

    /// Reads a symbol-like token into a string (UTF-8 checked).
    fn read_token(&mut self, line: u64) -> Result<String, EdnError> {
        self.token.clear();
        self.scanner.take_until(&mut self.token, is_delimiter)?;
        utf8(line, self.token.clone())
    }

    fn read_keyword(&mut self, line: u64) -> Result<String, EdnError> {
        // `::name` (Clojure's auto-resolved keyword) is read as `name`.
        if self.scanner.peek()? == Some(b':') {
            self.scanner.bump();
        }
        let name = self.read_token(line)?;
        if name.is_empty() {
            return Err(EdnError::syntax(line, "expected a keyword name after ':'"));
        }
        Ok(name)
    }

    fn read_atom(&mut self, line: u64) -> Result<(Value, Kind), EdnError> {
        self.token.clear();
        self.scanner.take_until(&mut self.token, is_delimiter)?;
        // The common atoms need no allocation: small integers, nil, true and false.
        match self.token.as_slice() {
            b"nil" => return Ok((Value::Null, Kind::Nil)),
            b"true" => return Ok((Value::Bool(true), Kind::Boolean)),
            b"false" => return Ok((Value::Bool(false), Kind::Boolean)),
            _ => {}
        }
        if let Some(number) = small_integer(&self.token) {
            return Ok((Value::Number(number.into()), Kind::Integer));
        }
        let text = utf8(line, self.token.clone())?;
        let bytes = text.as_bytes();
        let numeric = match bytes {
            [first, ..] if first.is_ascii_digit() => true,
            [b'+' | b'-', second, ..] => second.is_ascii_digit(),
            _ => false,
        };
        if numeric {
            return parse_number(line, &text);
        }
        Ok((Value::String(text), Kind::Symbol))
    }

    fn read_string(&mut self, line: u64) -> Result<String, EdnError> {
        let mut bytes = Vec::new();
        loop {
            self.scanner
                .take_until(&mut bytes, |b| b == b'"' || b == b'\\')?;
            match self.scanner.peek()? {
                None => {
                    return Err(EdnError::syntax(
                        self.scanner.line,
                        format!("unexpected end of input inside a string opened on line {line}; was the file cut short?"),
                    ))
                }
                Some(b'"') => {
                    self.scanner.bump();
                    return utf8(line, bytes);
                }
                Some(_) => {
                    self.scanner.bump();
                    self.read_escape(line, &mut bytes)?;
                }
            }
        }
    }

    fn read_escape(&mut self, line: u64, out: &mut Vec<u8>) -> Result<(), EdnError> {
        let Some(byte) = self.scanner.peek()? else {
            return Err(EdnError::syntax(
                line,
                "unexpected end of input in a string escape",
            ));
        };
        self.scanner.bump();
        let decoded = match byte {
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'"' => '"',
            b'\\' => '\\',
            b'u' => {
                let high = self.read_hex4(line)?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    // A UTF-16 surrogate pair, as Clojure writes characters outside the BMP.
                    let unpaired = || EdnError::syntax(line, "unpaired surrogate in a \\u escape");
                    if self.scanner.peek()? != Some(b'\\') {
                        return Err(unpaired());
                    }
                    self.scanner.bump();
                    if self.scanner.peek()? != Some(b'u') {
                        return Err(unpaired());
                    }
                    self.scanner.bump();
                    let low = self.read_hex4(line)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(EdnError::syntax(line, "unpaired surrogate in a \\u escape"));
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                char::from_u32(code).ok_or_else(|| {
                    EdnError::syntax(line, format!("invalid \\u escape {code:04x}"))
                })?
            }
            other if other.is_ascii_graphic() => {
                return Err(EdnError::syntax(
                    line,
                    format!("unknown string escape \\{}", other as char),
                ))
            }
            other => {
                return Err(EdnError::syntax(
                    line,
                    format!("unknown string escape: backslash then {}", show_byte(other)),
                ))
            }
        };
        let mut encoded = [0; 4];
        out.extend_from_slice(decoded.encode_utf8(&mut encoded).as_bytes());
        Ok(())
    }

    fn read_hex4(&mut self, line: u64) -> Result<u32, EdnError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self
                .scanner
                .peek()?
                .and_then(|b| (b as char).to_digit(16))
                .ok_or_else(|| EdnError::syntax(line, "expected four hex digits after \\u"))?;
            self.scanner.bump();
            code = code * 16 + digit;
        }
        Ok(code)
    }

    fn read_char(&mut self, line: u64) -> Result<String, EdnError> {
        // The first character is taken whatever it is (`\(` is a paren); a name may follow.
        let mut bytes = Vec::new();
        match self.scanner.peek()? {
            None => return Err(EdnError::syntax(line, "unexpected end of input after '\\'")),
            Some(first) => {
                self.scanner.bump();
                bytes.push(first);
            }
        }
        self.scanner.take_until(&mut bytes, is_delimiter)?;
        let text = utf8(line, bytes)?;
        let mut chars = text.chars();
        if let (Some(only), None) = (chars.next(), chars.next()) {
            return Ok(only.to_string());
        }
        let named = match text.as_str() {
            "newline" => Some('\n'),
            "space" => Some(' '),
            "tab" => Some('\t'),
            "return" => Some('\r'),
            "backspace" => Some('\u{8}'),
            "formfeed" => Some('\u{c}'),
            _ => text
                .strip_prefix('u')
                .filter(|hex| hex.len() == 4)
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32),
        };
        named
            .map(|c| c.to_string())
            .ok_or_else(|| EdnError::syntax(line, format!("unknown character literal \\{text}")))
    }
}

fn utf8(line: u64, bytes: Vec<u8>) -> Result<String, EdnError> {
    String::from_utf8(bytes).map_err(|error| {
        EdnError::syntax(
            line,
            format!(
                "not UTF-8 text (invalid byte 0x{:02x})",
                error.as_bytes()[error.utf8_error().valid_up_to()]
            ),
        )
    })
}

fn show_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("'{}'", byte as char)
    } else {
        format!("byte 0x{byte:02x}")
    }
}

fn unexpected_byte(line: u64, byte: u8) -> EdnError {
    EdnError::syntax(
        line,
        format!("expected an EDN form, found {}", show_byte(byte)),
    )
}

/// A plain decimal integer of up to 18 digits (so it fits an `i64`), the common case.
fn small_integer(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, token),
    };
    let plain = !digits.is_empty()
        && digits.len() <= 18
        && (digits.len() == 1 || digits[0] != b'0')
        && digits.iter().all(u8::is_ascii_digit);
    if !plain {
        return None;
    }
    let magnitude = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -magnitude } else { magnitude })
}

/// Parses an EDN number: `42`, `-1`, `42N`, `1.5`, `1e3`, `1.5M`, `1/2`.
fn parse_number(line: u64, text: &str) -> Result<(Value, Kind), EdnError> {
    let invalid = || EdnError::syntax(line, format!("invalid number {text}"));
    let unsigned = text.trim_start_matches(['+', '-']);
    if unsigned.len() + 1 < text.len() {
        return Err(invalid());
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let no_leading_zero = |s: &str| s == "0" || !s.starts_with('0');
    let integer = text.strip_suffix('N').unwrap_or(text);
    let integer_digits = integer.trim_start_matches(['+', '-']);
    if digits(integer_digits) {
        if !no_leading_zero(integer_digits) {
            return Err(invalid());
        }
        let plain = integer.trim_start_matches('+');
        let value = if let Ok(n) = plain.parse::<i64>() {
            Value::Number(n.into())
        } else if let Ok(n) = plain.parse::<u64>() {
            Value::Number(n.into())
        } else {
            Value::String(plain.to_string())
        };
        return Ok((value, Kind::Integer));
    }
    if let Some((numerator, denominator)) = unsigned.split_once('/') {
        if digits(numerator) && digits(denominator) {
            return Ok((
                Value::String(text.trim_start_matches('+').to_string()),
                Kind::Float,
            ));
        }
        return Err(invalid());
    }
    let decimal = text.strip_suffix('M').unwrap_or(text);
    let body = decimal.trim_start_matches(['+', '-']);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    let fraction_ok = fraction.is_none_or(|f| f.is_empty() || digits(f));
    let is_decimal = fraction.is_some() || exponent.is_some() || decimal.len() < text.len();
    if !(digits(whole) && no_leading_zero(whole) && exponent_ok && fraction_ok && is_decimal) {
        return Err(invalid());
    }
    let parsed: f64 = decimal
        .trim_start_matches('+')
        .parse()
        .map_err(|_| invalid())?;
    let value = Number::from_f64(parsed)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(text.to_string()));
    Ok((value, Kind::Float))
}

/// The text of a map key: keywords without the colon, scalars as written, collections as JSON.
fn key_text(value: &Value, kind: Kind) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "nil".to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Array(_) | Value::Object(_) => {
            assert!(
                matches!(kind, Kind::Vector | Kind::List | Kind::Set | Kind::Map),
                "a collection value from a scalar form"
            );
            value.to_string()
        }
    }
}

/// Reads the elements of a history: the items of one top-level vector or list, or a bare
/// sequence of top-level forms. Each call returns one element, parsed whole.
#[derive(Debug)]
pub struct ElementReader<R> {
    parser: Parser<R>,
    state: State,
    largest_element_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    /// Inside the top-level collection, which `close` ends.
    InCollection {
        close: u8,
        kind: Kind,
        open_line: u64,
    },
    /// A bare sequence of forms.
    Bare,
    Done,
}

impl<R: std::io::Read> ElementReader<R> {
    /// Elements of the history in `reader`.
    pub fn new(reader: R) -> ElementReader<R> {
        ElementReader {
            parser: Parser::new(reader, 1),
            state: State::Start,
            largest_element_bytes: 0,
        }
    }

    /// The most input any one element has spanned so far: what the reader had to hold.
    pub fn largest_element_bytes(&self) -> u64 {
        self.largest_element_bytes
    }

    /// The next element; `None` after the last one. After an error, the reader is done.
    pub fn next_element(&mut self) -> Result<Option<Form>, EdnError> {
        let result = self.step();
        if !matches!(result, Ok(Some(_))) {
            self.state = State::Done;
        }
        result
    }

    fn step(&mut self) -> Result<Option<Form>, EdnError> {
        if self.state == State::Start {
            self.parser.scanner.skip_blank()?;
            let line = self.parser.line();
            self.state = match self.parser.scanner.peek()? {
                Some(b'[') => State::InCollection {
                    close: b']',
                    kind: Kind::Vector,
                    open_line: line,
                },
                Some(b'(') => State::InCollection {
                    close: b')',
                    kind: Kind::List,
                    open_line: line,
                },
                _ => State::Bare,
            };
            if self.state != State::Bare {
                self.parser.scanner.bump();
            }
        }
        let start = self.parser.offset();
        let result = match self.state {
            State::Start | State::Done => return Ok(None),
            State::Bare => self.parser.next_form(),
            State::InCollection {
                close,
                kind,
                open_line,
            } => {
                self.parser.scanner.mark_element();
                match self.parser.next_item(1)? {
                    Item::Form(form) => Ok(Some(form)),
                    Item::Close(found) if found == close => {
                        self.expect_end(kind)?;
                        Ok(None)
                    }
                    Item::Close(found) => {
                        Err(self.parser.mismatched(found, close, kind, open_line))
                    }
                    Item::End => Err(self.parser.unclosed(kind, open_line)),
                }
            }
        };
        self.largest_element_bytes = self.largest_element_bytes.max(self.parser.offset() - start);
        result
    }

    /// After the top-level collection, only blanks may follow.
    fn expect_end(&mut self, kind: Kind) -> Result<(), EdnError> {
        self.parser.scanner.skip_blank()?;
        match self.parser.scanner.peek()? {
            None => Ok(()),
            Some(byte) => Err(EdnError::syntax(
                self.parser.line(),
                format!(
                    "expected the end of input after the history {}, found {}",
                    kind.describe().trim_start_matches("a "),
                    show_byte(byte)
                ),
            )),
        }
    }
}

/// Parses the first form of `text` (which starts on line `line`) and returns it with the
/// number of bytes it spanned; `None` when `text` holds only blanks and comments.
pub fn read_prefix(text: &[u8], line: u64) -> Result<Option<(Form, usize)>, EdnError> {
    let mut parser = Parser::with_buffer(text, line, text.len());
    let form = parser.next_form()?;
    let consumed = usize::try_from(parser.offset()).unwrap_or(text.len());
    Ok(form.map(|form| (form, consumed)))
}

/// Parses `text` as exactly one form; anything but blanks after it is an error.
pub fn read_one(text: &[u8], line: u64) -> Result<Option<Form>, EdnError> {
    let mut parser = Parser::with_buffer(text, line, text.len());
    let Some(form) = parser.next_form()? else {
        return Ok(None);
    };
    parser.scanner.skip_blank()?;
    match parser.scanner.peek()? {
        None => Ok(Some(form)),
        Some(byte) => Err(EdnError::syntax(
            parser.line(),
            format!("expected one form, found {} after it", show_byte(byte)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(text: &str) -> Result<Value, String> {
        match read_one(text.as_bytes(), 1) {
            Ok(Some(form)) => Ok(form.value),
            Ok(None) => Err("no form".to_string()),
            Err(EdnError::Syntax { line, message }) => Err(format!("{line}: {message}")),
            Err(EdnError::Io(error)) => Err(error.to_string()),
        }
    }

    #[test]
    fn scalars_convert_to_json_as_documented() {
        let cases: &[(&str, Value)] = &[
            ("nil", json!(null)),
            ("true", json!(true)),
            ("false", json!(false)),
            ("42", json!(42)),
            ("-1", json!(-1)),
            ("+7", json!(7)),
            ("42N", json!(42)),
            ("18446744073709551615", json!(18446744073709551615u64)),
            (
                "123456789012345678901234567890N",
                json!("123456789012345678901234567890"),
            ),
            ("1.5", json!(1.5)),
            ("1e3", json!(1000.0)),
            ("-2.5E-1", json!(-0.25)),
            ("1.5M", json!(1.5)),
            ("1/2", json!("1/2")),
            ("1e999", json!("1e999")),
            ("##Inf", json!("##Inf")),
            (":read", json!("read")),
            (":jepsen.foo/bar", json!("jepsen.foo/bar")),
            ("::auto", json!("auto")),
            ("cas", json!("cas")),
            ("foo/bar", json!("foo/bar")),
            ("-", json!("-")),
            ("\"a\\n\\t\\\"\\\\b\"", json!("a\n\t\"\\b")),
            ("\"\\u00e9\\uD83D\\uDE00\"", json!("é😀")),
            ("\"multi\nline\"", json!("multi\nline")),
            ("\\a", json!("a")),
            ("\\newline", json!("\n")),
            ("\\space", json!(" ")),
            ("\\u0041", json!("A")),
            ("\\(", json!("(")),
            (
                "#inst \"2024-01-01T00:00:00Z\"",
                json!("2024-01-01T00:00:00Z"),
            ),
            ("#uuid \"f81d4fae\"", json!("f81d4fae")),
        ];
        for (text, expected) in cases {
            assert_eq!(one(text).as_ref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn collections_convert_to_arrays_and_objects() {
        let cases: &[(&str, Value)] = &[
            ("[]", json!([])),
            ("()", json!([])),
            ("#{}", json!([])),
            ("{}", json!({})),
            ("[1, 2 ,3]", json!([1, 2, 3])),
            (
                "[[:read :x nil] [:write :y 3]]",
                json!([["read", "x", null], ["write", "y", 3]]),
            ),
            (
                "[[:append 9 2] [:r 9 nil]]",
                json!([["append", 9, 2], ["r", 9, null]]),
            ),
            ("#{:a}", json!(["a"])),
            (
                "{:a 1 \"b\" 2 3 4 nil 5 true 6}",
                json!({"a":1,"b":2,"3":4,"nil":5,"true":6}),
            ),
            ("{[1 2] :x}", json!({"[1,2]": "x"})),
            ("[1 #_2 3 #_ #_ 4 5 6]", json!([1, 3, 6])),
            ("[1 ; comment ]\n 2]", json!([1, 2])),
            ("#jepsen.history.Op{:f :read}", json!({"f": "read"})),
            ("{:v #{[1 2]}}", json!({"v": [[1, 2]]})),
        ];
        for (text, expected) in cases {
            assert_eq!(one(text).as_ref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_syntax_is_an_error_naming_line_and_what_was_expected() {
        let cases = [
            ("[1 2", "1: unexpected end of input inside a vector opened on line 1; was the file cut short?"),
            ("{:a 1\n:b", "2: unexpected end of input inside a map opened on line 1; was the file cut short?"),
            ("{:a 1\n:b}", "2: map opened on line 1 has a key with no value"),
            ("{:a}", "1: map opened on line 1 has a key with no value"),
            ("[1 2)", "1: expected ']' to close a vector opened on line 1, found ')'"),
            (")", "1: unexpected ')' with no open collection"),
            ("\"abc", "1: unexpected end of input inside a string opened on line 1; was the file cut short?"),
            ("\"\\q\"", "1: unknown string escape \\q"),
            ("\"\\uD800x\"", "1: unpaired surrogate in a \\u escape"),
            ("\\bogus", "1: unknown character literal \\bogus"),
            ("01", "1: invalid number 01"),
            ("1.2.3", "1: invalid number 1.2.3"),
            ("1-2", "1: invalid number 1-2"),
            ("12abc", "1: invalid number 12abc"),
            (":", "1: expected a keyword name after ':'"),
            ("#\"re\"", "1: expected a set, a tag or '#_' after '#', found '\"'"),
            ("#_", "1: expected a form after '#_'"),
            ("#tag", "1: expected a form after the tag #tag"),
            ("{:a 1 :a 2}", "1: duplicate key \"a\" in the map opened on line 1"),
            ("\u{1}", "1: expected an EDN form, found byte 0x01"),
            ("^meta", "1: expected an EDN form, found '^'"),
            ("[\"\u{0}\" \n \"\\u00\"]", "2: expected four hex digits after \\u"),
            ("1 2", "1: expected one form, found '2' after it"),
        ];
        for (text, expected) in cases {
            assert_eq!(one(text), Err(expected.to_string()), "{text:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        for input in [&b"\"\xff\""[..], b"ab\xfe", b":\xc3"] {
            let error = read_one(input, 3).unwrap_err();
            assert!(
                matches!(error, EdnError::Syntax { line: 3, ref message } if message.starts_with("not UTF-8")),
                "{error:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep = "[".repeat(100_000);
        let error = one(&deep).unwrap_err();
        assert_eq!(error, format!("1: nesting deeper than {MAX_DEPTH} levels"));
        let discards = "#_".repeat(100_000);
        assert!(one(&discards).unwrap_err().contains("nesting deeper"));
        let fine = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(one(&fine).is_ok());
    }

    #[test]
    fn read_prefix_reports_how_much_it_consumed() {
        let (form, used) = read_prefix(b"[3 0]\t:timed-out", 5).unwrap().unwrap();
        assert_eq!(
            (form.value, form.kind, form.line, used),
            (json!([3, 0]), Kind::Vector, 5, 5)
        );
        let (form, used) = read_prefix(b"  :timed-out", 1).unwrap().unwrap();
        assert_eq!(
            (form.value, form.kind, used),
            (json!("timed-out"), Kind::Keyword, 12)
        );
        assert!(read_prefix(b"  ; only a comment", 1).unwrap().is_none());
    }

    fn elements(text: &str) -> Result<Vec<(u64, Value)>, String> {
        let mut reader = ElementReader::new(text.as_bytes());
        let mut out = Vec::new();
        loop {
            match reader.next_element() {
                Ok(Some(form)) => out.push((form.line, form.value)),
                Ok(None) => return Ok(out),
                Err(EdnError::Syntax { line, message }) => {
                    return Err(format!("{line}: {message}"))
                }
                Err(EdnError::Io(error)) => return Err(error.to_string()),
            }
        }
    }

    #[test]
    fn the_top_level_may_be_a_vector_a_list_or_a_bare_sequence() {
        let expected = vec![(2, json!({"f": "read"})), (3, json!({"f": "write"}))];
        for text in [
            "; c\n[{:f :read}\n {:f :write}]\n",
            "; c\n({:f :read}\n {:f :write}) ; end\n",
            "; c\n{:f :read}\n{:f :write}\n",
        ] {
            assert_eq!(elements(text), Ok(expected.clone()), "{text}");
        }
        assert_eq!(elements("[]"), Ok(vec![]));
        assert_eq!(elements(""), Ok(vec![]));
    }

    #[test]
    fn a_broken_top_level_is_an_error() {
        assert_eq!(
            elements("[{:f :read}\n{:f"),
            Err(
                "2: unexpected end of input inside a map opened on line 2; was the file cut short?"
                    .into()
            )
        );
        assert_eq!(
            elements("[{:f :read}\n"),
            Err("2: unexpected end of input inside a vector opened on line 1; was the file cut short?".into())
        );
        assert_eq!(
            elements("[{:f :read}] {:f :write}"),
            Err("1: expected the end of input after the history vector, found '{'".into())
        );
        assert_eq!(
            elements("({:f :read}]"),
            Err("1: expected ')' to close a list opened on line 1, found ']'".into())
        );
    }

    #[test]
    fn an_element_over_the_cap_is_refused_after_reading_about_the_cap() {
        let mut reader = ElementReader::new(std::io::repeat(b'a'));
        reader.parser.scanner.max_element_bytes = 1024 * 1024;
        let error = reader.next_element().unwrap_err();
        assert!(
            matches!(&error, EdnError::Syntax { message, .. } if message.contains("longer than 1 MiB")),
            "{error:?}"
        );
        assert!(reader.parser.offset() <= 1024 * 1024 + BUFFER_BYTES as u64 * 2);
        assert!(
            matches!(reader.next_element(), Ok(None)),
            "a failed reader stays done"
        );
    }
}
