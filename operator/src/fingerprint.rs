//! In-memory fingerprints of values the operator only needs to compare, not read: keeping a
//! `u64` instead of a copy is what keeps per-node and per-pod lists out of the operator's memory.

use serde::Serialize;
use std::hash::{DefaultHasher, Hasher};

/// A fingerprint of `value`'s JSON form. Only compared within one process, so the hasher's
/// per-process keys do not matter; a collision (2^-64) would only skip one status write, which
/// the next change of that status repairs.
pub fn of(value: &impl Serialize) -> u64 {
    struct Writer(DefaultHasher);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut writer = Writer(DefaultHasher::new());
    // Streamed into the hasher: no JSON buffer is allocated.
    serde_json::to_writer(&mut writer, value).expect("operator types always serialize");
    writer.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_agree_and_different_values_differ() {
        assert_eq!(of(&vec!["a", "b"]), of(&vec!["a".to_string(), "b".to_string()]));
        assert_ne!(of(&vec!["a", "b"]), of(&vec!["b", "a"]));
        assert_ne!(of(&Some(1)), of(&None::<i32>));
    }
}
