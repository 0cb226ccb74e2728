//! Numbers as the expression language sees them: JavaScript's `Number(text)` for reading a
//! string, JavaScript's `Number.prototype.toString` for JSON, and GitHub's 15-digit
//! formatting when a number is coerced to a string.

/// The characters JavaScript's `String.prototype.trim`, `Number(text)` and the regular
/// expression class `\s` treat as white space. This differs from `char::is_whitespace`
/// (U+FEFF is included, U+0085 is not), so the lexer and the string-to-number
/// coercion use this set to agree with the reference implementation.
pub(crate) fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{a}' | '\u{b}' | '\u{c}' | '\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// Reads a number the way JavaScript's `Number(text)` does: surrounding white space is
/// ignored, an empty string is 0, `0x`/`0o`/`0b` prefixes select a radix (without a
/// sign), decimals may have a sign, a fraction and an exponent, `Infinity` may be signed,
/// and anything else is NaN.
pub(crate) fn parse_js_number(text: &str) -> f64 {
    let trimmed = text.trim_matches(is_js_whitespace);
    if trimmed.is_empty() {
        return 0.0;
    }
    let bytes = trimmed.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'0' {
        let bits_per_digit = match bytes[1] {
            b'x' | b'X' => Some(4),
            b'o' | b'O' => Some(3),
            b'b' | b'B' => Some(1),
            _ => None,
        };
        if let Some(bits_per_digit) = bits_per_digit {
            return parse_power_of_two_radix(&trimmed[2..], bits_per_digit);
        }
    }
    let (negative, unsigned) = match bytes[0] {
        b'+' => (false, &trimmed[1..]),
        b'-' => (true, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let magnitude = if unsigned == "Infinity" {
        f64::INFINITY
    } else {
        parse_unsigned_decimal(unsigned)
    };
    if negative { -magnitude } else { magnitude }
}

/// Validates JavaScript's `StrUnsignedDecimalLiteral` grammar (digits, optional fraction,
/// optional exponent, at least one digit before the exponent) before handing the text to
/// Rust's correctly rounding parser, which accepts a superset (`inf`, `nan`, ...).
fn parse_unsigned_decimal(text: &str) -> f64 {
    let bytes = text.as_bytes();
    let mut index = 0;
    let count_digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let integer_digits = count_digits(index);
    index += integer_digits;
    let mut fraction_digits = 0;
    if index < bytes.len() && bytes[index] == b'.' {
        index += 1;
        fraction_digits = count_digits(index);
        index += fraction_digits;
    }
    if integer_digits + fraction_digits == 0 {
        return f64::NAN;
    }
    if index < bytes.len() && (bytes[index] == b'e' || bytes[index] == b'E') {
        index += 1;
        if index < bytes.len() && (bytes[index] == b'+' || bytes[index] == b'-') {
            index += 1;
        }
        let exponent_digits = count_digits(index);
        if exponent_digits == 0 {
            return f64::NAN;
        }
        index += exponent_digits;
    }
    if index != bytes.len() {
        return f64::NAN;
    }
    text.parse::<f64>().unwrap_or(f64::NAN)
}

/// Reads hexadecimal, octal or binary digits with correct rounding to the nearest double,
/// however many digits there are: the leading 61–64 significant bits are kept exactly and
/// every later non-zero bit is folded into the lowest bit (a "sticky" bit), which sits far
/// below the 53-bit mantissa and so only ever breaks ties the right way.
fn parse_power_of_two_radix(digits: &str, bits_per_digit: u32) -> f64 {
    if digits.is_empty() {
        return f64::NAN;
    }
    let radix = 1u32 << bits_per_digit;
    let mut significant: u64 = 0;
    let mut dropped_bits: i32 = 0;
    let mut sticky = false;
    for c in digits.chars() {
        let Some(digit) = c.to_digit(radix) else {
            return f64::NAN;
        };
        if significant >> (64 - bits_per_digit) == 0 {
            significant = (significant << bits_per_digit) | u64::from(digit);
        } else {
            dropped_bits = dropped_bits.saturating_add(bits_per_digit as i32);
            sticky |= digit != 0;
        }
    }
    if sticky {
        significant |= 1;
    }
    // `as` rounds to nearest, ties to even; scaling by a power of two is then exact (or
    // overflows to infinity, as JavaScript does for such literals).
    let mut value = significant as f64;
    let mut remaining = dropped_bits;
    while remaining > 0 && value.is_finite() {
        let step = remaining.min(1000);
        value *= 2f64.powi(step);
        remaining -= step;
    }
    value
}

/// JavaScript's `Number.prototype.toString()`: the shortest digits that read back as the
/// same double, in plain notation for 1e-7 < |x| < 1e21 and exponent notation otherwise.
pub(crate) fn js_number_to_string(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if value == 0.0 {
        return "0".to_owned();
    }
    let (digits, exponent) = shortest_digits(value.abs());
    let digit_count = digits.len() as i64;
    // `point` is JavaScript's n: the position of the decimal point relative to the digits.
    let point = exponent + 1;
    let mut out = String::new();
    if value < 0.0 {
        out.push('-');
    }
    if digit_count <= point && point <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - digit_count) as usize));
    } else if 0 < point && point <= 21 {
        let (whole, fraction) = digits.split_at(point as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    } else if -6 < point && point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if point - 1 < 0 { '-' } else { '+' });
        out.push_str(&(point - 1).abs().to_string());
    }
    out
}

