//! Deterministic Lambda zip: exactly one entry, `bootstrap`, deflated, Unix
//! mode 0755, timestamp 1980-01-01 00:00 (the DOS epoch), no extra fields.
//! Same input bytes → same zip bytes, so the zip's SHA-256 can be compared
//! with Lambda's `CodeSha256` to decide whether code changed.
//!
//! Shared by the root `build.rs` and this crate's unit tests (`#[path]`);
//! needs only `flate2` and `crc32fast`.

use std::io::Write as _;

const ENTRY_NAME: &[u8] = b"bootstrap";
/// DOS date of 1980-01-01: (year-1980) << 9 | month << 5 | day.
const DOS_DATE: u16 = 1 << 5 | 1;
const DOS_TIME: u16 = 0;
/// Regular file, rwxr-xr-x, in the high half of the external attributes.
const EXTERNAL_ATTRS: u32 = 0o100755 << 16;
/// "Version made by": 3 = Unix (so unzip and Lambda honour the mode), spec 2.0.
const MADE_BY: u16 = 3 << 8 | 20;
const NEEDED: u16 = 20;
const DEFLATE: u16 = 8;

/// Packages `binary` as a zip with one executable `bootstrap` entry.
pub fn zip_bootstrap(binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(binary)?;
    let compressed = enc.finish()?;
    let crc = crc32fast::hash(binary);
    let too_big = || std::io::Error::other("bootstrap too large for a non-zip64 archive");
    let csize = u32::try_from(compressed.len()).map_err(|_| too_big())?;
    let usize_ = u32::try_from(binary.len()).map_err(|_| too_big())?;
    let name_len = ENTRY_NAME.len() as u16;

    let mut out = Vec::with_capacity(compressed.len() + 128);
    // Local file header.
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    for v in [NEEDED, 0, DEFLATE, DOS_TIME, DOS_DATE] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, csize, usize_] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(ENTRY_NAME);
    out.extend_from_slice(&compressed);

    // Central directory.
    let cd_offset = u32::try_from(out.len()).map_err(|_| too_big())?;
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    for v in [MADE_BY, NEEDED, 0, DEFLATE, DOS_TIME, DOS_DATE] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, csize, usize_] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    // name length, extra length, comment length, disk number, internal attributes
    for v in [name_len, 0, 0, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&EXTERNAL_ATTRS.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // local header offset
    out.extend_from_slice(ENTRY_NAME);
    let cd_size = u32::try_from(out.len()).map_err(|_| too_big())? - cd_offset;

    // End of central directory.
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Ok(out)
}
