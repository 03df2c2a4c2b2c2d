//! The `:authority` shim: rewrites each request's `:authority` to `localhost` on an accepted
//! Workload API connection, so that gRPC C-core and grpc-java clients reach the stock h2 server.
//!
//! Those clients send the socket path as the authority of a Unix-socket channel: gRPC C-core
//! percent-encoded (`%2Frun%2Fsigil%2Fapi.sock`), grpc-java 1.85 as it is
//! (`/run/sigil/api.sock`, seen in the Java interop test). The `http` crate refuses both, and
//! h2 answers every such
//! request with RST_STREAM PROTOCOL_ERROR (hyperium/h2 PR 487 has been open for years). The
//! shim sits between the socket and the HTTP/2 server, in the same task and without a pipe:
//! client-to-server bytes are parsed into frames, every request header block is HPACK-decoded
//! with a decoder that mirrors the client's encoder, and re-encoded with `:authority` replaced.
//! Every other frame, and the whole server-to-client direction, passes through unchanged.
//!
//! The re-encoded blocks never insert into the HPACK dynamic table (static-table references and
//! literals without indexing, or never indexed where the client said so), so h2's decoder table
//! stays empty and its size never matters. The decoder is our own (`hpack`), written from
//! RFC 7541 and checked against `loona-hpack` in the tests.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod hpack;

/// The largest header block accepted from a client, and the largest re-encoded one sent on,
/// in bytes (RFC 9113 §4.3 lets a receiver bound what it buffers).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// What the shim refuses. It reaches the HTTP/2 server as the source of an
/// [`io::ErrorKind::InvalidData`] error, which makes the server drop the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The connection did not open with the HTTP/2 client preface (RFC 9113 §3.4).
    #[error("the client did not send the HTTP/2 connection preface")]
    NotHttp2,
    /// A header block, as sent or as re-encoded, is over [`MAX_HEADER_BLOCK`].
    #[error("header block of stream {stream} is over {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge {
        /// The stream the block belongs to.
        stream: u32,
    },
    /// A HEADERS frame on stream 0, or one whose padding or priority fields do not fit it.
    #[error("malformed HEADERS frame on stream {stream}")]
    MalformedHeaders {
        /// The stream named in the frame header.
        stream: u32,
    },
    /// A header block was not continued by a CONTINUATION frame of the same stream
    /// (RFC 9113 §6.10), or a CONTINUATION frame came without an open header block.
    #[error("CONTINUATION frame out of sequence on stream {stream}")]
    ContinuationOutOfSequence {
        /// The stream named in the offending frame header.
        stream: u32,
    },
    /// The client's header block is not valid HPACK, or it refers to a table entry or a table
    /// size the decoder does not have (RFC 7541).
    #[error("malformed HPACK header block on stream {stream}: {reason}")]
    Hpack {
        /// The stream the block belongs to.
        stream: u32,
        /// What the HPACK decoder found.
        reason: HpackError,
    },
    /// The connection ended in the middle of a frame.
    #[error("the client closed the connection in the middle of a frame")]
    TruncatedFrame,
    /// An earlier read failed; the connection is unusable.
    #[error("the connection already failed")]
    Failed,
}

/// Why a client's header block is not valid HPACK (RFC 7541).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
    /// The block ends inside a field.
    #[error("the block ends inside a field")]
    Truncated,
    /// An integer over 2^24, more than any header block needs.
    #[error("an integer is over 2^24")]
    IntegerTooLarge,
    /// An index that is neither in the static table nor in the dynamic table.
    #[error("index {index} is in neither the static nor the dynamic table")]
    BadIndex {
        /// The index the block refers to.
        index: usize,
    },
    /// A Huffman-coded string with the EOS symbol in it or invalid padding (RFC 7541 §5.2).
    #[error("invalid Huffman-coded string")]
    Huffman,
    /// A dynamic table size update after the first field of a block (RFC 7541 §4.2).
    #[error("dynamic table size update after a field")]
    MisplacedSizeUpdate,
    /// A dynamic table size update over what the server advertised (RFC 7541 §6.3).
    #[error("dynamic table size update to {size} over the limit of {limit}")]
    TableSizeOverLimit {
        /// The size asked for.
        size: usize,
        /// SETTINGS_HEADER_TABLE_SIZE as the server advertised it.
        limit: usize,
    },
}

