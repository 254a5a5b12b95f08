//! Numbers in strings, read and written the way Redis does.

/// Bytes of the longest decimal integer Redis reads (`-9223372036854775808` is 20).
const INTEGER_BYTES_MAX: usize = 20;
/// Bytes of the longest float Redis reads (its `MAX_LONG_DOUBLE_CHARS`).
const FLOAT_BYTES_MAX: usize = 5 * 1024;

/// Parses a decimal integer as Redis's `string2ll` does: an optional minus, then digits
/// without a leading zero (`0` alone excepted), nothing else: no plus sign, no spaces, no
/// `-0`, within `i64`.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > INTEGER_BYTES_MAX {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    // Accumulate as a negative number, whose range includes i64::MIN.
    let mut value: i64 = 0;
    for byte in digits {
        let digit = match byte {
            b'0'..=b'9' => i64::from(byte - b'0'),
            _ => return None,
        };
        value = value.checked_mul(10)?.checked_sub(digit)?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Parses a float as Redis reads one (`strtold`, refusing leading spaces, anything after the
/// number, and NaN): decimal notation with an optional sign, fraction and exponent, and
/// `inf`/`infinity`. Redis also reads hexadecimal floats (`0x1p3`); this does not.
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    if bytes.is_empty() || bytes.len() > FLOAT_BYTES_MAX {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    if text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    (!value.is_nan()).then_some(value)
}

/// Writes a float as INCRBYFLOAT answers: decimal notation without an exponent, no trailing
/// zeros (Redis prints 17 decimals of a long double and trims the zeros; this prints the
/// shortest decimal that reads back as the same double, which agrees wherever the sum is
/// exact in both).
pub fn format_f64(value: f64) -> String {
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_as_redis_string2ll_does() {
        for (text, expected) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("42", Some(42)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("007", None),
            ("-0", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1.0", None),
            ("00000000000000000000001", None),
        ] {
            assert_eq!(parse_i64(text.as_bytes()), expected, "{text:?}");
        }
    }

    #[test]
    fn floats_parse_as_redis_reads_them_and_print_without_exponent() {
        for (text, expected) in [
            ("1.", Some(1.0)),
            (".5", Some(0.5)),
            ("+1", Some(1.0)),
            ("1.5e3", Some(1500.0)),
            ("-2.25", Some(-2.25)),
            ("inf", Some(f64::INFINITY)),
            ("nan", None),
            (" 1", None),
            ("1x", None),
            ("", None),
        ] {
            assert_eq!(parse_f64(text.as_bytes()), expected, "{text:?}");
        }
        assert_eq!(format_f64(10.75), "10.75");
        assert_eq!(format_f64(1e10), "10000000000");
        assert_eq!(format_f64(3.0), "3");
        assert_eq!(format_f64(1.000015), "1.000015");
    }
}
