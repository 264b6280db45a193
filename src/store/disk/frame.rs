//! The checksummed frame the journal and snapshot files are made of:
//! `[len: u32 LE][crc: u32 LE][payload]`, `crc` being CRC-32 over the length bytes and the payload.

pub(super) const FRAME_HEADER: usize = 8;

fn frame_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// Appends one frame around `payload` to `out`, or refuses a payload whose length does not
/// fit the frame's 32-bit length field (rather than write a length that reads back wrong).
pub fn frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), super::DiskError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| super::DiskError::TooLarge {
            what: "a record",
            bytes: payload.len() as u64,
        })?
        .to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// One frame read back: its payload, or why it is not one.
pub(super) enum Read<'a> {
    Frame(&'a [u8]),
    /// The bytes end before the frame does.
    Short,
    /// The checksum does not match.
    BadCrc,
}

pub(super) fn read_frame(bytes: &[u8]) -> Read<'_> {
    if bytes.len() < FRAME_HEADER {
        return Read::Short;
    }
    let len: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let n = u32::from_le_bytes(len) as usize;
    let Some(payload) = bytes.get(FRAME_HEADER..FRAME_HEADER + n) else {
        return Read::Short;
    };
    if frame_crc(len, payload) == crc {
        Read::Frame(payload)
    } else {
        Read::BadCrc
    }
}
