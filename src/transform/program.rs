//! A compiled jq program (jaq) and one run of it over a payload. Pure: no I/O, no clock. Runs in
//! the transform worker process (`worker.rs`), where a program that recurses without end or
//! exhausts memory can only kill that process; the controller only compiles (`check`).
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{data, Compiler, Ctx, Vars};
use jaq_json::{Num, Val};

/// The largest program accepted (bytes), as the CRD says: it bounds the parser's recursion.
pub const MAX_PROGRAM_BYTES: usize = 16 * 1024;

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The request body: one JSON value, serialized.
    Body(Vec<u8>),
    /// The program produced nothing (jq `empty`): the event is not sent to this endpoint.
    Filtered,
}

/// Why a program does not compile: the language's message, with line and column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

/// Why a run gave no body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("the payload is not JSON: {0}")]
    Input(String),
    #[error("{0}")]
    Program(String),
    #[error("the program produced more than one value; wrap it in [...] to send an array")]
    SeveralOutputs,
    #[error("the output is not JSON ({0}); nan, infinite, byte strings and non-string object keys cannot be sent")]
    NotJson(String),
    #[error("the output is larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// A compiled program, ready to run on many payloads.
pub struct Program {
    filter: jaq_core::Filter<data::JustLut<Val>>,
}

impl Program {
    /// Parses and compiles `code` with jq's standard library (no module imports, no I/O).
    pub fn compile(code: &str) -> Result<Self, CompileError> {
        if code.len() > MAX_PROGRAM_BYTES {
            return Err(CompileError(format!(
                "the program is {} bytes; at most {MAX_PROGRAM_BYTES} are allowed",
                code.len()
            )));
        }
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(&arena, File { code, path: () })
            .map_err(|errors| load_error(code, errors))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| compile_error(code, errors))?;
        Ok(Program { filter })
    }

    /// Runs the program on `payload` (JSON). At most `max_output` bytes of output.
    pub fn run(&self, payload: &[u8], max_output: usize) -> Result<Output, RunError> {
        let input =
            jaq_json::read::parse_single(payload).map_err(|e| RunError::Input(e.to_string()))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input));
        let value = match outputs.next() {
            None => return Ok(Output::Filtered),
            Some(value) => value.map_err(exception)?,
        };
        if let Some(more) = outputs.next() {
            // An error as the second result is still the program's error, not "several".
            more.map_err(exception)?;
            return Err(RunError::SeveralOutputs);
        }
        serialize(&value, max_output).map(Output::Body)
    }
}

/// Compiles `code` only, for validation: the message, or `None` when it compiles.
pub fn check(code: &str) -> Option<String> {
    Program::compile(code).err().map(|e| e.0)
}

/// The value as JSON, refused if it is not JSON or is longer than `limit`.
fn serialize(value: &Val, limit: usize) -> Result<Vec<u8>, RunError> {
    let mut out = Vec::with_capacity(256);
    if write_json(&mut out, value, limit, 0).is_some() {
        return Ok(out);
    }
    // Not plain JSON, or too long: jaq's writer and a JSON parser say which, and why.
    serialize_and_check(value, limit)
}

/// Writes `value` as JSON, byte for byte as jaq's writer does (compact, keys in order, jaq's
/// string escapes), when that is certainly JSON: `None` at the first value that may not be
/// (nan, infinite, byte strings, non-string keys, invalid UTF-8, a number with an exponent or
/// of 300 characters, nesting deeper than [`FAST_DEPTH`]) or past `limit` bytes, for
/// [`serialize_and_check`] to judge.
fn write_json(out: &mut Vec<u8>, value: &Val, limit: usize, depth: usize) -> Option<()> {
    use std::io::Write;
    if depth > FAST_DEPTH {
        return None;
    }
    match value {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Num(Num::Int(n)) => write!(out, "{n}").ok()?,
        Val::Num(Num::Float(n)) if n.is_finite() => write!(out, "{}", Num::Float(*n)).ok()?,
        Val::Num(Num::Float(_)) | Val::BStr(_) => return None,
        Val::Num(number) => {
            // Big integers and the decimals read from the payload, written as they came.
            let text = number.to_string();
            if !is_plain_number(&text) {
                return None;
            }
            out.extend_from_slice(text.as_bytes());
        }
        Val::TStr(text) => write_string(out, text)?,
        Val::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item, limit, depth + 1)?;
            }
            out.push(b']');
        }
        Val::Obj(entries) => {
            out.push(b'{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let Val::TStr(key) = key else {
                    return None;
                };
                write_string(out, key)?;
                out.push(b':');
                write_json(out, item, limit, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    (out.len() <= limit).then_some(())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?` in under 300 characters: JSON, and within a double's range
/// (the JSON parser of the checked path refuses a number past it).
fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    text.len() < 300
        && all_digits(whole)
        && (whole == "0" || !whole.starts_with('0'))
        && fraction.is_none_or(all_digits)
}

/// Nesting the fast writer handles; deeper output goes to the checked path (whose JSON parser
/// refuses past 128 levels).
const FAST_DEPTH: usize = 100;

/// A text string as jaq writes it: `"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` escaped by name, the
/// other control characters and DEL as `\u00xx`; `None` if it is not UTF-8.
fn write_string(out: &mut Vec<u8>, text: &[u8]) -> Option<()> {
    std::str::from_utf8(text).ok()?;
    out.push(b'"');
    let special = |byte: &u8| matches!(byte, 0x00..=0x1f | b'\\' | b'"' | 0x7f);
    let mut rest = text;
    while let Some(at) = rest.iter().position(special) {
        out.extend_from_slice(&rest[..at]);
        match rest[at] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            other => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(other >> 4)]);
                out.push(HEX[usize::from(other & 0xf)]);
            }
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
    Some(())
}

