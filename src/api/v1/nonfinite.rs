//! TF Serving accepts the bare tokens `NaN`, `Infinity` and `-Infinity` in
//! request bodies; strict JSON (and serde_json) does not. Before parsing, V1
//! bodies go through [`quote_nonfinite`], which rewrites each such token that
//! stands outside a string literal into its proto3 JSON spelling, the string
//! `"NaN"`, `"Infinity"` or `"-Infinity"`. The tensor decoder then reads
//! those strings as the non-finite floats (`DecodeOptions::nonfinite_strings`),
//! so the model receives the real values. As in proto3 JSON, float inputs
//! therefore also accept those three strings when a client sends them.
//!
//! Rewriting to a number is not possible: serde_json refuses `1e999` as out
//! of range rather than reading infinity, and no number reads as NaN.

use std::borrow::Cow;

/// The tokens rewritten, and what each becomes.
const TOKENS: [(&str, &str); 3] = [
    ("-Infinity", "\"-Infinity\""),
    ("Infinity", "\"Infinity\""),
    ("NaN", "\"NaN\""),
];

/// Rewrites bare `NaN` / `Infinity` / `-Infinity` tokens outside string
/// literals into JSON strings. Text without such tokens is returned as is;
/// text that is not JSON stays not JSON.
pub(super) fn quote_nonfinite(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            match c {
                // skip the escaped byte: `\"` does not end the string
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if matches!(c, b'N' | b'I' | b'-') && (i == 0 || !is_word(bytes[i - 1])) {
            let token = TOKENS.iter().find(|(token, _)| {
                bytes[i..].starts_with(token.as_bytes())
                    && bytes.get(i + token.len()).is_none_or(|&next| !is_word(next))
            });
            if let Some((token, quoted)) = token {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
                buf.push_str(&text[copied..i]);
                buf.push_str(quoted);
                i += token.len();
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// Bytes that continue a bare word or number (`xNaN`, `NaN1`, `1.NaN` are
/// not tokens).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> String {
        quote_nonfinite(text).into_owned()
    }

    #[test]
    fn bare_tokens_become_strings() {
        assert_eq!(
            q("[NaN, Infinity, -Infinity]"),
            r#"["NaN", "Infinity", "-Infinity"]"#
        );
        assert_eq!(q("[NaN,-Infinity]"), r#"["NaN","-Infinity"]"#);
        assert_eq!(q("NaN"), r#""NaN""#);
        assert_eq!(
            q(r#"{"instances": [[1.0, NaN], [Infinity,2]], "x": -Infinity}"#),
            r#"{"instances": [[1.0, "NaN"], ["Infinity",2]], "x": "-Infinity"}"#
        );
        assert_eq!(q("[\n\tNaN\n]"), "[\n\t\"NaN\"\n]");
    }

    #[test]
    fn strings_are_left_alone() {
        for text in [
            r#"{"NaN": "Infinity"}"#,
            r#"["a NaN b", "-Infinity"]"#,
            r#"["say \"NaN\" here"]"#,
            r#"["\\", "\u0022NaN"]"#,
            r#"["é NaN ü"]"#,
        ] {
            assert!(matches!(quote_nonfinite(text), Cow::Borrowed(_)), "{text}");
        }
        // an escaped backslash ends right before the closing quote
        assert_eq!(q(r#"["\\", NaN]"#), r#"["\\", "NaN"]"#);
        assert_eq!(q(r#"["\"", Infinity, "x"]"#), r#"["\"", "Infinity", "x"]"#);
    }

    #[test]
    fn only_whole_tokens_are_rewritten() {
        for text in [
            "[NaNa]",
            "[xNaN]",
            "[NaN1]",
            "[Infinityy]",
            "[-NaN]",
            "[+Infinity]",
            "[1NaN]",
            "[nan]",
            "[Inf]",
        ] {
            assert_eq!(q(text), text);
        }
    }

    #[test]
    fn the_result_parses_when_the_input_was_tf_serving_json() {
        let v: serde_json::Value = serde_json::from_str(&q(r#"{"instances": [NaN, -Infinity]}"#)).unwrap();
        assert_eq!(v, serde_json::json!({"instances": ["NaN", "-Infinity"]}));
        // broken JSON stays broken
        assert!(serde_json::from_str::<serde_json::Value>(&q("[NaN NaN]")).is_err());
        assert!(serde_json::from_str::<serde_json::Value>(&q(r#"["NaN]"#)).is_err());
    }
}
