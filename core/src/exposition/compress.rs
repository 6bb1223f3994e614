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

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The fixed gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Compression level for the cached part, compressed once per refresh and key. With
/// one scraper that is once per response, so its CPU counts as much as its size. On
/// metrics text miniz's level 4 is the knee: 100 LXD containers' 553 KB body took
/// 1.7 ms for 27,850 B against 3.4 ms for 27,114 B at level 6 (0.5 ms for 36,533 B at
/// level 1); the bench's 1,000 x 61 series 21.0 ms against 39.3 ms, 0.4 % larger.
const CACHED_LEVEL: u32 = 4;

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
        let tail_deflate = deflate_final(tail);
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

/// Deflate states for request tails, kept between requests. A new one allocates and
/// zeroes about 300 KB, which cost more than compressing a daemon part (8 KB of text):
/// 145 µs against 28 µs reused, measured on the CI machine kind. At most
/// [`KEPT_TAIL_COMPRESSORS`] are kept; requests beyond that make their own.
static TAIL_COMPRESSORS: Mutex<Vec<Compress>> = Mutex::new(Vec::new());

/// Tail compressors kept: as many as requests usually finish at once on a small host.
const KEPT_TAIL_COMPRESSORS: usize = 4;

/// `data` as raw deflate blocks, the last one final (the fast level: compressed per
/// request).
fn deflate_final(data: &[u8]) -> Vec<u8> {
    let kept = TAIL_COMPRESSORS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop();
    let mut compress = kept.unwrap_or_else(|| Compress::new(Compression::fast(), false));
    compress.reset();
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let consumed = usize::try_from(compress.total_in()).unwrap_or(data.len());
        let status = compress.compress_vec(
            data.get(consumed..).unwrap_or_default(),
            &mut out,
            FlushCompress::Finish,
        );
        // Errors only report "no progress possible", which room to write resolves.
        if let Ok(Status::StreamEnd) = status {
            break;
        }
    }
    let mut kept = TAIL_COMPRESSORS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if kept.len() < KEPT_TAIL_COMPRESSORS {
        kept.push(compress);
    }
    out
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
    fn a_kept_tail_compressor_starts_clean() {
        let prefix = GzipPrefix::new(b"lxd_instances 3\n");
        let tail = b"lxd_uptime_seconds 12\nprocess_open_fds 9\n".repeat(200);
        let first = prefix.finish_with(&tail);
        // Another tail in between, on whatever compressor is kept.
        let other = prefix.finish_with(&b"x".repeat(50_000));
        assert_eq!(gunzip_single_member(&other).len(), 16 + 50_000);
        assert_eq!(prefix.finish_with(&tail), first);
        let mut expected = b"lxd_instances 3\n".to_vec();
        expected.extend_from_slice(&tail);
        assert_eq!(gunzip_single_member(&first), expected);
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