impl From<AuthorityError> for io::Error {
    fn from(error: AuthorityError) -> Self {
        let kind = match error {
            AuthorityError::TruncatedFrame => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        Self::new(kind, error)
    }
}

/// The server side of one HTTP/2 connection, with every request's `:authority` rewritten
/// to `localhost` before the HTTP/2 server reads it.
pub struct AuthorityRewrite<S> {
    inner: S,
    reader: Rewriter,
    settings: SettingsWatch,
}

impl<S> AuthorityRewrite<S> {
    /// Wraps the server side of a freshly accepted connection (nothing read from it yet).
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reader: Rewriter::new(),
            settings: SettingsWatch::new(),
        }
    }

    /// The wrapped connection, e.g. to read the peer's credentials.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for AuthorityRewrite<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityRewrite")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = ready!(this.reader.poll_read(
            &mut this.inner,
            this.settings.header_table_size,
            cx,
            buf
        ));
        if let Err(error) = &result {
            tracing::debug!(%error, "workload API connection refused by the :authority shim");
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.settings.observe(&buf[..n.min(buf.len())]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for slice in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(slice.len());
            this.settings.observe(&slice[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_CONTINUATION: u8 = 0x9;

const FLAG_ACK: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The size of the stream dependency and weight fields of a HEADERS frame with PRIORITY.
const PRIORITY_LEN: usize = 5;

/// The frame size every HTTP/2 peer must accept whatever it advertised (RFC 9113 §4.2), so
/// re-split blocks never depend on which SETTINGS the server has seen acknowledged.
const OUT_FRAME_SIZE: usize = 16_384;

/// SETTINGS_HEADER_TABLE_SIZE before the server says otherwise (RFC 9113 §6.5.2).
const DEFAULT_HEADER_TABLE_SIZE: usize = 4_096;
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// How much is read from the socket at a time when frames are being parsed.
const READ_CHUNK: usize = 16 * 1024;

const AUTHORITY: &[u8] = b":authority";
const LOCALHOST: &[u8] = b"localhost";

/// The client-to-server direction: a frame parser that re-encodes header blocks.
struct Rewriter {
    state: ReadState,
    /// Bytes read from the socket but not yet handed on: `input[start..end]`. The whole
    /// vector is initialised once, so reads into it need no unsafe code.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Frames ready for the server: `output[out_pos..]`.
    output: Vec<u8>,
    out_pos: usize,
    /// The header block being reassembled from HEADERS and CONTINUATION fragments.
    block: Vec<u8>,
    /// The HEADERS frame whose block is being reassembled, once its first fragment is in.
    open: Option<OpenBlock>,
    /// Mirrors the client's HPACK encoder for the whole connection.
    decoder: hpack::Decoder,
    /// Scratch space for one re-encoded block.
    encoded: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum ReadState {
    Preface,
    FrameHeader,
    /// Inside a frame that passes through unchanged: this many payload bytes are left.
    Forward(usize),
    /// Waiting for the whole payload of a HEADERS or CONTINUATION frame.
    HeaderFrame(FrameHeader),
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

#[derive(Debug, Clone, Copy)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
}

/// What one parsing step achieved.
enum Step {
    /// Something changed; look again.
    Progress,
    /// At least this many bytes must be buffered before parsing can go on.
    Need(usize),
}

impl Rewriter {
    fn new() -> Self {
        Self {
            state: ReadState::Preface,
            input: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            output: Vec::new(),
            out_pos: 0,
            block: Vec::new(),
            open: None,
            decoder: hpack::Decoder::new(DEFAULT_HEADER_TABLE_SIZE),
            encoded: Vec::new(),
        }
    }

    fn poll_read<S: AsyncRead + Unpin>(
        &mut self,
        inner: &mut S,
        header_table_size: usize,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.out_pos < self.output.len() {
                let pending = &self.output[self.out_pos..];
                let n = pending.len().min(buf.remaining());
                buf.put_slice(&pending[..n]);
                self.out_pos += n;
                if self.out_pos == self.output.len() {
                    self.output.clear();
                    self.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match self.state {
                ReadState::Failed => return Poll::Ready(Err(AuthorityError::Failed.into())),
                ReadState::Forward(left) if left > 0 => {
                    return self.poll_forward(inner, left, cx, buf);
                }
                _ => {}
            }
            let need = match self.step(header_table_size) {
                Ok(Step::Progress) => continue,
                Ok(Step::Need(need)) => need,
                Err(error) => {
                    self.state = ReadState::Failed;
                    return Poll::Ready(Err(error.into()));
                }
            };
            if ready!(self.poll_fill(inner, need, cx))? == 0 {
                let at_boundary = self.start == self.end
                    && self.open.is_none()
                    && matches!(self.state, ReadState::FrameHeader | ReadState::Preface);
                if at_boundary {
                    return Poll::Ready(Ok(()));
                }
                self.state = ReadState::Failed;
                return Poll::Ready(Err(AuthorityError::TruncatedFrame.into()));
            }
        }
    }

    /// Hands on up to `left` bytes of a frame that passes through: from the buffer when it
    /// holds some, otherwise read by the socket straight into the caller's buffer, so a DATA
    /// payload is copied at most once.
    fn poll_forward<S: AsyncRead + Unpin>(
        &mut self,
        inner: &mut S,
        left: usize,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = if self.start < self.end {
            let n = left.min(self.end - self.start).min(buf.remaining());
            buf.put_slice(&self.input[self.start..self.start + n]);
            self.start += n;
            n
        } else {
            let want = left.min(buf.remaining());
            let n = {
                let mut direct = ReadBuf::new(buf.initialize_unfilled_to(want));
                ready!(Pin::new(inner).poll_read(cx, &mut direct))?;
                direct.filled().len()
            };
            if n == 0 && want > 0 {
                self.state = ReadState::Failed;
                return Poll::Ready(Err(AuthorityError::TruncatedFrame.into()));
            }
            buf.advance(n);
            n
        };
        self.state = if n == left {
            ReadState::FrameHeader
        } else {
            ReadState::Forward(left - n)
        };
        Poll::Ready(Ok(()))
    }

    /// Reads more from the socket until `need` bytes are buffered or one read returns.
    /// Returns how many bytes that read brought (0 at end of stream).
    fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        inner: &mut S,
        need: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.input.len() - self.start < need || self.end == self.input.len() {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.input.len() < need {
            self.input.resize(need, 0);
        }
        let mut space = ReadBuf::new(&mut self.input[self.end..]);
        ready!(Pin::new(inner).poll_read(cx, &mut space))?;
        let n = space.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Parses what is buffered, as far as one preface, frame header or header frame.
    fn step(&mut self, header_table_size: usize) -> Result<Step, AuthorityError> {
        let available = self.end - self.start;
        match self.state {
            ReadState::Preface => {
                let seen = available.min(PREFACE.len());
                if self.input[self.start..self.start + seen] != PREFACE[..seen] {
                    return Err(AuthorityError::NotHttp2);
                }
                if seen < PREFACE.len() {
                    return Ok(Step::Need(PREFACE.len()));
                }
                self.output.extend_from_slice(PREFACE);
                self.start += PREFACE.len();
                self.state = ReadState::FrameHeader;
                Ok(Step::Progress)
            }
            ReadState::FrameHeader => {
                if available < FRAME_HEADER_LEN {
                    return Ok(Step::Need(FRAME_HEADER_LEN));
                }
                let raw = &self.input[self.start..self.start + FRAME_HEADER_LEN];
                let header = FrameHeader {
                    len: usize::from(raw[0]) << 16 | usize::from(raw[1]) << 8 | usize::from(raw[2]),
                    kind: raw[3],
                    flags: raw[4],
                    stream: u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff,
                };
                let in_block = self.open.map(|open| open.stream);
                match (header.kind, in_block) {
                    (FRAME_CONTINUATION, Some(stream)) if stream == header.stream => {}
                    (FRAME_HEADERS, None) => {}
                    (FRAME_CONTINUATION, _) | (_, Some(_)) => {
                        return Err(AuthorityError::ContinuationOutOfSequence {
                            stream: header.stream,
                        });
                    }
                    (_, None) => {
                        self.output.extend_from_slice(raw);
                        self.start += FRAME_HEADER_LEN;
                        self.state = if header.len == 0 {
                            ReadState::FrameHeader
                        } else {
                            ReadState::Forward(header.len)
                        };
                        return Ok(Step::Progress);
                    }
                }
                if header.stream == 0 && header.kind == FRAME_HEADERS {
                    return Err(AuthorityError::MalformedHeaders { stream: 0 });
                }
                // Checked before buffering: a HEADERS payload may also hold padding and priority.
                let reassembled = if header.kind == FRAME_CONTINUATION {
                    self.block.len()
                } else {
                    0
                };
                if reassembled + header.len > MAX_HEADER_BLOCK + PRIORITY_LEN + 256 {
                    return Err(AuthorityError::HeaderBlockTooLarge {
                        stream: header.stream,
                    });
                }
                self.start += FRAME_HEADER_LEN;
                self.state = ReadState::HeaderFrame(header);
                Ok(Step::Progress)
            }
            ReadState::HeaderFrame(header) => {
                if available < header.len {
                    return Ok(Step::Need(header.len));
                }
                let payload_at = self.start;
                self.start += header.len;
                self.state = ReadState::FrameHeader;
                self.header_fragment(header, payload_at, header_table_size)?;
                Ok(Step::Progress)
            }
            ReadState::Forward(0) => {
                self.state = ReadState::FrameHeader;
                Ok(Step::Progress)
            }
            // `poll_read` handles these before parsing; never spin on them.
            ReadState::Forward(_) | ReadState::Failed => Err(AuthorityError::Failed),
        }
    }

    /// Takes in one HEADERS or CONTINUATION payload, `input[at..at + header.len]`, and
    /// re-encodes the block when it is complete.
    fn header_fragment(
        &mut self,
        header: FrameHeader,
        at: usize,
        header_table_size: usize,
    ) -> Result<(), AuthorityError> {
        let payload = &self.input[at..at + header.len];
        if header.kind == FRAME_HEADERS {
            let malformed = AuthorityError::MalformedHeaders {
                stream: header.stream,
            };
            let mut fragment = payload;
            let mut pad = 0;
            if header.flags & FLAG_PADDED != 0 {
                let (&len, rest) = fragment.split_first().ok_or(malformed)?;
                pad = usize::from(len);
                fragment = rest;
            }
            let mut priority = None;
            if header.flags & FLAG_PRIORITY != 0 {
                let (fields, rest) = fragment
                    .split_first_chunk::<PRIORITY_LEN>()
                    .ok_or(malformed)?;
                priority = Some(*fields);
                fragment = rest;
            }
            // RFC 9113 §6.2: padding that covers the fragment is a connection error.
            let fragment_len = fragment.len().checked_sub(pad).ok_or(malformed)?;
            self.block.clear();
            self.block.extend_from_slice(&fragment[..fragment_len]);
            self.open = Some(OpenBlock {
                stream: header.stream,
                end_stream: header.flags & FLAG_END_STREAM != 0,
                priority,
            });
        } else {
            self.block.extend_from_slice(payload);
        }
        if self.block.len() > MAX_HEADER_BLOCK {
            return Err(AuthorityError::HeaderBlockTooLarge {
                stream: header.stream,
            });
        }
        if header.flags & FLAG_END_HEADERS != 0
            && let Some(open) = self.open.take()
        {
            self.reencode(open, header_table_size)?;
        }
        Ok(())
    }

    /// Decodes the reassembled block, re-encodes it with `:authority` replaced, and queues it
    /// as HEADERS (+ CONTINUATION) frames of at most [`OUT_FRAME_SIZE`] bytes.
    fn reencode(
        &mut self,
        open: OpenBlock,
        header_table_size: usize,
    ) -> Result<(), AuthorityError> {
        let encoded = &mut self.encoded;
        encoded.clear();
        let mut too_large = false;
        // The client may resize its table up to what the server advertised, never beyond.
        self.decoder
            .decode(&self.block, header_table_size, |name, value, sensitive| {
                // A small block can expand a lot through table references: stop growing.
                if too_large {
                    return;
                }
                let value = if name == AUTHORITY { LOCALHOST } else { value };
                encode_field(encoded, name, value, sensitive);
                too_large = encoded.len() > MAX_HEADER_BLOCK;
            })
            .map_err(|reason| AuthorityError::Hpack {
                stream: open.stream,
                reason,
            })?;
        if too_large {
            return Err(AuthorityError::HeaderBlockTooLarge {
                stream: open.stream,
            });
        }

        let stream = open.stream.to_be_bytes();
        let first_room = OUT_FRAME_SIZE - open.priority.map_or(0, |p| p.len());
        let (first, mut rest) = self.encoded.split_at(first_room.min(self.encoded.len()));
        let mut flags = 0;
        if open.end_stream {
            flags |= FLAG_END_STREAM;
        }
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        let mut len = first.len();
        if let Some(priority) = open.priority {
            flags |= FLAG_PRIORITY;
            len += priority.len();
        }
        push_frame_header(&mut self.output, len, FRAME_HEADERS, flags, stream);
        if let Some(priority) = open.priority {
            self.output.extend_from_slice(&priority);
        }
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(OUT_FRAME_SIZE.min(rest.len()));
            let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
            push_frame_header(
                &mut self.output,
                chunk.len(),
                FRAME_CONTINUATION,
                flags,
                stream,
            );
            self.output.extend_from_slice(chunk);
            rest = tail;
        }
        Ok(())
    }
}

fn push_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: [u8; 4]) {
    // `len` is at most OUT_FRAME_SIZE, so it fits the 24-bit length field.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream);
}

/// Appends one field without touching the dynamic table: an indexed static entry, or a literal
/// without indexing (never indexed when `sensitive`) whose name is a static reference when it
/// can be (RFC 7541 §6.1, §6.2.2, §6.2.3).
fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    let literal = if sensitive { 0x10 } else { 0x00 };
    let mut name_index = None;
    for (i, (static_name, static_value)) in STATIC_TABLE.iter().enumerate() {
        if *static_name == name {
            if *static_value == value && !sensitive {
                encode_integer(out, i + 1, 7, 0x80);
                return;
            }
            name_index.get_or_insert(i + 1);
        }
    }
    match name_index {
        Some(index) => encode_integer(out, index, 4, literal),
        None => {
            out.push(literal);
            encode_string(out, name);
        }
    }
    encode_string(out, value);
}

/// A string literal without Huffman coding (RFC 7541 §5.2).
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix after the `first` byte's high bits (RFC 7541 §5.1).
fn encode_integer(out: &mut Vec<u8>, value: usize, prefix_bits: u32, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// The server-to-client direction, read without changing it: the frames are followed only to
/// learn the SETTINGS_HEADER_TABLE_SIZE the server advertises.
struct SettingsWatch {
    state: WatchState,
    header: [u8; FRAME_HEADER_LEN],
    entry: [u8; 6],
    /// The largest table size the server has advertised; the client's encoder may use any size
    /// up to the latest acknowledged one, and the largest ever is a safe bound for the decoder.
    header_table_size: usize,
}

#[derive(Debug, Clone, Copy)]
enum WatchState {
    Header(usize),
    Skip(usize),
    /// Inside a SETTINGS payload: bytes left, bytes of the current entry seen.
    Settings(usize, usize),
}

impl SettingsWatch {
    fn new() -> Self {
        Self {
            state: WatchState::Header(0),
            header: [0; FRAME_HEADER_LEN],
            entry: [0; 6],
            header_table_size: DEFAULT_HEADER_TABLE_SIZE,
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                WatchState::Header(seen) => {
                    let n = (FRAME_HEADER_LEN - seen).min(bytes.len());
                    self.header[seen..seen + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if seen + n < FRAME_HEADER_LEN {
                        self.state = WatchState::Header(seen + n);
                        continue;
                    }
                    let h = &self.header;
                    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    self.state = if len == 0 {
                        WatchState::Header(0)
                    } else if h[3] == FRAME_SETTINGS && h[4] & FLAG_ACK == 0 {
                        WatchState::Settings(len, 0)
                    } else {
                        WatchState::Skip(len)
                    };
                }
                WatchState::Skip(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.state = if n == left {
                        WatchState::Header(0)
                    } else {
                        WatchState::Skip(left - n)
                    };
                }
                WatchState::Settings(left, seen) => {
                    let n = (self.entry.len() - seen).min(left).min(bytes.len());
                    self.entry[seen..seen + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let seen = seen + n;
                    if seen == self.entry.len() {
                        let e = &self.entry;
                        let id = u16::from_be_bytes([e[0], e[1]]);
                        let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
                        if id == SETTINGS_HEADER_TABLE_SIZE {
                            let value = usize::try_from(value).unwrap_or(usize::MAX);
                            self.header_table_size = self.header_table_size.max(value);
                        }
                    }
                    let left = left - n;
                    self.state = if left == 0 {
                        WatchState::Header(0)
                    } else {
                        WatchState::Settings(left, seen % self.entry.len())
                    };
                }
            }
        }
    }
}

/// The HPACK static table (RFC 7541 Appendix A); index i + 1 is entry i.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

#[cfg(test)]
mod tests;