/// The shortest decimal digits that read back as `magnitude` (finite, positive), and the
/// power of ten of the first digit: `1234.5` is `("12345", 3)`.
///
/// Rust's `{:e}` finds the shortest digits, but when the double lies exactly halfway
/// between the two shortest candidates it rounds up, where ECMAScript picks the candidate
/// with the even last digit (`1992523372208562.25` prints as `...562.2` in JavaScript).
/// Such a tie means the exact decimal expansion of the double is one digit longer than
/// the candidates and ends in 5, which the exact (long) expansion shows.
fn shortest_digits(magnitude: f64) -> (String, i64) {
    let (mut digits, exponent) = split_scientific(&format!("{magnitude:e}"));
    let length = digits.len();
    let (one_longer, _) = split_scientific(&format!("{magnitude:.length$e}"));
    if one_longer.ends_with('5')
        && digits
            .bytes()
            .last()
            .is_some_and(|digit| (digit - b'0') % 2 == 1)
    {
        // 800 significant digits hold the exact expansion of any double.
        let (exact, _) = split_scientific(&format!("{magnitude:.800e}"));
        if exact.trim_end_matches('0') == one_longer {
            let lower = &one_longer[..length];
            let even = if digits == lower {
                increment_digits(lower)
            } else {
                lower.to_owned()
            };
            digits = even;
        }
    }
    // An increment may carry into a new leading digit ("99" + 1); the value is unchanged
    // as long as the exponent follows the digit count.
    let exponent = exponent + (digits.len() as i64 - length as i64);
    let trimmed = digits.trim_end_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    (trimmed.to_owned(), exponent)
}

/// Splits Rust's `d.ddde±x` into its digits and exponent.
fn split_scientific(scientific: &str) -> (String, i64) {
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific, "0"));
    (
        mantissa.chars().filter(|c| *c != '.').collect(),
        exponent.parse().unwrap_or(0),
    )
}

/// Adds one to a string of decimal digits.
fn increment_digits(digits: &str) -> String {
    let mut bytes = digits.as_bytes().to_vec();
    for byte in bytes.iter_mut().rev() {
        if *byte == b'9' {
            *byte = b'0';
        } else {
            *byte += 1;
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    bytes.insert(0, b'1');
    String::from_utf8(bytes).unwrap_or_default()
}

/// How a number reads when coerced to a string (`format`, `join`, string comparison,
/// object keys): 0 and -0 are `0`; otherwise the value is rounded to 15 fractional digits
/// (JavaScript's `toFixed(15)`), read back, and printed by `Number.prototype.toString`.
/// That limits the noise of binary fractions (`0.1 + 0.2`-style tails) exactly as the
/// reference implementation does.
pub(crate) fn format_number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return js_number_to_string(value);
    }
    let magnitude = value.abs();
    if magnitude >= 1e21 {
        // toFixed falls back to toString for such magnitudes.
        return js_number_to_string(value);
    }
    let fixed = to_fixed_15(magnitude);
    let rounded: f64 = fixed.parse().unwrap_or(magnitude);
    if rounded == 0.0 {
        return "0".to_owned();
    }
    js_number_to_string(if value < 0.0 { -rounded } else { rounded })
}

/// `x.toFixed(15)` for a finite, non-negative x below 1e21. JavaScript rounds exact ties
/// up, Rust's formatter rounds them to even; a tie at the 16th fractional digit happens
/// exactly when the lowest set bit of x is worth 2^-16, and then the 16-digit expansion is
/// exact and is rounded up by hand.
fn to_fixed_15(magnitude: f64) -> String {
    if lowest_set_bit_exponent(magnitude) != Some(-16) {
        return format!("{magnitude:.15}");
    }
    let mut digits: Vec<u8> = format!("{magnitude:.16}").into_bytes();
    // The exact expansion ends in the digit 5: drop it and carry one into the rest.
    digits.pop();
    let mut index = digits.len();
    loop {
        if index == 0 {
            digits.insert(0, b'1');
            break;
        }
        index -= 1;
        match digits[index] {
            b'.' => continue,
            b'9' => digits[index] = b'0',
            digit => {
                digits[index] = digit + 1;
                break;
            }
        }
    }
    String::from_utf8(digits).unwrap_or_else(|_| format!("{magnitude:.15}"))
}

