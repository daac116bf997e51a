//! The frames between the dispatcher and a transform worker, over the worker's stdin and stdout.
//! Request: program, payload (each a u32 little-endian length and bytes), then the output limit
//! (u32). Response: a tag byte and a length-prefixed text or body. Both sides read frames in
//! place from a buffer of what the pipe held, so several frames cost one read.
use std::io;

/// A request as the worker reads it, borrowed from its input buffer.
pub struct Request<'a> {
    pub program: &'a str,
    pub payload: &'a [u8],
    pub max_output: usize,
}

/// A worker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Body(Vec<u8>),
    Filtered,
    /// The program raised an error, or its output was refused.
    RunError(String),
    /// The program does not compile.
    CompileError(String),
}

const BODY: u8 = 0;
const FILTERED: u8 = 1;
const RUN_ERROR: u8 = 2;
const COMPILE_ERROR: u8 = 3;

/// The largest frame part accepted (64 MiB): a corrupt length is an error, not an allocation.
const MAX_PART: usize = 64 << 20;

/// Appends a request's bytes to `frames`, as the dispatcher writes them.
pub fn encode_request(frames: &mut Vec<u8>, program: &str, payload: &[u8], max_output: usize) {
    frames.reserve(12 + program.len() + payload.len());
    put(frames, program.as_bytes());
    put(frames, payload);
    frames.extend_from_slice(&u32::try_from(max_output).unwrap_or(u32::MAX).to_le_bytes());
}

/// The first request in `input` and the bytes it spans, or `None` while it is incomplete (more
/// must be read). Nothing is copied: the program and payload are slices of `input`.
pub fn parse_request(input: &[u8]) -> io::Result<Option<(Request<'_>, usize)>> {
    let Some((program, rest)) = split_part(input)? else {
        return Ok(None);
    };
    let Some((payload, rest)) = split_part(rest)? else {
        return Ok(None);
    };
    let Some((max_output, rest)) = split_u32(rest) else {
        return Ok(None);
    };
    let program = std::str::from_utf8(program)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "program is not UTF-8"))?;
    let request = Request {
        program,
        payload,
        max_output: max_output as usize,
    };
    Ok(Some((request, input.len() - rest.len())))
}

/// Appends one response's bytes to `frame`.
pub fn encode_response(frame: &mut Vec<u8>, response: &Response) {
    let (tag, bytes): (u8, &[u8]) = match response {
        Response::Body(body) => (BODY, body),
        Response::Filtered => (FILTERED, &[]),
        Response::RunError(text) => (RUN_ERROR, text.as_bytes()),
        Response::CompileError(text) => (COMPILE_ERROR, text.as_bytes()),
    };
    frame.reserve(5 + bytes.len());
    frame.push(tag);
    put(frame, bytes);
}

/// The first response in `input` and the bytes it spans, or `None` while it is incomplete.
pub fn parse_response(input: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let Some((&tag, rest)) = input.split_first() else {
        return Ok(None);
    };
    let Some((bytes, rest)) = split_part(rest)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(bytes).into_owned();
    let response = match tag {
        BODY => Response::Body(bytes.to_vec()),
        FILTERED => Response::Filtered,
        RUN_ERROR => Response::RunError(text()),
        COMPILE_ERROR => Response::CompileError(text()),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown response tag {other}"),
            ))
        }
    };
    Ok(Some((response, input.len() - rest.len())))
}

/// A length as a frame carries it, checked against the limit.
fn part_length(length: u32) -> io::Result<usize> {
    let length = length as usize;
    if length > MAX_PART {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame part of {length} bytes is over the limit"),
        ));
    }
    Ok(length)
}

fn put(frame: &mut Vec<u8>, bytes: &[u8]) {
    frame.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    frame.extend_from_slice(bytes);
}

/// A length-prefixed part at the start of `input` and what follows it; `None` if incomplete.
fn split_part(input: &[u8]) -> io::Result<Option<(&[u8], &[u8])>> {
    let Some((length, rest)) = split_u32(input) else {
        return Ok(None);
    };
    let length = part_length(length)?;
    Ok((rest.len() >= length).then(|| rest.split_at(length)))
}

fn split_u32(input: &[u8]) -> Option<(u32, &[u8])> {
    let (header, rest) = input.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*header), rest))
}

/// The room an [`Inbox`] keeps between frames (1 MiB).
const KEPT_BYTES: usize = 1 << 20;

