//! Terminal and site identifiers.
//!
//! Identifiers become MQTT topic levels and parts of upstream press ids, so
//! they are restricted to characters that are safe in both: ASCII letters,
//! digits, `-` and `_`, 1 to [`MAX_ID_LEN`] long. `gateway` is reserved (it
//! names the gateway's own status topic next to terminal topics).

/// Longest terminal or site id.
pub const MAX_ID_LEN: usize = 32;

/// Why an identifier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    BadCharacter,
    Reserved,
}

impl IdError {
    pub const fn describe(self) -> &'static str {
        match self {
            IdError::Empty => "identifier is empty",
            IdError::TooLong => "identifier is longer than 32 characters",
            IdError::BadCharacter => "identifier may only contain A-Z, a-z, 0-9, '-' and '_'",
            IdError::Reserved => "identifier 'gateway' is reserved",
        }
    }
}

impl core::fmt::Display for IdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Checks a terminal or site id.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(IdError::BadCharacter);
    }
    if id == "gateway" {
        return Err(IdError::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids_and_refuses_topic_breakers() {
        assert_eq!(validate_id("north-stand_07"), Ok(()));
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id("a/b"), Err(IdError::BadCharacter));
        assert_eq!(validate_id("a+"), Err(IdError::BadCharacter));
        assert_eq!(validate_id("#"), Err(IdError::BadCharacter));
        assert_eq!(validate_id("a:b"), Err(IdError::BadCharacter));
        assert_eq!(validate_id("gateway"), Err(IdError::Reserved));
        assert_eq!(validate_id(&"x".repeat(33)), Err(IdError::TooLong));
    }
}
