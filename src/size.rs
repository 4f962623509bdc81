//! Sizes written on the command line: `512`, `64kB`, `10MB`, `1GB`, `2 GiB`.
//!
//! Units are powers of 1024, as PostgreSQL reads them in its configuration
//! (`kB` = 1024 bytes): `B`, `kB`/`KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`,
//! `TB`/`TiB`, in any case. A number without a unit is bytes.

/// Why a text is not a size; the message names the text and the forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a size: {reason}; write a number and a unit, such as `64kB`, `10MB`, `1GB` (units B, kB, MB, GB, TB, powers of 1024)")]
pub struct SizeError {
    pub text: String,
    pub reason: &'static str,
}

pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let error = |reason| SizeError {
        text: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(error("it does not start with a number"));
    }
    let number: u64 = trimmed[..digits]
        .parse()
        .map_err(|_| error("the number is too large"))?;
    let unit = trimmed[digits..].trim();
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(error("the unit is unknown")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| error("it is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64kB").unwrap(), 65_536);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1gb").unwrap(), 1 << 30);
        for bad in ["", "MB", "1.5MB", "10 parsecs", "-1", "99999999999TB"] {
            let error = parse_size(bad).unwrap_err();
            assert!(error.to_string().contains("such as `64kB`"), "{error}");
        }
    }
}
