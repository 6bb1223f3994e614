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

use miniz_oxide::deflate::core::{
    compress_to_output, create_comp_flags_from_zip_params, CompressionStrategy, CompressorOxide,
    TDEFLFlush, TDEFLStatus,
};

/// The fixed gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Compression level for the cached part, compressed once per refresh and key. With
/// one scraper that is once per response, so its CPU counts as much as its size. On
/// metrics text miniz's level 4 is the knee: 100 LXD containers' 553 KB body took
/// 1.7 ms for 27,850 B against 3.4 ms for 27,114 B at level 6 (0.5 ms for 36,533 B at
/// level 1); the bench's 1,000 x 61 series 21.0 ms against 39.3 ms, 0.4 % larger.
const CACHED_FLAGS: u32 =
    create_comp_flags_from_zip_params(4, -15, CompressionStrategy::Default as i32);

/// Compressed once per snapshot: the gzip header and the deflate blocks of the instance
/// part, not yet final, shared by every response in the window.
#[derive(Clone, Debug)]
pub struct GzipPrefix {
    head: Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

impl GzipPrefix {
    /// Compresses `data` into non-final deflate blocks ending on a sync flush. Empty
    /// data (a `?project=` that selects nothing) needs no blocks and no compressor.
    pub fn new(data: &[u8]) -> Self {
        let mut out = Vec::with_capacity(GZIP_HEADER.len() + data.len() / 5 + 64);
        out.extend_from_slice(&GZIP_HEADER);
        if !data.is_empty() {
            let mut compressor = Box::new(CompressorOxide::new(CACHED_FLAGS));
            deflate(&mut compressor, data, TDEFLFlush::Sync, &mut out);
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
        self.parts_with(tail, deflate_final(tail))
    }

    /// The parts, given `tail` already deflated into final blocks.
    fn parts_with(&self, tail: &[u8], tail_blocks: Vec<u8>) -> [Bytes; 2] {
        let mut crc = self.crc.clone();
        crc.update(tail);
        let len = self.len + tail.len() as u64;

        let mut rest = tail_blocks;
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
static TAIL_COMPRESSORS: Mutex<Vec<Box<CompressorOxide>>> = Mutex::new(Vec::new());

/// Tail compressors kept: as many as requests usually finish at once on a small host.
const KEPT_TAIL_COMPRESSORS: usize = 4;

/// The tail's deflate settings: raw deflate, level 1, and the fixed Huffman codes of
/// RFC 1951. Building a block's own codes took half the time of compressing the 8 KB
/// daemon part (28 µs with its own codes, 14.5 µs with the fixed ones, for 1,850 B
/// against 1,585 B). flate2 has no setting for it, so both parts use miniz_oxide,
/// flate2's own deflate, directly.
const TAIL_FLAGS: u32 =
    create_comp_flags_from_zip_params(1, -15, CompressionStrategy::Fixed as i32);

/// `data` as raw deflate blocks, the last one final.
fn deflate_final(data: &[u8]) -> Vec<u8> {
    let kept = TAIL_COMPRESSORS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop();
    let mut compressor = kept.unwrap_or_else(|| Box::new(CompressorOxide::new(TAIL_FLAGS)));
    compressor.reset();
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    if deflate(&mut compressor, data, TDEFLFlush::Finish, &mut out) {
        let mut kept = TAIL_COMPRESSORS
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if kept.len() < KEPT_TAIL_COMPRESSORS {
            kept.push(compressor);
        }
    }
    out
}

/// Appends `data` to `out` as raw deflate blocks ending as `flush` says (`Sync`: on a
/// byte boundary, more to follow; `Finish`: the last block final). Returns whether the
/// compressor did it. The output goes to a `Vec`, which always takes it, so the only
/// other outcome is a compressor in a bad state: `data` is then appended as stored
/// blocks, ending the same way, and the compressor must not be used again.
fn deflate(
    compressor: &mut CompressorOxide,
    data: &[u8],
    flush: TDEFLFlush,
    out: &mut Vec<u8>,
) -> bool {
    let start = out.len();
    let (status, _) = compress_to_output(compressor, data, flush, |block| {
        out.extend_from_slice(block);
        true
    });
    let expected = match flush {
        TDEFLFlush::Finish => TDEFLStatus::Done,
        _ => TDEFLStatus::Okay,
    };
    if status == expected {
        return true;
    }
    tracing::error!(
        ?status,
        "deflating a response part failed; sent uncompressed"
    );
    out.truncate(start);
    stored_blocks(data, flush == TDEFLFlush::Finish, out);
    false
}

/// Appends `data` as stored (uncompressed) deflate blocks (RFC 1951, 3.2.4), the last
/// one final if `last`: what a part is sent as if its compressor fails. The stream is
/// byte-aligned here (after the header or a sync flush), as a stored block needs.
fn stored_blocks(data: &[u8], last: bool, out: &mut Vec<u8>) {
    const MAX_STORED: usize = u16::MAX as usize;
    out.reserve(data.len() + (data.len() / MAX_STORED + 1) * 5);
    let mut rest = data;
    loop {
        let (block, after) = rest.split_at(rest.len().min(MAX_STORED));
        let len = block.len() as u16;
        out.push(u8::from(last && after.is_empty())); // BFINAL, BTYPE 00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
        if after.is_empty() {
            return;
        }
        rest = after;
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
    fn a_kept_tail_compressor_starts_clean() {
        let prefix = GzipPrefix::new(b"lxd_instances 3\n");
        let tail = b"lxd_uptime_seconds 12\nprocess_open_fds 9\n".repeat(200);
        let first = prefix.finish_with(&tail);
        // Compressed, not sent as stored blocks (what a failing compressor falls back to).
        assert!(first.len() < tail.len() / 4, "{} bytes", first.len());
        // Another tail in between, on whatever compressor is kept.
        let other = prefix.finish_with(&b"x".repeat(50_000));
        assert_eq!(gunzip_single_member(&other).len(), 16 + 50_000);
        assert_eq!(prefix.finish_with(&tail), first);
        let mut expected = b"lxd_instances 3\n".to_vec();
        expected.extend_from_slice(&tail);
        assert_eq!(gunzip_single_member(&first), expected);
    }

    /// What a part is sent as when its compressor fails: stored blocks, non-final for
    /// the prefix and final for the tail, still one valid gzip stream.
    #[test]
    fn stored_parts_make_the_same_stream() {
        let prefix_data = b"lxd_instances 3\n".repeat(5000);
        let compressed = GzipPrefix::new(&prefix_data);
        let mut head = GZIP_HEADER.to_vec();
        stored_blocks(&prefix_data, false, &mut head);
        let stored = GzipPrefix {
            head: Bytes::from(head),
            ..compressed.clone()
        };
        for tail in [
            Vec::new(),
            b"process_open_fds 9\n".to_vec(),
            vec![7u8; 200_000],
        ] {
            let mut tail_blocks = Vec::new();
            stored_blocks(&tail, true, &mut tail_blocks);
            let mut expected = prefix_data.clone();
            expected.extend_from_slice(&tail);
            for prefix in [&compressed, &stored] {
                let body = prefix.parts_with(&tail, tail_blocks.clone()).concat();
                assert_eq!(gunzip_single_member(&body), expected);
            }
            assert_eq!(gunzip_single_member(&stored.finish_with(&tail)), expected);
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
