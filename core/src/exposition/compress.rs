//! gzip for response bodies, built so the large part is compressed once per refresh.
//!
//! A metrics response is a large instance part (the same for every request in the cache
//! window) followed by a small daemon part (new for each request). Compressing the whole
//! body per request would waste the cache; sending two gzip members would break clients
//! that stop after the first one (curl does). Instead, as pigz does, the instance part is
//! compressed once into raw deflate blocks ending on a byte-aligned sync flush
//! ([`GzipPrefix`]); each request compresses only its tail as the final deflate block and
//! wraps both in one gzip header and trailer, combining the two CRC-32s. The result is a
//! single ordinary gzip stream.

use std::io::Write;

use bytes::Bytes;

use flate2::write::DeflateEncoder;
use flate2::{Compress, Compression, FlushCompress};

/// The fixed gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Compression level for the cached part: compressed once, served many times.
const CACHED_LEVEL: u32 = 6;

/// Compressed once per snapshot: the gzip header and the deflate blocks of the instance
/// part, not yet final, shared by every response in the window.
#[derive(Clone, Debug)]
pub struct GzipPrefix {
    head: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

impl GzipPrefix {
    /// Compresses `data` into non-final deflate blocks ending on a sync flush.
    pub fn new(data: &[u8]) -> Self {
        let mut compress = Compress::new(Compression::new(CACHED_LEVEL), false);
        let mut out = Vec::with_capacity(data.len() / 5 + 64);
        out.extend_from_slice(&GZIP_HEADER);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(4096));
            }
            let before = compress.total_in();
            // Errors only report "no progress possible", which the checks below handle.
            let _ = compress.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync);
            consumed += usize::try_from(compress.total_in() - before).unwrap_or(0);
            // Done when all input is in and the flush left spare room (nothing pending).
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        GzipPrefix {
            head: Bytes::from(out),
            crc,
            len: data.len() as u64,
        }
    }

    /// Compressed size of the prefix.
    pub fn compressed_len(&self) -> usize {
        self.head.len() - GZIP_HEADER.len()
    }

    /// The same prefix with its header and blocks replaced by `f(blocks)` (the same
    /// bytes, held differently).
    pub(crate) fn map_head(self, f: impl FnOnce(Bytes) -> Bytes) -> Self {
        GzipPrefix {
            head: f(self.head),
            ..self
        }
    }

    /// One complete gzip stream holding the prefix's data followed by `tail`, as two
    /// parts to send one after the other: the shared header and cached blocks (not
    /// copied), then the tail's final block and the trailer.
    pub fn finish_parts(&self, tail: &[u8]) -> [Bytes; 2] {
        let mut tail_deflate =
            DeflateEncoder::new(Vec::with_capacity(tail.len() / 3 + 64), Compression::fast());
        let tail_deflate = tail_deflate
            .write_all(tail)
            .and_then(|()| tail_deflate.finish())
            .expect("deflate into a Vec does not fail");
        let mut crc = self.crc.clone();
        crc.update(tail);
        let len = self.len + tail.len() as u64;

        let mut rest = tail_deflate;
        rest.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE is the length modulo 2^32 (RFC 1952).
        rest.extend_from_slice(&(len as u32).to_le_bytes());
        [self.head.clone(), Bytes::from(rest)]
    }

    /// The same stream as [`finish_parts`](Self::finish_parts), in one buffer.
    pub fn finish_with(&self, tail: &[u8]) -> Vec<u8> {
        self.finish_parts(tail).concat()
    }
}

/// Compresses `data` into one gzip stream (for bodies with no cached part).
#[cfg(test)]
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    GzipPrefix::new(&[]).finish_with(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn gunzip_single_member(body: &[u8]) -> Vec<u8> {
        // GzDecoder (not MultiGzDecoder) reads one member, as curl does.
        let mut out = Vec::new();
        let mut decoder = GzDecoder::new(body);
        decoder.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn prefix_and_tail_make_one_gzip_member() {
        let prefix_data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("lxd_cpu_seconds_total{{cpu=\"{}\"}} {i}\n", i % 7).into_bytes())
            .collect();
        let prefix = GzipPrefix::new(&prefix_data);
        assert!(prefix.compressed_len() < prefix_data.len() / 4);
        for tail in [&b""[..], b"lxd_uptime_seconds 12\n# EOF\n"] {
            let body = prefix.finish_with(tail);
            let mut expected = prefix_data.clone();
            expected.extend_from_slice(tail);
            assert_eq!(gunzip_single_member(&body), expected);
        }
    }

    #[test]
    fn empty_prefix_and_plain_gzip() {
        assert_eq!(gunzip_single_member(&gzip(b"hello\n")), b"hello\n");
        assert_eq!(gunzip_single_member(&gzip(b"")), b"");
    }

    #[test]
    fn incompressible_data_round_trips() {
        let mut state = 0x1234_5678u32;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let body = GzipPrefix::new(&noise).finish_with(b"tail");
        let mut expected = noise.clone();
        expected.extend_from_slice(b"tail");
        assert_eq!(gunzip_single_member(&body), expected);
    }
}
