//! The session's client_encoding, so statements are classified as the
//! server will read them. Frames are relayed as the client sent them; only
//! the copy handed to the classifier (and recorded) is converted to UTF-8.

use std::borrow::Cow;

use encoding_rs::Encoding;

use super::{frame::Frame, message::BackendMessage};

/// How text from the client is converted to UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientEncoding {
    Utf8,
    /// No conversion by the server: bytes above 0x7f are not characters
    /// it checks, so they are shown as U+FFFD and classified as such.
    SqlAscii,
    /// ISO 8859-1: each byte is the code point of the same value.
    Latin1,
    /// Converted with this WHATWG decoder.
    Other(&'static Encoding),
    /// A client encoding interlock cannot convert (EUC_TW, JOHAB,
    /// MULE_INTERNAL, EUC_JIS_2004, SHIFT_JIS_2004): statements are
    /// unparseable, which policies decide on (fail closed).
    Unsupported,
}

impl ClientEncoding {
    /// The encoding PostgreSQL names `name` (its canonical names, as the
    /// server reports them in ParameterStatus, case-insensitive).
    pub(crate) fn from_name(name: &str) -> ClientEncoding {
        use encoding_rs::*;
        let other = ClientEncoding::Other;
        match name.to_ascii_uppercase().replace('-', "_").as_str() {
            "UTF8" | "UNICODE" => ClientEncoding::Utf8,
            "SQL_ASCII" => ClientEncoding::SqlAscii,
            "LATIN1" | "ISO_8859_1" => ClientEncoding::Latin1,
            "LATIN2" => other(ISO_8859_2),
            "LATIN3" => other(ISO_8859_3),
            "LATIN4" => other(ISO_8859_4),
            // ISO 8859-9 differs from windows-1254 only in 0x80-0x9f
            // (controls there): the text's structure is the same.
            "LATIN5" => other(WINDOWS_1254),
            "LATIN6" => other(ISO_8859_10),
            "LATIN7" => other(ISO_8859_13),
            "LATIN8" => other(ISO_8859_14),
            "LATIN9" => other(ISO_8859_15),
            "LATIN10" => other(ISO_8859_16),
            "ISO_8859_5" => other(ISO_8859_5),
            "ISO_8859_6" => other(ISO_8859_6),
            "ISO_8859_7" => other(ISO_8859_7),
            "ISO_8859_8" => other(ISO_8859_8),
            "WIN866" => other(IBM866),
            "WIN874" => other(WINDOWS_874),
            "WIN1250" => other(WINDOWS_1250),
            "WIN1251" => other(WINDOWS_1251),
            "WIN1252" => other(WINDOWS_1252),
            "WIN1253" => other(WINDOWS_1253),
            "WIN1254" => other(WINDOWS_1254),
            "WIN1255" => other(WINDOWS_1255),
            "WIN1256" => other(WINDOWS_1256),
            "WIN1257" => other(WINDOWS_1257),
            "WIN1258" => other(WINDOWS_1258),
            "KOI8R" => other(KOI8_R),
            "KOI8U" => other(KOI8_U),
            "SJIS" => other(SHIFT_JIS),
            "EUC_JP" => other(EUC_JP),
            // WHATWG's EUC-KR is windows-949, a superset of EUC_KR: UHC.
            "EUC_KR" | "UHC" => other(EUC_KR),
            // GBK is a superset of GB 2312 (EUC_CN).
            "EUC_CN" | "GBK" => other(GBK),
            "GB18030" => other(GB18030),
            "BIG5" => other(BIG5),
            _ => ClientEncoding::Unsupported,
        }
    }

    /// `bytes` as UTF-8; `None` when they are not valid in this encoding
    /// (the server would refuse them too) or it cannot be converted.
    pub(crate) fn decode<'a>(&self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        match self {
            ClientEncoding::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            ClientEncoding::SqlAscii => Some(String::from_utf8_lossy(bytes)),
            ClientEncoding::Latin1 => Some(encoding_rs::mem::decode_latin1(bytes)),
            ClientEncoding::Other(e) => {
                e.decode_without_bom_handling_and_without_replacement(bytes)
            }
            ClientEncoding::Unsupported => None,
        }
    }
}

impl ClientEncoding {
    /// `text` in this encoding; characters it lacks become `?` (Latin-1)
    /// or HTML numeric references (the WHATWG encoders' way).
    pub(crate) fn encode<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        match self {
            ClientEncoding::Latin1 => Cow::Owned(
                text.chars()
                    .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                    .collect(),
            ),
            ClientEncoding::Other(e) => e.encode(text).0,
            // The server does not convert for SQL_ASCII; unsupported
            // encodings are left as they are.
            _ => Cow::Borrowed(text.as_bytes()),
        }
    }

    /// interlock's own ErrorResponse or NoticeResponse (worded in UTF-8)
    /// in this encoding, so the client reads it as it reads the server's.
    /// Other frames are returned unchanged.
    pub(crate) fn transcode(&self, frame: Frame) -> Frame {
        if !matches!(self, ClientEncoding::Latin1 | ClientEncoding::Other(_)) {
            return frame;
        }
        let convert: &dyn Fn(&str) -> Cow<'_, [u8]> = &|v| self.encode(v);
        match BackendMessage::decode(&frame) {
            Ok(BackendMessage::ErrorResponse(f)) => f.encode_with(b'E', convert),
            Ok(BackendMessage::NoticeResponse(f)) => f.encode_with(b'N', convert),
            _ => frame,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_encodings_convert_as_the_server_reads_them() {
        let latin1 = ClientEncoding::from_name("LATIN1");
        assert_eq!(
            latin1.decode(b"select '\xe9'").as_deref(),
            Some("select 'é'")
        );
        let utf8 = ClientEncoding::from_name("UTF8");
        assert_eq!(
            utf8.decode("select 'é'".as_bytes()).as_deref(),
            Some("select 'é'")
        );
        assert_eq!(utf8.decode(b"select '\xe9'"), None, "not UTF-8");
        let w1251 = ClientEncoding::from_name("win1251");
        assert_eq!(w1251.decode(b"\xcf\xf0\xe8").as_deref(), Some("При"));
        // Shift-JIS: 0x5c can be the second byte of a character, so a
        // byte-wise reading would see a backslash that is not there
        let sjis = ClientEncoding::from_name("SJIS");
        assert_eq!(
            sjis.decode(b"select '\x95\x5c'").as_deref(),
            Some("select '表'")
        );
        assert_eq!(sjis.decode(b"select '\x95"), None, "cut in a character");
        assert_eq!(
            ClientEncoding::from_name("EUC_TW").decode(b"select 1"),
            None
        );
        assert_eq!(
            ClientEncoding::from_name("MULE_INTERNAL"),
            ClientEncoding::Unsupported
        );
        // interlock's own words go back in the client's encoding
        let ours = crate::postgres::legs::error("42501", "statement: drop table café");
        let latin = latin1.transcode(ours.clone());
        assert!(
            latin.raw().windows(5).any(|w| w == b"caf\xe9\0"),
            "{latin:?}"
        );
        assert_eq!(utf8.transcode(ours.clone()), ours);
        assert_eq!(
            w1251.encode("Привет €"),
            &b"\xcf\xf0\xe8\xe2\xe5\xf2 \x88"[..]
        );
        assert_eq!(latin1.encode("€"), &b"?"[..]);
        let ascii = ClientEncoding::from_name("SQL_ASCII");
        assert_eq!(
            ascii.decode(b"select '\xff'").as_deref(),
            Some("select '\u{fffd}'")
        );
    }
}
