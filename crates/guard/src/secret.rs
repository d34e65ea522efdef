//! [`Secret`]: a value that must not be printed. `Debug` and `Display` show `***`; the memory
//! is wiped on drop. Read it with [`Secret::expose`], and only where it is needed.

use serde::{Deserialize, Deserializer};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// A secret value (key, revealed PII) that never shows in logs or debug output.
#[derive(Clone)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    /// Wrap a value.
    pub fn new(value: T) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value itself. Keep the borrow short and never log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<'de, T: Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Conf {
            key: Secret<String>,
        }
        let c: Conf = serde_json::from_str(r#"{"key":"abc"}"#).unwrap();
        assert!(!format!("{c:?}").contains("abc"));
    }
}
