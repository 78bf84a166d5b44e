//! Text for the page: HTML escaping, bounded excerpts of long values, and number formats.
//!
//! Everything that comes from a history (values, keys, process names, errors, file names)
//! reaches the page only through [`push_escaped`], so a value such as
//! `</script><img onerror=alert(1)>` is shown as text and never parsed as markup.

use std::fmt;

/// Appends `text` escaped for HTML element content and for quoted attribute values.
///
/// Control characters other than tab and newline are replaced, so that no byte of the
/// history can change how the page is parsed.
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// `text` escaped for HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    push_escaped(&mut out, text);
    out
}

/// At most about `max_chars` characters of `text`: its start and its end around an ellipsis,
/// with the full length named, so that a 1 MB register value costs the page a few hundred bytes.
pub(crate) fn excerpt(text: &str, max_chars: usize) -> String {
    let n_chars = text.chars().count();
    if n_chars <= max_chars {
        return text.to_string();
    }
    let head_chars = max_chars * 2 / 3;
    let tail_chars = max_chars.saturating_sub(head_chars);
    let head: String = text.chars().take(head_chars).collect();
    let tail: String = text.chars().skip(n_chars - tail_chars).collect();
    format!("{head} … {tail} ({} chars)", group(n_chars as u64))
}

/// An integer with thousands separators: `48,210`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    // The first group has 1 to 3 digits; every later one has 3. Digits are ASCII.
    let first = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        short => short,
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(&digits[..first]);
    let mut at = first;
    while at < digits.len() {
        out.push(',');
        out.push_str(&digits[at..at + 3]);
        at += 3;
    }
    out
}

/// A duration or a time since the run started, in nanoseconds, with a unit: `12.5 ms`.
pub(crate) fn nanos(ns: u64) -> String {
    let value = ns as f64;
    if ns >= 1_000_000_000 {
        format!("{} s", trim(value / 1e9))
    } else if ns >= 1_000_000 {
        format!("{} ms", trim(value / 1e6))
    } else if ns >= 1_000 {
        format!("{} µs", trim(value / 1e3))
    } else {
        format!("{ns} ns")
    }
}

/// Three significant digits at most, without trailing zeros: `12.5`, `3`, `0.125`.
fn trim(value: f64) -> String {
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A coordinate in pixels, written with at most one decimal and none when it is whole: `42`,
/// `42.5`. Bars and points are most of a page's bytes, so their numbers are kept short.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Px(pub f64);

impl fmt::Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 * 10.0).round() as i64;
        let sign = if tenths < 0 { "-" } else { "" };
        let (whole, tenth) = (tenths.abs() / 10, tenths.abs() % 10);
        if tenth == 0 {
            write!(f, "{sign}{whole}")
        } else {
            write!(f, "{sign}{whole}.{tenth}")
        }
    }
}

/// One of 1, 2 or 5 times a power of ten, near `span / target` and at least 1: a tick step.
pub(crate) fn tick_step(span: u64, target: u64) -> u64 {
    let raw = (span / target.max(1)).max(1);
    let mut power = 1u64;
    while let Some(next) = power.checked_mul(10).filter(|&next| next <= raw) {
        power = next;
    }
    [1, 2, 5, 10]
        .into_iter()
        .map(|factor| power.saturating_mul(factor))
        .find(|&step| step >= raw)
        .unwrap_or(power)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped_and_never_raw() {
        let escaped = escape("</script><img src=x onerror=alert(1)> & \"q\" 'a'\u{0}");
        assert_eq!(
            escaped,
            "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; &quot;q&quot; &#39;a&#39;\u{FFFD}"
        );
    }

    #[test]
    fn long_values_keep_their_ends_and_name_their_length() {
        let long = format!("start{}end", "x".repeat(10_000));
        let short = excerpt(&long, 60);
        assert!(short.starts_with("startxx"), "{short}");
        assert!(short.ends_with("xxend (10,008 chars)"), "{short}");
        assert!(short.chars().count() < 90, "{short}");
        assert_eq!(excerpt("héllo", 5), "héllo");
    }

    #[test]
    fn numbers_read_like_a_person_wrote_them() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(48_210), "48,210");
        assert_eq!(group(1_000_000), "1,000,000");
        assert_eq!(nanos(850), "850 ns");
        assert_eq!(nanos(12_500_000), "12.5 ms");
        assert_eq!(nanos(3_000_000_000), "3 s");
        assert_eq!(tick_step(1_000, 10), 100);
        assert_eq!(tick_step(1_300, 10), 200);
        assert_eq!(tick_step(3, 10), 1);
        assert_eq!(tick_step(u64::MAX, 1), u64::MAX);
        assert_eq!(Px(42.0).to_string(), "42");
        assert_eq!(Px(42.46).to_string(), "42.5");
        assert_eq!(Px(-0.5).to_string(), "-0.5");
    }
}
