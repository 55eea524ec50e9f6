//! Error messages that quote user input, cut to a readable length.
//!
//! A parser's error quotes the offending line; a 10 MB single-line file would make a 10 MB
//! message. Every place that quotes input (spec and config parse errors, names, values) passes it
//! through [`quote_cut`] or [`cut_long_lines`].

/// The longest line of a message before [`cut_long_lines`] shortens it.
pub const MAX_LINE: usize = 240;

/// `text` cut to at most `max` characters, with `…` and the full length when it was longer.
pub fn quote_cut(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    format!("{head}… ({n} characters)")
}

/// `message` with every line longer than [`MAX_LINE`] characters cut (see [`quote_cut`]); the
/// message's line structure is kept, so a parser's caret line stays under its quote.
pub fn cut_long_lines(message: &str) -> String {
    if message.lines().all(|l| l.len() <= MAX_LINE) {
        return message.to_string();
    }
    let mut out: Vec<String> = message.lines().map(|l| quote_cut(l, MAX_LINE)).collect();
    if message.ends_with('\n') {
        out.push(String::new());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged_and_long_text_is_cut_by_characters() {
        assert_eq!(quote_cut("abc", 3), "abc");
        assert_eq!(quote_cut("abcd", 3), "abc… (4 characters)");
        // multi-byte characters are never split
        assert_eq!(quote_cut("ééé", 2), "éé… (3 characters)");
    }

    #[test]
    fn long_lines_are_cut_and_short_lines_kept() {
        let long = "x".repeat(10_000_000);
        let msg = format!("TOML parse error at line 1\n  |\n1 | {long}\n  | ^\nexpected `=`");
        let cut = cut_long_lines(&msg);
        assert!(cut.len() < 400, "{} bytes", cut.len());
        let lines: Vec<&str> = cut.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "TOML parse error at line 1");
        assert!(lines[2].ends_with("… (10000004 characters)"), "{}", lines[2]);
        assert_eq!(lines[4], "expected `=`");
        assert_eq!(cut_long_lines("a\nb\n"), "a\nb\n");
    }
}
