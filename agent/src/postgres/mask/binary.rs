//! Binary-format values of fixed-layout types, decoded to the text the
//! server would have sent in text format, so detectors (a card number in a
//! bigint, a custom regex over ids) see the same thing in both formats.

/// A binary layout interlock can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decoder {
    Int2,
    Int4,
    Int8,
    Oid,
    Bool,
    Uuid,
    Numeric,
}

impl Decoder {
    /// The decoder for type `oid`, if it has one.
    pub(crate) fn of(oid: u32) -> Option<Decoder> {
        Some(match oid {
            21 => Decoder::Int2,
            23 => Decoder::Int4,
            20 => Decoder::Int8,
            26 => Decoder::Oid,
            16 => Decoder::Bool,
            2950 => Decoder::Uuid,
            1700 => Decoder::Numeric,
            _ => return None,
        })
    }

    /// The value's text form; `None` if the bytes do not fit the layout.
    pub(crate) fn text(self, v: &[u8]) -> Option<String> {
        Some(match self {
            Decoder::Int2 => i16::from_be_bytes(v.try_into().ok()?).to_string(),
            Decoder::Int4 => i32::from_be_bytes(v.try_into().ok()?).to_string(),
            Decoder::Int8 => i64::from_be_bytes(v.try_into().ok()?).to_string(),
            Decoder::Oid => u32::from_be_bytes(v.try_into().ok()?).to_string(),
            Decoder::Bool => match v {
                [0] => "f".into(),
                [_] => "t".into(),
                _ => return None,
            },
            Decoder::Uuid => {
                let b: [u8; 16] = v.try_into().ok()?;
                let h = hex::encode(b);
                let part = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default().to_string();
                format!(
                    "{}-{}-{}-{}-{}",
                    part(0..8),
                    part(8..12),
                    part(12..16),
                    part(16..20),
                    part(20..32)
                )
            }
            Decoder::Numeric => numeric(v)?,
        })
    }
}

/// Binary types that cannot hold what detectors look for (floats, dates,
/// times, intervals): passed as they are.
pub(crate) fn inert(oid: u32) -> bool {
    matches!(oid, 700 | 701 | 1082 | 1083 | 1266 | 1114 | 1184 | 1186)
}

fn i16_at(v: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(v.get(at..at + 2)?.try_into().ok()?))
}

/// numeric: ndigits, weight, sign, dscale (int16 each), then base-10000 digits.
fn numeric(v: &[u8]) -> Option<String> {
    let ndigits = usize::try_from(i16_at(v, 0)?).ok()?;
    let weight = i32::from(i16_at(v, 2)?);
    let sign = u16::from_be_bytes(v.get(4..6)?.try_into().ok()?);
    let dscale = usize::try_from(i16_at(v, 6)?).ok()?;
    if v.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| i16_at(v, 8 + 2 * i))
        .collect::<Option<_>>()?;
    let digit = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let d = digit(i);
            if i == 0 {
                out.push_str(&d.to_string());
            } else {
                out.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        out.push_str(&frac);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(ndigits: i16, weight: i16, sign: u16, dscale: i16, d: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [ndigits, weight] {
            v.extend(x.to_be_bytes());
        }
        v.extend(sign.to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for x in d {
            v.extend(x.to_be_bytes());
        }
        v
    }

    #[test]
    fn fixed_layouts_decode_to_their_text() {
        assert_eq!(Decoder::Int2.text(&(-5i16).to_be_bytes()).unwrap(), "-5");
        assert_eq!(
            Decoder::Int8
                .text(&4111111111111111i64.to_be_bytes())
                .unwrap(),
            "4111111111111111"
        );
        assert_eq!(
            Decoder::Oid.text(&u32::MAX.to_be_bytes()).unwrap(),
            "4294967295"
        );
        assert_eq!(Decoder::Bool.text(&[1]).unwrap(), "t");
        assert_eq!(
            Decoder::Uuid.text(&[0xab; 16]).unwrap(),
            "abababab-abab-abab-abab-abababababab"
        );
        assert_eq!(Decoder::Int4.text(&[1, 2]), None);
        // 4111111111111111 = 4111 1111 1111 1111 (weight 3)
        let card = num(4, 3, 0, 0, &[4111, 1111, 1111, 1111]);
        assert_eq!(Decoder::Numeric.text(&card).unwrap(), "4111111111111111");
        // -12.50 (weight 0, dscale 2: digits 12, 5000)
        let neg = num(2, 0, 0x4000, 2, &[12, 5000]);
        assert_eq!(Decoder::Numeric.text(&neg).unwrap(), "-12.50");
        // 0.0001 (weight -1, digit 1)
        assert_eq!(
            Decoder::Numeric.text(&num(1, -1, 0, 4, &[1])).unwrap(),
            "0.0001"
        );
        // 10000 (one digit 1 at weight 1, trailing zero digits omitted)
        assert_eq!(
            Decoder::Numeric.text(&num(1, 1, 0, 0, &[1])).unwrap(),
            "10000"
        );
        assert_eq!(
            Decoder::Numeric.text(&num(0, 0, 0xC000, 0, &[])).unwrap(),
            "NaN"
        );
        assert_eq!(Decoder::Numeric.text(&[0, 1]), None);
        assert!(inert(1184) && !inert(17));
    }
}