/// The power of two of the lowest set bit of a finite, non-zero double.
fn lowest_set_bit_exponent(value: f64) -> Option<i32> {
    let bits = value.to_bits();
    let exponent_bits = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exponent) = if exponent_bits == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), exponent_bits - 1075)
    };
    if mantissa == 0 {
        return None;
    }
    Some(exponent + mantissa.trailing_zeros() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn javascript_number_reading() {
        let cases: &[(&str, f64)] = &[
            ("", 0.0),
            ("  ", 0.0),
            (" 123456.789 ", 123456.789),
            (" +1.2e2 ", 120.0),
            ("-1.2E+2", -120.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("5.e3", 5000.0),
            ("0xff", 255.0),
            ("0XfF", 255.0),
            ("0o10", 8.0),
            ("0b101", 5.0),
            (" Infinity ", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("1e400", f64::INFINITY),
            ("\u{feff}7\u{a0}", 7.0),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_js_number(text), *expected, "Number({text:?})");
        }
        for text in [
            "-0xff", "0x", "0xfz", "abc", ".", "+", "1e", "inf", "nan", "NaN", "1_000", "\u{85}1",
        ] {
            assert!(
                parse_js_number(text).is_nan(),
                "Number({text:?}) should be NaN"
            );
        }
    }

    #[test]
    fn long_hex_literals_round_to_nearest() {
        // 2^64 + 1 rounds down to 2^64; 2^53 + 1 rounds to even (2^53); 2^53 + 3 rounds up.
        assert_eq!(
            parse_js_number("0x10000000000000001"),
            18446744073709551616.0
        );
        assert_eq!(parse_js_number("0x20000000000001"), 9007199254740992.0);
        assert_eq!(parse_js_number("0x20000000000003"), 9007199254740996.0);
        // A sticky bit far beyond the kept bits breaks a tie upwards.
        assert_eq!(
            parse_js_number("0x200000000000010000000000000001"),
            parse_js_number("0x200000000000020000000000000000")
        );
    }

    #[test]
    fn javascript_to_string() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (123456.789, "123456.789"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (0.845_512_408_225_570_1, "0.8455124082255701"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (value, expected) in cases {
            assert_eq!(js_number_to_string(*value), *expected);
        }
    }

    #[test]
    // The literals are the exact binary values (quarters, eighths, sixteenths); writing
    // them out in full is the point.
    #[allow(clippy::excessive_precision)]
    fn shortest_digit_ties_go_to_the_even_digit() {
        // Each double lies exactly halfway between two shortest candidates; JavaScript
        // picks the even one, Rust's formatter alone would round up (found by comparing
        // with node on random doubles).
        let cases: &[(f64, &str)] = &[
            (1992523372208562.25, "1992523372208562.2"),
            (142702054491435.625, "142702054491435.62"),
            (-12300917236224.0625, "-12300917236224.062"),
            (598974187312242.25, "598974187312242.2"),
            // Not ties: the shortest digits are unique.
            (1992523372208562.5, "1992523372208562.5"),
            (0.5, "0.5"),
            (9007199254740993.0, "9007199254740992"),
        ];
        for (value, expected) in cases {
            assert_eq!(js_number_to_string(*value), *expected, "{value:e}");
            assert_eq!(format_number(*value), *expected, "{value:e}");
        }
    }

    #[test]
    fn coercion_to_string_rounds_to_fifteen_fractional_digits() {
        let cases: &[(f64, &str)] = &[
            (0.845_512_408_225_570_1, "0.84551240822557"),
            (-0.0, "0"),
            (1.2e-2, "0.012"),
            (0.1 + 0.2, "0.3"),
            (1e-20, "0"),
            (-1e-20, "0"),
            (1.5e-8, "1.5e-8"),
            (123456789012345678.0, "123456789012345680"),
            (1e21, "1e+21"),
            (f64::INFINITY, "Infinity"),
            // 2^-16 has exactly sixteen fractional digits and ends in 5: JavaScript's
            // toFixed rounds that tie up, where Rust's formatter would round to even.
            (1.0 / 65536.0, "0.000015258789063"),
            (3.0 / 65536.0, "0.000045776367188"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_number(*value), *expected, "format_number({value})");
        }
    }
}
