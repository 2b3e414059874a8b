//! Handler logic of the pipeline's three Lambda functions. The binaries in
//! `src/bin` only wire these to `lambda_runtime`; tests call the handlers
//! directly with SDK clients pointed at an emulator.

pub mod dead_letter;
pub mod layout;
pub mod processor;
pub mod receiver;
pub mod signature;
pub mod util;

/// JSON logs (the functions are deployed with the JSON log format);
/// `AWS_LAMBDA_LOG_LEVEL`/`RUST_LOG` select the level.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

// The packaging code lives with the build script; tested here because this
// crate may have dev-dependencies.
#[cfg(test)]
#[path = "../build-support/zip.rs"]
mod zip_support;

#[cfg(test)]
mod zip_tests {
    use std::io::Read as _;

    #[test]
    fn zip_is_deterministic_and_holds_one_executable_bootstrap() {
        let binary: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = super::zip_support::zip_bootstrap(&binary).unwrap();
        let b = super::zip_support::zip_bootstrap(&binary).unwrap();
        assert_eq!(a, b);

        // Parse back by hand: local header fields, data, central directory.
        let u16_at = |o: usize| u16::from_le_bytes([a[o], a[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
        assert_eq!(u32_at(0), 0x0403_4b50);
        assert_eq!(u16_at(10), 0, "DOS time 00:00");
        assert_eq!(u16_at(12), 0x21, "DOS date 1980-01-01");
        let csize = u32_at(18) as usize;
        assert_eq!(u32_at(22) as usize, binary.len());
        assert_eq!(&a[30..39], b"bootstrap");
        let mut inflated = Vec::new();
        flate2::read::DeflateDecoder::new(&a[39..39 + csize])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, binary);
        assert_eq!(u32_at(14), crc32fast::hash(&binary));
        let cd = 39 + csize;
        assert_eq!(u32_at(cd), 0x0201_4b50);
        assert_eq!(u32_at(cd + 38) >> 16, 0o100755, "mode 0755 regular file");
        let eocd = a.len() - 22;
        assert_eq!(u32_at(eocd), 0x0605_4b50);
        assert_eq!(u16_at(eocd + 10), 1, "exactly one entry");
    }
}