/// jaq's writer, then a JSON parser over its output: the general path, for values the fast
/// writer leaves (and for the error messages).
fn serialize_and_check(value: &Val, limit: usize) -> Result<Vec<u8>, RunError> {
    let mut out = Capped {
        bytes: Vec::with_capacity(256),
        limit,
    };
    if jaq_json::write::write(&mut out, &jaq_json::write::Pp::default(), 0, value).is_err() {
        return Err(RunError::TooLarge { limit });
    }
    // jaq writes nan, byte strings and non-string keys in forms JSON has no place for.
    serde_json::from_slice::<serde::de::IgnoredAny>(&out.bytes)
        .map_err(|e| RunError::NotJson(e.to_string()))?;
    Ok(out.bytes)
}

/// A writer that fails past `limit` bytes, so a huge output is never fully serialized.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A run's exception as an error: `error(...)`, a type error, or `halt`, which must not end
/// the process as the jq command line does.
fn exception(exn: jaq_core::Exn<Val>) -> RunError {
    match exn.get_err() {
        // `error("text")` reads as the text, as jq prints it; other values as JSON.
        Ok(error) => RunError::Program(match error.into_val() {
            Val::TStr(text) => String::from_utf8_lossy(&text).into_owned(),
            other => other.to_string(),
        }),
        Err(other) => match other.get_halt() {
            Ok(code) => RunError::Program(format!("the program called halt (exit code {code})")),
            Err(_) => RunError::Program("the program raised an uncaught exception".to_owned()),
        },
    }
}

fn load_error(code: &str, errors: load::Errors<&str, ()>) -> CompileError {
    let mut message = String::new();
    for (_, error) in errors {
        match error {
            load::Error::Io(items) => {
                for (path, why) in items {
                    push(&mut message, format!("cannot load module {path}: {why}"));
                }
            }
            load::Error::Lex(items) => {
                for (expected, found) in items {
                    push(
                        &mut message,
                        format!("{}: expected {}", position(code, found), expected.as_str()),
                    );
                }
            }
            load::Error::Parse(items) => {
                for (expected, found) in items {
                    let what = if found.is_empty() {
                        "the end of the program".to_owned()
                    } else {
                        format!("{found:?}")
                    };
                    push(
                        &mut message,
                        format!(
                            "{}: expected {}, found {what}",
                            position(code, found),
                            expected.as_str()
                        ),
                    );
                }
            }
        }
    }
    CompileError(message)
}

fn compile_error(code: &str, errors: jaq_core::compile::Errors<&str, ()>) -> CompileError {
    let mut message = String::new();
    for (_, items) in errors {
        for (name, undefined) in items {
            push(
                &mut message,
                format!(
                    "{}: undefined {} {name}",
                    position(code, name),
                    undefined.as_str()
                ),
            );
        }
    }
    CompileError(message)
}

fn push(message: &mut String, item: String) {
    if !message.is_empty() {
        message.push_str("; ");
    }
    message.push_str(&item);
}

