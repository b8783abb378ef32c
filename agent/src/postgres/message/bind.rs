//! The parts of Bind and FunctionCall bodies after their names: parameter
//! formats and values, and result formats (decoded for recording parameters
//! and masking results in the format the client asked for).

use bytes::Bytes;

use super::super::error::ProtocolError;
use super::cursor::Cursor;

/// A Bind's parameters and result formats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindParams {
    /// None: all text; one: for all; else one per parameter.
    pub param_formats: Vec<i16>,
    /// Values; `None` is NULL.
    pub params: Vec<Option<Bytes>>,
    /// As `param_formats`, for result columns.
    pub result_formats: Vec<i16>,
}

fn formats(c: &mut Cursor) -> Result<Vec<i16>, ProtocolError> {
    let n = c.count16()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(c.i16()?);
    }
    Ok(out)
}

/// Parameter formats and values, as Bind and FunctionCall lay them out.
fn arguments(c: &mut Cursor) -> Result<(Vec<i16>, Vec<Option<Bytes>>), ProtocolError> {
    let param_formats = formats(c)?;
    let n = c.count16()?;
    let mut params = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        params.push(c.value()?);
    }
    Ok((param_formats, params))
}

impl BindParams {
    /// Parses what follows the portal and statement names of a Bind.
    pub fn parse(rest: Bytes) -> Result<BindParams, ProtocolError> {
        let mut c = Cursor::new(rest, "Bind");
        let (param_formats, params) = arguments(&mut c)?;
        let result_formats = formats(&mut c)?;
        c.finish()?;
        Ok(BindParams {
            param_formats,
            params,
            result_formats,
        })
    }

    /// The format of parameter `i` (0 text, 1 binary).
    pub fn param_format(&self, i: usize) -> i16 {
        match self.param_formats.as_slice() {
            [] => 0,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(0),
        }
    }

    /// Parses what follows the function OID of a FunctionCall: its
    /// arguments in the same layout as Bind's, then one result format.
    /// Returns the arguments and the result format.
    pub fn parse_call(rest: Bytes) -> Result<(BindParams, i16), ProtocolError> {
        let mut c = Cursor::new(rest, "FunctionCall");
        let (param_formats, params) = arguments(&mut c)?;
        let result = c.i16()?;
        c.finish()?;
        Ok((
            BindParams {
                param_formats,
                params,
                result_formats: vec![result],
            },
            result,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::frame::Payload;

    #[test]
    fn round_trip_and_malformed() {
        let body = Payload::new(b'B')
            .i16(2)
            .i16(0)
            .i16(1)
            .i16(3)
            .i32(5)
            .bytes(b"a@b.c")
            .i32(-1)
            .i32(4)
            .bytes(&[0, 0, 0, 7])
            .i16(1)
            .i16(1)
            .finish()
            .body();
        let b = BindParams::parse(body.clone()).unwrap();
        assert_eq!(b.param_formats, vec![0, 1]);
        assert_eq!(b.params.len(), 3);
        assert_eq!(b.params[1], None);
        assert_eq!(b.result_formats, vec![1]);
        assert_eq!(b.param_format(1), 1);
        assert_eq!(b.param_format(2), 0);
        // truncated, trailing bytes, negative counts
        assert!(BindParams::parse(body.slice(..body.len() - 1)).is_err());
        let mut long = body.to_vec();
        long.push(0);
        assert!(BindParams::parse(Bytes::from(long)).is_err());
        let neg = Payload::new(b'B').i16(-1).finish().body();
        assert!(BindParams::parse(neg).is_err());
        let call = Payload::new(b'F')
            .i16(0)
            .i16(1)
            .i32(1)
            .bytes(b"x")
            .i16(1)
            .finish()
            .body();
        let (args, result) = BindParams::parse_call(call).unwrap();
        assert_eq!((args.params.len(), result), (1, 1));
        assert!(BindParams::parse_call(Payload::new(b'F').i16(0).finish().body()).is_err());
    }
}