/// Frames arriving on a pipe: what was read and not yet consumed, read into by the caller and
/// parsed in place. The buffer is kept, so a steady stream of frames allocates nothing.
#[derive(Default)]
pub struct Inbox {
    bytes: Vec<u8>,
    /// The unconsumed bytes are `bytes[start..end]`.
    start: usize,
    end: usize,
}

impl Inbox {
    /// The bytes received and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Marks `count` pending bytes as consumed.
    pub fn consume(&mut self, count: usize) {
        self.start = (self.start + count).min(self.end);
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.bytes.len() > KEPT_BYTES {
                // A large frame went through: its room is not kept.
                self.bytes = Vec::new();
            }
        }
    }

    /// Free space after the pending bytes, at least `at_least` long, to read into; then
    /// [`Inbox::filled`] with the count read.
    pub fn space(&mut self, at_least: usize) -> &mut [u8] {
        if self.bytes.len() - self.end < at_least && self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.bytes.len() - self.end < at_least {
            // Doubling: a large frame arrives in a few reads, not one per `at_least`.
            self.bytes.resize(self.end + at_least.max(self.end), 0);
        }
        &mut self.bytes[self.end..]
    }

    /// `count` bytes were read into the last [`Inbox::space`].
    pub fn filled(&mut self, count: usize) {
        self.end = (self.end + count).min(self.bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let mut frames = Vec::new();
        encode_request(&mut frames, ".data", br#"{"data":1}"#, 4096);
        encode_request(&mut frames, "empty", b"{}", 10);
        let (request, used) = parse_request(&frames).unwrap().unwrap();
        assert_eq!(request.program, ".data");
        assert_eq!(request.payload, br#"{"data":1}"#);
        assert_eq!(request.max_output, 4096);
        let (request, rest) = parse_request(&frames[used..]).unwrap().unwrap();
        assert_eq!((request.program, request.max_output), ("empty", 10));
        assert_eq!(used + rest, frames.len());
        // Every prefix of a frame is incomplete, not an error.
        for cut in 0..used {
            assert!(parse_request(&frames[..cut]).unwrap().is_none(), "{cut}");
        }
        for response in [
            Response::Body(b"{}".to_vec()),
            Response::Filtered,
            Response::RunError("boom".into()),
            Response::CompileError("line 1".into()),
        ] {
            let mut bytes = Vec::new();
            encode_response(&mut bytes, &response);
            for cut in 0..bytes.len() {
                assert!(parse_response(&bytes[..cut]).unwrap().is_none());
            }
            bytes.push(9);
            let (decoded, used) = parse_response(&bytes).unwrap().unwrap();
            assert_eq!((decoded, used), (response, bytes.len() - 1));
        }
    }

    #[test]
    fn a_corrupt_frame_is_refused_before_allocating() {
        let mut frame = u32::MAX.to_le_bytes().to_vec();
        assert!(parse_request(&frame).is_err());
        frame.insert(0, BODY);
        assert!(parse_response(&frame).is_err());
        assert!(parse_response(&[9, 0, 0, 0, 0]).is_err());
        let mut frames = Vec::new();
        encode_request(&mut frames, "\u{0}", b"{}", 1);
        frames[4] = 0xff;
        assert!(parse_request(&frames).is_err());
    }

    #[test]
    fn the_inbox_keeps_what_is_not_consumed() {
        let mut inbox = Inbox::default();
        let space = inbox.space(8);
        space[..3].copy_from_slice(b"abc");
        inbox.filled(3);
        assert_eq!(inbox.pending(), b"abc");
        inbox.consume(1);
        let space = inbox.space(6);
        assert!(space.len() >= 6);
        space[..2].copy_from_slice(b"de");
        inbox.filled(2);
        assert_eq!(inbox.pending(), b"bcde");
        inbox.consume(4);
        assert!(inbox.pending().is_empty());
        // A frame larger than a read comes in several, each appended.
        let mut frame = Vec::new();
        encode_response(&mut frame, &Response::Body(vec![b'x'; 3 * KEPT_BYTES]));
        for chunk in frame.chunks(64 << 10) {
            assert!(parse_response(inbox.pending()).unwrap().is_none());
            let space = inbox.space(64 << 10);
            space[..chunk.len()].copy_from_slice(chunk);
            inbox.filled(chunk.len());
        }
        let (response, used) = parse_response(inbox.pending()).unwrap().unwrap();
        assert_eq!(response, Response::Body(vec![b'x'; 3 * KEPT_BYTES]));
        inbox.consume(used);
        assert!(inbox.pending().is_empty() && inbox.bytes.is_empty());
    }
}
