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
    if !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if is_unsafe(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one \u escape.
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
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
    fn json_stays_the_same_value() {
        let v = serde_json::json!({"text": "a\u{9b}31mb\u{202e}c\u{7f}\u{2028}\n"});
        let raw = serde_json::to_string(&v).unwrap();
        let safe = json_for_terminal(&raw);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
    }
}
