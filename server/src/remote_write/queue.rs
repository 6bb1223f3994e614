//! The bounded queue of compressed batches waiting for the receiver.
//!
//! While the receiver is down the daemon keeps taking snapshots; the queue keeps the
//! newest batches up to a byte limit and drops the oldest, so memory stays bounded; when
//! the receiver comes back, what is left goes out oldest first, in time order.

use std::collections::VecDeque;

/// Compressed `WriteRequest` bodies, oldest first, at most `limit` bytes in all.
#[derive(Debug)]
pub struct BatchQueue {
    batches: VecDeque<Vec<u8>>,
    bytes: u64,
    limit: u64,
    dropped: u64,
}

impl BatchQueue {
    /// An empty queue holding at most `limit` bytes.
    pub fn new(limit: u64) -> Self {
        BatchQueue {
            batches: VecDeque::new(),
            bytes: 0,
            limit,
            dropped: 0,
        }
    }

    /// Appends a batch, dropping the oldest ones (or this one, if it alone is too big)
    /// to stay within the limit; returns how many were dropped.
    pub fn push(&mut self, batch: Vec<u8>) -> u64 {
        let size = batch.len() as u64;
        if size > self.limit {
            self.dropped += 1;
            return 1;
        }
        let mut dropped = 0;
        while self.bytes + size > self.limit {
            match self.batches.pop_front() {
                Some(old) => {
                    self.bytes -= old.len() as u64;
                    dropped += 1;
                }
                None => break,
            }
        }
        self.bytes += size;
        self.batches.push_back(batch);
        self.dropped += dropped;
        dropped
    }

    /// The oldest batch.
    pub fn front(&self) -> Option<&[u8]> {
        self.batches.front().map(Vec::as_slice)
    }

    /// Removes the oldest batch (sent, or refused for good).
    pub fn pop(&mut self) {
        if let Some(old) = self.batches.pop_front() {
            self.bytes -= old.len() as u64;
        }
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Batches dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_when_full() {
        let mut q = BatchQueue::new(10);
        assert_eq!(q.push(vec![1; 4]), 0);
        assert_eq!(q.push(vec![2; 4]), 0);
        assert_eq!(q.push(vec![3; 4]), 1);
        assert_eq!(q.front(), Some(&[2u8; 4][..]));
        assert_eq!(q.bytes(), 8);
        assert_eq!(q.push(vec![4; 11]), 1, "too big alone");
        assert_eq!(q.bytes(), 8, "two batches still wait");
        q.pop();
        assert_eq!(q.front(), Some(&[3u8; 4][..]));
        q.pop();
        q.pop();
        assert_eq!(q.front(), None);
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.dropped(), 2);
    }
}