/// "line L, column C" of `part`, a slice of `code` (1-based; columns in characters).
fn position(code: &str, part: &str) -> String {
    let start = part.as_ptr() as usize;
    let base = code.as_ptr() as usize;
    let offset = match start.checked_sub(base) {
        Some(offset) if offset <= code.len() => offset,
        _ => return "at an unknown position".to_owned(),
    };
    let before = &code[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = br#"{"event_id":"evt_1","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"crm/hooks","name":"CRM"},"data":{"event_type":"user.created","user":{"id":123,"email":"a@example.com"}}}"#;

    fn run(code: &str) -> Result<Output, RunError> {
        Program::compile(code).unwrap().run(PAYLOAD, 1 << 20)
    }

    fn body(code: &str) -> serde_json::Value {
        match run(code) {
            Ok(Output::Body(body)) => serde_json::from_slice(&body).unwrap(),
            other => panic!("{code}: {other:?}"),
        }
    }

    #[test]
    fn maps_the_payload_to_a_body() {
        assert_eq!(
            body(r#"{text: "New \(.data.event_type) event", id: (.data.user.id | tostring)}"#),
            serde_json::json!({"text": "New user.created event", "id": "123"})
        );
        assert_eq!(body(".data.user.email"), serde_json::json!("a@example.com"));
    }

    #[test]
    fn empty_filters_the_event_and_select_can_drop_it() {
        assert_eq!(run("empty"), Ok(Output::Filtered));
        assert_eq!(
            run(r#"select(.data.event_type == "user.verified") | .data"#),
            Ok(Output::Filtered)
        );
    }

    #[test]
    fn runtime_errors_say_what_went_wrong() {
        let error = run(r#"error("no user")"#).unwrap_err();
        assert_eq!(error, RunError::Program("no user".into()));
        let error = run(".data.user.id | ascii_downcase").unwrap_err();
        assert!(matches!(error, RunError::Program(_)), "{error}");
        let error = run("halt").unwrap_err();
        assert!(error.to_string().contains("halt"), "{error}");
        assert_eq!(run(".data, .event_id"), Err(RunError::SeveralOutputs));
    }

    #[test]
    fn output_must_be_json_and_within_the_limit() {
        assert!(matches!(run("nan"), Err(RunError::NotJson(_))));
        assert!(matches!(
            run("{(1): 2}"),
            Err(RunError::NotJson(_)) | Err(RunError::Program(_))
        ));
        let program = Program::compile("[range(1000)]").unwrap();
        assert_eq!(
            program.run(PAYLOAD, 100),
            Err(RunError::TooLarge { limit: 100 })
        );
        assert!(matches!(
            Program::compile(".").unwrap().run(b"{not json", 100),
            Err(RunError::Input(_))
        ));
    }

    /// The fast writer gives jaq's bytes, and leaves to the checked path what it cannot vouch for.
    #[test]
    fn the_fast_writer_writes_what_jaq_writes() {
        let fast = |value: &Val| {
            let mut out = Vec::new();
            write_json(&mut out, value, 1 << 20, 0).map(|()| out)
        };
        let inputs: [&[u8]; 6] = [
            br#"{"a":[1,-2,0,1.5,-0.25,19.99,0.0,12345678901234567890123,{"b":null}],"c":true,"d":false}"#,
            br#""tab\t nl\n cr\r bs\\ q\" bell\u0007 del\u007f esc\u001b \b \f \u0000 \u00e9 \ud83d\ude00 \u2028""#,
            br#"[[], {}, "", [[[0]]]]"#,
            br#"{"nested": {"deeper": [{"k": "v"}]}, "": 1}"#,
            b"-0",
            b"123456789012345678901234567890",
        ];
        for input in inputs {
            let value = jaq_json::read::parse_single(input).unwrap();
            let written = fast(&value).expect("plain JSON takes the fast path");
            assert_eq!(
                Ok(&written),
                serialize_and_check(&value, 1 << 20).as_ref(),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // Values a program computes (floats written by ryu, escapes of program literals).
        for code in [
            "1 / 3",
            "1.5 * 3",
            "-0.0",
            "[1e300 * 3, 1e-300 / 3]",
            r#""\u0001""#,
        ] {
            let program = Program::compile(code).unwrap();
            let ctx = Ctx::<data::JustLut<Val>>::new(&program.filter.lut, Vars::new([]));
            let value = program
                .filter
                .id
                .run((ctx, Val::Null))
                .next()
                .unwrap()
                .unwrap();
            let written = fast(&value).expect(code);
            assert_eq!(Ok(written), serialize_and_check(&value, 1 << 20), "{code}");
        }
        // What the fast writer leaves to the checked path (which may still pass it).
        for input in [&b"1e400"[..], b"1E2", b"\"\xff\"", &[b'1'; 400]] {
            let value = jaq_json::read::parse_single(input).unwrap();
            assert_eq!(fast(&value), None, "{}", String::from_utf8_lossy(input));
        }
        let deep = jaq_json::read::parse_single(&[b"[".repeat(120), b"]".repeat(120)].concat());
        assert_eq!(fast(&deep.unwrap()), None);
        assert!(matches!(run("nan"), Err(RunError::NotJson(_))));
        assert_eq!(
            run(r#"{text: "a long enough text"}"#),
            Ok(Output::Body(br#"{"text":"a long enough text"}"#.to_vec()))
        );
        assert_eq!(
            Program::compile(r#"{text: "a long enough text"}"#)
                .unwrap()
                .run(PAYLOAD, 20),
            Err(RunError::TooLarge { limit: 20 })
        );
    }

    #[test]
    fn compile_errors_carry_line_and_column() {
        let message = check("{text: .data\n | .[}").unwrap();
        assert!(message.starts_with("line 2, column"), "{message}");
        let message = check(".data | nosuchfilter").unwrap();
        assert_eq!(message, "line 1, column 9: undefined filter nosuchfilter");
        let message = check("\"unterminated").unwrap();
        assert!(message.starts_with("line 1, column"), "{message}");
        assert!(check(r#"if . then 1 else 2 end"#).is_none());
        let too_long = ".".repeat(MAX_PROGRAM_BYTES + 1);
        assert!(check(&too_long).unwrap().contains("at most"));
    }

    #[test]
    fn modules_cannot_be_loaded() {
        let message = check(r#"include "secrets"; ."#).unwrap();
        assert!(message.contains("cannot load module"), "{message}");
    }
}
