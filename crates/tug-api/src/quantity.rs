//! Resource quantities (`500m`, `1.5Gi`, `2e3`) as numbers, the way
//! upstream's `resource.Quantity` reads them.

/// A quantity in thousandths of its unit (`500m` -> 500, `2` -> 2000,
/// `1Ki` -> 1,024,000), rounded up as upstream's `MilliValue` rounds.
/// `None` for what is not a quantity.
pub fn milli(text: &str) -> Option<i128> {
    let text = text.trim();
    let (negative, text) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    // value = digits / 10^fraction_digits * base^exponent
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    let mut decimal_exponent = -(fraction.len() as i32);
    let mut binary_multiplier: i128 = 1;
    match suffix {
        "" => {}
        "n" => decimal_exponent -= 9,
        "u" => decimal_exponent -= 6,
        "m" => decimal_exponent -= 3,
        "k" => decimal_exponent += 3,
        "M" => decimal_exponent += 6,
        "G" => decimal_exponent += 9,
        "T" => decimal_exponent += 12,
        "P" => decimal_exponent += 15,
        "E" => decimal_exponent += 18,
        "Ki" => binary_multiplier = 1 << 10,
        "Mi" => binary_multiplier = 1 << 20,
        "Gi" => binary_multiplier = 1 << 30,
        "Ti" => binary_multiplier = 1 << 40,
        "Pi" => binary_multiplier = 1 << 50,
        "Ei" => binary_multiplier = 1 << 60,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().ok()?;
            if power.abs() > 30 {
                return None;
            }
            decimal_exponent += power;
        }
        _ => return None,
    }
    // Thousandths.
    decimal_exponent += 3;
    let mut value = digits.checked_mul(binary_multiplier)?;
    if decimal_exponent >= 0 {
        value = value.checked_mul(10i128.checked_pow(decimal_exponent as u32)?)?;
    } else {
        let divisor = 10i128.checked_pow((-decimal_exponent) as u32)?;
        // Digits are never negative: the sign is applied last.
        value = (value + divisor - 1) / divisor;
    }
    Some(if negative { -value } else { value })
}

/// A quantity in whole units, rounded up (`1500m` -> 2).
pub fn value(text: &str) -> Option<i128> {
    milli(text).map(|m| m.div_euclid(1000) + i128::from(m.rem_euclid(1000) != 0))
}

/// Whether a quantity is written with a binary suffix (`Ki`, `Mi`, ...),
/// the format its sums keep.
pub fn is_binary(text: &str) -> bool {
    text.trim_end().ends_with('i')
}

/// A quantity of `milli` thousandths in upstream's canonical form: whole
/// numbers with the largest suffix that keeps them whole (binary ones if
/// `binary`, `Ki` and up only from 1024), fractions in `m`.
pub fn format(milli: i128, binary: bool) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let whole = milli / 1000;
    if whole == 0 {
        return "0".into();
    }
    let (base, suffixes): (i128, &[&str]) = if binary && whole.abs() >= 1024 {
        (1024, &["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
    } else {
        (1000, &["k", "M", "G", "T", "P", "E"])
    };
    let (mut n, mut suffix) = (whole, "");
    for next in suffixes {
        if n % base != 0 {
            break;
        }
        n /= base;
        suffix = next;
    }
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_upstream_reads_them() {
        for (text, expected) in [
            ("500m", Some(500)),
            ("2", Some(2000)),
            ("0.5", Some(500)),
            ("1.5Gi", Some(1_610_612_736_000)),
            ("1Ki", Some(1_024_000)),
            ("128974848", Some(128_974_848_000)),
            ("129e6", Some(129_000_000_000)),
            ("129M", Some(129_000_000_000)),
            ("100n", Some(1)),
            ("1u", Some(1)),
            ("-1", Some(-1000)),
            (".5", Some(500)),
            ("", None),
            ("abc", None),
            ("1.2.3", None),
            ("5X", None),
            ("1e99", None),
        ] {
            assert_eq!(milli(text), expected, "{text}");
        }
        assert_eq!(value("1500m"), Some(2));
        assert_eq!(value("256Gi"), Some(274_877_906_944));
    }

    #[test]
    fn quantities_print_in_canonical_form() {
        for (text, expected) in [
            ("500m", "500m"),
            ("1500m", "1500m"),
            ("2000m", "2"),
            ("1", "1"),
            ("1000", "1k"),
            ("1.5Gi", "1536Mi"),
            ("2Gi", "2Gi"),
            ("1024Mi", "1Gi"),
            ("1000Mi", "1000Mi"),
            ("100", "100"),
            ("512", "512"),
            ("0", "0"),
        ] {
            let milli = milli(text).unwrap();
            assert_eq!(format(milli, is_binary(text)), expected, "{text}");
        }
    }
}
