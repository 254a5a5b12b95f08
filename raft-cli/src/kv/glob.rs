//! Glob-style patterns as KEYS and SCAN's MATCH read them (Redis's `stringmatchlen`):
//! `*` any bytes, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` one byte of a set, `\x` the byte
//! `x`. Bytes compare as unsigned.
//!
//! A pattern of many stars could otherwise take exponential time: as in Redis, once the
//! text after a star fails to match at every later start, no longer match is tried
//! either. Nesting is bounded like Redis's (1000 stars deep), after which nothing matches.

/// Stars a match may nest through before it gives up (no match), as in Redis.
const STAR_NESTING_MAX: usize = 1000;

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let mut give_up = false;
    match_from(pattern, text, 0, &mut give_up)
}

fn match_from(mut pattern: &[u8], mut text: &[u8], nesting: usize, give_up: &mut bool) -> bool {
    if nesting > STAR_NESTING_MAX {
        return false;
    }
    while !pattern.is_empty() && !text.is_empty() {
        let consumed = match pattern[0] {
            b'*' => return star(pattern, text, nesting, give_up),
            b'?' => 1,
            b'[' => match bracket(pattern, text[0]) {
                (true, consumed) => consumed,
                (false, _) => return false,
            },
            b'\\' if pattern.len() >= 2 => match pattern[1] == text[0] {
                true => 2,
                false => return false,
            },
            byte => match byte == text[0] {
                true => 1,
                false => return false,
            },
        };
        pattern = &pattern[consumed..];
        text = &text[1..];
        if text.is_empty() {
            while pattern.first() == Some(&b'*') {
                pattern = &pattern[1..];
            }
        }
    }
    pattern.is_empty() && text.is_empty()
}

/// Matches `text` against a pattern that starts with `*`.
fn star(mut pattern: &[u8], mut text: &[u8], nesting: usize, give_up: &mut bool) -> bool {
    while pattern.len() > 1 && pattern[1] == b'*' {
        pattern = &pattern[1..];
    }
    if pattern.len() == 1 {
        return true;
    }
    while !text.is_empty() {
        if match_from(&pattern[1..], text, nesting + 1, give_up) {
            return true;
        }
        if *give_up {
            return false;
        }
        text = &text[1..];
    }
    *give_up = true;
    false
}

/// Matches `byte` against the set `pattern` opens with `[`; whether it matched, and how
/// many pattern bytes the set takes, its `]` included (all of them when it is not closed,
/// as Redis reads it).
fn bracket(pattern: &[u8], byte: u8) -> (bool, usize) {
    let mut at = 1;
    let negated = pattern.get(at) == Some(&b'^');
    if negated {
        at += 1;
    }
    let mut matched = false;
    loop {
        match &pattern[at.min(pattern.len())..] {
            [b'\\', escaped, ..] => {
                matched |= *escaped == byte;
                at += 2;
            }
            [b']', ..] => {
                at += 1;
                break;
            }
            [] => {
                at = pattern.len();
                break;
            }
            [low, b'-', high, ..] => {
                let (low, high) = if low <= high {
                    (*low, *high)
                } else {
                    (*high, *low)
                };
                matched |= (low..=high).contains(&byte);
                at += 3;
            }
            [single, ..] => {
                matched |= *single == byte;
                at += 1;
            }
        }
    }
    (matched != negated, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases checked against redis-server 7.0.15 (`KEYS`), including its reading of
    /// unclosed sets and trailing escapes.
    #[test]
    fn patterns_match_as_redis_matches_them() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", false),
            ("**", "", false),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h*llo", "hllo", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("k[\\]]", "k]", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("k*", "k", true),
            ("k**", "k", true),
            ("*k", "k", true),
            ("abc", "ab", false),
            ("ab", "abc", false),
            ("", "", true),
            ("", "a", false),
            ("[abc", "a", true),
            ("[abc", "c", true),
            ("[abc", "d", false),
            ("k[", "k[", false),
            ("[", "[", false),
            ("[^", "x", true),
            ("k[^", "k[", true),
            ("[a\\", "a", true),
            ("x\\", "x\\", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                matches(pattern.as_bytes(), text.as_bytes()),
                *expected,
                "{pattern:?} against {text:?}"
            );
        }
    }

    /// Many stars against a long text that does not match finish at once.
    #[test]
    fn many_stars_do_not_take_exponential_time() {
        let pattern = "a*".repeat(40) + "b";
        let text = "a".repeat(5000);
        let started = std::time::Instant::now();
        assert!(!matches(pattern.as_bytes(), text.as_bytes()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
