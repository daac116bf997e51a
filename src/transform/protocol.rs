//! The frames between the dispatcher and a transform worker, over the worker's stdin and stdout.
//! Request: program, payload (each a u32 little-endian length and bytes), then the output limit
//! (u32). Response: a tag byte and a length-prefixed text or body.
use std::io::{self, Read, Write};

/// A request as the worker reads it.
pub struct Request {
    pub program: String,
    pub payload: Vec<u8>,
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

/// A request's bytes, as the dispatcher writes them.
pub fn encode_request(program: &str, payload: &[u8], max_output: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(12 + program.len() + payload.len());
    put(&mut frame, program.as_bytes());
    put(&mut frame, payload);
    frame.extend_from_slice(&u32::try_from(max_output).unwrap_or(u32::MAX).to_le_bytes());
    frame
}

/// Reads one request; `None` at a clean end of input (the dispatcher closed the pipe).
pub fn read_request(input: &mut impl Read) -> io::Result<Option<Request>> {
    let program = match read_part(input) {
        Ok(part) => part,
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    };
    let program = String::from_utf8(program)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "program is not UTF-8"))?;
    let payload = read_part(input)?;
    let max_output = read_u32(input)? as usize;
    Ok(Some(Request {
        program,
        payload,
        max_output,
    }))
}

/// Writes one response (the caller flushes).
pub fn write_response(output: &mut impl Write, response: &Response) -> io::Result<()> {
    let (tag, bytes): (u8, &[u8]) = match response {
        Response::Body(body) => (BODY, body),
        Response::Filtered => (FILTERED, &[]),
        Response::RunError(text) => (RUN_ERROR, text.as_bytes()),
        Response::CompileError(text) => (COMPILE_ERROR, text.as_bytes()),
    };
    let mut frame = Vec::with_capacity(5 + bytes.len());
    frame.push(tag);
    put(&mut frame, bytes);
    output.write_all(&frame)
}

/// Decodes a response from its tag and bytes.
pub fn decode_response(tag: u8, bytes: Vec<u8>) -> io::Result<Response> {
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Ok(match tag {
        BODY => Response::Body(bytes),
        FILTERED => Response::Filtered,
        RUN_ERROR => Response::RunError(text(bytes)),
        COMPILE_ERROR => Response::CompileError(text(bytes)),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown response tag {other}"),
            ))
        }
    })
}

/// A length as a frame carries it, checked against the limit.
pub fn part_length(header: [u8; 4]) -> io::Result<usize> {
    let length = u32::from_le_bytes(header) as usize;
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

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut header = [0u8; 4];
    input.read_exact(&mut header)?;
    Ok(u32::from_le_bytes(header))
}

fn read_part(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    input.read_exact(&mut header)?;
    let mut part = vec![0u8; part_length(header)?];
    input.read_exact(&mut part)?;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let frame = encode_request(".data", br#"{"data":1}"#, 4096);
        let request = read_request(&mut frame.as_slice()).unwrap().unwrap();
        assert_eq!(request.program, ".data");
        assert_eq!(request.payload, br#"{"data":1}"#);
        assert_eq!(request.max_output, 4096);
        assert!(read_request(&mut &[][..]).unwrap().is_none());
        for response in [
            Response::Body(b"{}".to_vec()),
            Response::Filtered,
            Response::RunError("boom".into()),
            Response::CompileError("line 1".into()),
        ] {
            let mut bytes = Vec::new();
            write_response(&mut bytes, &response).unwrap();
            let length = part_length(bytes[1..5].try_into().unwrap()).unwrap();
            assert_eq!(length, bytes.len() - 5);
            assert_eq!(
                decode_response(bytes[0], bytes[5..].to_vec()).unwrap(),
                response
            );
        }
    }

    #[test]
    fn a_corrupt_length_is_refused_before_allocating() {
        assert!(part_length(u32::MAX.to_le_bytes()).is_err());
        assert!(decode_response(9, Vec::new()).is_err());
    }
}
