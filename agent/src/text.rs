//! Showing text a job controls (statements, commands, argv, executable paths, CI values,
//! claims) on a terminal. A job can put terminal escape sequences, carriage returns,
//! backspaces or Unicode bidirectional overrides in a statement so that an approver's
//! terminal shows `SELECT` where the request says `TRUNCATE`, or fakes whole lines.
//! Every CLI output of such text goes through here: control characters (C0, DEL, C1),
//! bidirectional controls and line/paragraph separators are shown as visible escapes.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as itself.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators.
            | '\u{2028}' | '\u{2029}')
}

/// `s` with every unsafe character written as a visible escape (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{202e}`), everything else as it is.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A JSON text (as serde_json writes it) with every unsafe character that serde_json leaves
/// as itself (DEL, C1 controls, bidirectional controls, separators) written as a `\uXXXX`
/// escape: the same JSON value, safe on a terminal. serde_json already escapes C0 controls.
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    // C0 characters appear raw only as layout between tokens (serde_json escapes them in
    // strings); everything else unsafe becomes an escape.
    let escape = |c: char| is_unsafe(c) && c as u32 >= 0x20;
    if !json.chars().any(escape) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if escape(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one \u escape.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Terminal output (a PTY recording) as plain text: escape sequences (CSI, OSC, DCS and the
/// other string sequences, two-byte ESC sequences, and their C1 forms) removed, `\r\n` as a
/// line break, every other unsafe character escaped. What a recorded program printed, without
/// letting it drive the reader's terminal.
pub fn strip_terminal(s: &str) -> String {
    #[derive(PartialEq)]
    enum State {
        Text,
        Esc,
        /// CSI parameters until a final byte.
        Csi,
        /// OSC/DCS/SOS/PM/APC until BEL or ST.
        Str,
        StrEsc,
    }
    let mut out = String::with_capacity(s.len());
    let mut state = State::Text;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        state = match state {
            State::Text => match c {
                '\u{1b}' => State::Esc,
                '\u{9b}' => State::Csi,
                '\u{90}' | '\u{9d}' | '\u{98}' | '\u{9e}' | '\u{9f}' => State::Str,
                '\r' if chars.peek() == Some(&'\n') => State::Text,
                '\n' | '\t' => {
                    out.push(c);
                    State::Text
                }
                c => {
                    out.push_str(&escape_controls(c.encode_utf8(&mut [0; 4])));
                    State::Text
                }
            },
            State::Esc => match c {
                '[' => State::Csi,
                ']' | 'P' | 'X' | '^' | '_' => State::Str,
                // Intermediate bytes of a two-byte sequence (`ESC ( B`): wait for the final one.
                ' '..='/' => State::Esc,
                _ => State::Text,
            },
            State::Csi => match c {
                '@'..='~' => State::Text,
                _ => State::Csi,
            },
            State::Str => match c {
                '\u{7}' | '\u{9c}' => State::Text,
                '\u{1b}' => State::StrEsc,
                _ => State::Str,
            },
            State::StrEsc => match c {
                '\\' => State::Text,
                '\u{1b}' => State::StrEsc,
                _ => State::Str,
            },
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_can_fool_a_terminal() {
        // A TRUNCATE that an xterm would show as a SELECT: erase line, carriage return.
        let sneaky = "TRUNCATE payments;\r\x1b[2KSELECT 1";
        let shown = escape_controls(sneaky);
        assert_eq!(shown, "TRUNCATE payments;\\r\\x1b[2KSELECT 1");
        assert!(!shown.chars().any(is_unsafe));
        assert_eq!(
            escape_controls("a\u{202e}b\u{9b}c\u{7f}"),
            "a\\u{202e}b\\x9bc\\x7f"
        );
        assert_eq!(escape_controls("line\nnext\ttab"), "line\\nnext\\ttab");
        assert!(matches!(escape_controls("plain é ü 中"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_output_loses_its_sequences_not_its_text() {
        let recorded = "\u{1b}]0;title\u{7}\u{1b}[1;32muser@host\u{1b}[0m:~$ ls\r\na b\r\n\u{1b}[2K\rfake\u{1b}]52;c;Y2xpcA==\u{1b}\\\u{1b}(Bdone\u{9b}31mx\u{8}";
        assert_eq!(
            strip_terminal(recorded),
            "user@host:~$ ls\na b\n\\rfakedonex\\x08"
        );
        assert_eq!(strip_terminal("plain\ttext\n"), "plain\ttext\n");
    }

    #[test]
    fn json_stays_the_same_value() {
        let v = serde_json::json!({"text": "a\u{9b}31mb\u{202e}c\u{7f}\u{2028}\n"});
        for raw in [
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string_pretty(&v).unwrap(),
        ] {
            let safe = json_for_terminal(&raw);
            assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            assert_eq!(back, v);
        }
    }
}
