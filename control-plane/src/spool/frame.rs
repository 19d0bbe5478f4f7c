//! The spool's bytes: a header, then frames, each checked on its own.
//!
//! ```text
//! file    = MAGIC frame*
//! frame   = len:u32le crc:u32le body          len = body's length, 1..=MAX_FRAME_BYTES
//! body    = 0x01 count:u32le entry*           a batch, appended whole or not at all
//!         | 0x02 through:u64le                entries with seq <= through are drained
//!         | 0x03 len:u16le database           the database the entries belong to (the
//!                                             last one counts; written right after MAGIC)
//! entry   = seq:u64le id_len:u16le id data_len:u32le data
//! crc     = CRC-32 (IEEE) of body
//! ```
//!
//! Decoding is total: any bytes give a frame, "more bytes needed / not a frame here"
//! ([`Decoded::Torn`]), never a panic.

/// The first bytes of every spool file (version 1).
pub const MAGIC: &[u8; 8] = b"LGSPOOL1";

/// The largest frame body; a batch that would be larger is refused before it is written.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The frame header: length and checksum.
pub const FRAME_HEADER: usize = 8;

const BATCH: u8 = 1;
const DRAINED: u8 = 2;
const IDENTITY: u8 = 3;

/// One spooled record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its number in the spool, increasing in append order.
    pub seq: u64,
    /// Its identity (the request id): a spool holds an id once.
    pub id: String,
    /// The record itself (the control plane writes a spend record's JSON).
    pub data: Vec<u8>,
}

/// A frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Batch(Vec<Entry>),
    Drained {
        through: u64,
    },
    /// The identity of the database the spool's entries belong to.
    Identity {
        database: String,
    },
}

/// What the bytes at an offset are.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checked frame and the bytes it took.
    Frame(Frame, usize),
    /// Not a whole, checked frame: too short, a bad length, a bad checksum, or a body that
    /// does not decode.
    Torn,
}

/// The framed bytes of `frame`.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut body = Vec::new();
    match frame {
        Frame::Batch(entries) => {
            body.push(BATCH);
            body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for entry in entries {
                body.extend_from_slice(&entry.seq.to_le_bytes());
                body.extend_from_slice(&(entry.id.len() as u16).to_le_bytes());
                body.extend_from_slice(entry.id.as_bytes());
                body.extend_from_slice(&(entry.data.len() as u32).to_le_bytes());
                body.extend_from_slice(&entry.data);
            }
        }
        Frame::Drained { through } => {
            body.push(DRAINED);
            body.extend_from_slice(&through.to_le_bytes());
        }
        Frame::Identity { database } => {
            body.push(IDENTITY);
            body.extend_from_slice(&(database.len() as u16).to_le_bytes());
            body.extend_from_slice(database.as_bytes());
        }
    }
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The framed size of an entry inside a batch body.
pub fn entry_bytes(id: &str, data: &[u8]) -> usize {
    8 + 2 + id.len() + 4 + data.len()
}

/// The framed size of a batch of entries of `entries_bytes` together.
pub fn batch_bytes(entries_bytes: usize) -> usize {
    FRAME_HEADER + 1 + 4 + entries_bytes
}

/// Reads the frame at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut header = Reader(bytes);
    let (Some(len), Some(crc)) = (header.u32(), header.u32()) else {
        return Decoded::Torn;
    };
    let len = len as usize;
    if len == 0 || len > MAX_FRAME_BYTES {
        return Decoded::Torn;
    }
    let Some(body) = header.take(len) else {
        return Decoded::Torn;
    };
    if crc32fast::hash(body) != crc {
        return Decoded::Torn;
    }
    match body_frame(body) {
        Some(frame) => Decoded::Frame(frame, FRAME_HEADER + len),
        None => Decoded::Torn,
    }
}

fn body_frame(body: &[u8]) -> Option<Frame> {
    let mut r = Reader(body);
    let frame = match r.u8()? {
        BATCH => {
            let count = r.u32()?;
            let mut entries = Vec::new();
            for _ in 0..count {
                let seq = r.u64()?;
                let id_len = r.u16()? as usize;
                let id = std::str::from_utf8(r.take(id_len)?).ok()?.to_string();
                let data_len = r.u32()? as usize;
                let data = r.take(data_len)?.to_vec();
                entries.push(Entry { seq, id, data });
            }
            Frame::Batch(entries)
        }
        DRAINED => Frame::Drained { through: r.u64()? },
        IDENTITY => {
            let len = r.u16()? as usize;
            let database = std::str::from_utf8(r.take(len)?).ok()?.to_string();
            Frame::Identity { database }
        }
        _ => return None,
    };
    r.0.is_empty().then_some(frame)
}

/// Little-endian reads that fail instead of running past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}
