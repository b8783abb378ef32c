//! RowDescription fields (parsed only when masking applies to the result).

use bytes::Bytes;

use super::super::error::ProtocolError;
use super::cursor::Cursor;

/// One result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowField {
    pub name: String,
    /// The source table's OID (0 when the column is computed).
    pub table_oid: u32,
    /// The source column's number (0 when computed).
    pub attnum: i16,
    pub type_oid: u32,
    /// 0 text, 1 binary (always 0 in the answer to a statement Describe,
    /// as the formats are chosen later, by Bind).
    pub format: i16,
}

impl RowField {
    /// Parses a RowDescription body.
    pub fn parse_all(body: Bytes) -> Result<Vec<RowField>, ProtocolError> {
        let mut c = Cursor::new(body, "RowDescription");
        let n = c.count16()?;
        let mut out = Vec::with_capacity(n.min(1600));
        for _ in 0..n {
            let name = c.cstr_lossy()?;
            let table_oid = c.i32()? as u32;
            let attnum = c.i16()?;
            let type_oid = c.i32()? as u32;
            let _typlen = c.i16()?;
            let _typmod = c.i32()?;
            let format = c.i16()?;
            out.push(RowField {
                name,
                table_oid,
                attnum,
                type_oid,
                format,
            });
        }
        c.finish()?;
        Ok(out)
    }
}

/// The parameter type OIDs of a ParameterDescription body.
pub fn parameter_types(body: Bytes) -> Result<Vec<u32>, ProtocolError> {
    let mut c = Cursor::new(body, "ParameterDescription");
    let n = c.count16()?;
    let mut out = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        out.push(c.i32()? as u32);
    }
    c.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::frame::Payload;

    #[test]
    fn parses_fields_and_rejects_truncation() {
        let f = Payload::new(b'T')
            .i16(1)
            .cstr("email")
            .i32(16384)
            .i16(2)
            .i32(25)
            .i16(-1)
            .i32(-1)
            .i16(1)
            .finish();
        let got = RowField::parse_all(f.body()).unwrap();
        assert_eq!(
            got,
            vec![RowField {
                name: "email".into(),
                table_oid: 16384,
                attnum: 2,
                type_oid: 25,
                format: 1,
            }]
        );
        let short = Payload::new(b'T').i16(1).cstr("x").i32(1).finish();
        assert!(RowField::parse_all(short.body()).is_err());
        let params = Payload::new(b't').i16(2).i32(25).i32(23).finish();
        assert_eq!(parameter_types(params.body()).unwrap(), vec![25, 23]);
        let bad = Payload::new(b't').i16(2).i32(25).finish();
        assert!(parameter_types(bad.body()).is_err());
    }
}
