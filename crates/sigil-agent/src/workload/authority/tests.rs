//! Unit tests of the shim: frames and header blocks built by hand and by `loona-hpack`'s
//! encoder, the output decoded by `loona-hpack`'s decoder.

#![allow(clippy::unwrap_used)]

use super::*;
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOCKET_AUTHORITY: &str = "%2Ftmp%2Fsigil%2Fapi.sock";

/// A connection whose client side is `data`, delivered `chunk` bytes per read; what the
/// server writes is kept.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    written: Vec<u8>,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .chunk
            .min(self.data.len() - self.pos)
            .min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // One byte at a time, so the SETTINGS watch sees every split.
        self.written.extend_from_slice(&buf[..1.min(buf.len())]);
        Poll::Ready(Ok(1.min(buf.len())))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn trickle(data: Vec<u8>, chunk: usize) -> AuthorityRewrite<Trickle> {
    AuthorityRewrite::new(Trickle {
        data,
        pos: 0,
        chunk,
        written: Vec::new(),
    })
}

/// Everything the server would read, `read_size` bytes at most per read.
async fn read_all(conn: &mut AuthorityRewrite<Trickle>, read_size: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0; read_size];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

async fn rewrite(input: Vec<u8>, chunk: usize, read_size: usize) -> io::Result<Vec<u8>> {
    read_all(&mut trickle(input, chunk), read_size).await
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    push_frame_header(&mut out, payload.len(), kind, flags, stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

#[derive(Debug, PartialEq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn parse_frames(out: &[u8]) -> Vec<Frame> {
    assert_eq!(&out[..PREFACE.len()], PREFACE);
    let mut rest = &out[PREFACE.len()..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        frames.push(Frame {
            kind: rest[3],
            flags: rest[4],
            stream: u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]),
            payload: rest[9..9 + len].to_vec(),
        });
        rest = &rest[9 + len..];
    }
    frames
}

type Fields = Vec<(String, String)>;

/// Every header block of the output, decoded each with a fresh decoder: that works only if
/// the shim never inserts into h2's dynamic table.
fn decode_blocks(frames: &[Frame]) -> Vec<(u32, bool, Fields)> {
    let mut blocks = Vec::new();
    let mut open: Option<(u32, bool, Vec<u8>)> = None;
    for f in frames {
        match f.kind {
            FRAME_HEADERS => {
                assert!(open.is_none());
                assert_eq!(f.flags & FLAG_PADDED, 0);
                assert!(f.payload.len() <= OUT_FRAME_SIZE);
                let skip = if f.flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
                open = Some((
                    f.stream,
                    f.flags & FLAG_END_STREAM != 0,
                    f.payload[skip..].to_vec(),
                ));
            }
            FRAME_CONTINUATION => {
                let block = open.as_mut().unwrap();
                assert_eq!(block.0, f.stream);
                assert!(f.payload.len() <= OUT_FRAME_SIZE);
                block.2.extend_from_slice(&f.payload);
            }
            _ => {
                assert!(open.is_none(), "frame interleaved in a header block");
                continue;
            }
        }
        if f.flags & FLAG_END_HEADERS != 0 {
            let (stream, end_stream, block) = open.take().unwrap();
            let fields = Decoder::new()
                .decode(&block)
                .unwrap()
                .into_iter()
                .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
                .collect();
            blocks.push((stream, end_stream, fields));
        }
    }
    assert!(open.is_none(), "unterminated header block");
    blocks
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn grpc_request(authority: &str) -> Fields {
    fields(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", authority),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
        (
            "user-agent",
            "grpc-python/1.85.1 grpc-c/51.0.0 (linux; chttp2)",
        ),
    ])
}

fn with_authority(request: &Fields, authority: &str) -> Fields {
    request
        .iter()
        .map(|(n, v)| {
            let v = if n == ":authority" { authority } else { v };
            (n.clone(), v.to_owned())
        })
        .collect()
}

fn encode(encoder: &mut Encoder<'_>, fields: &Fields) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

async fn expect_error(input: Vec<u8>) -> AuthorityError {
    let mut conn = trickle(input, 4096);
    let error = read_all(&mut conn, 4096).await.unwrap_err();
    let inner = *error
        .get_ref()
        .unwrap()
        .downcast_ref::<AuthorityError>()
        .unwrap();
    // The connection stays failed.
    let again = read_all(&mut conn, 4096).await.unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::InvalidData);
    inner
}

#[tokio::test]
async fn rewrites_authority_and_passes_other_frames_unchanged() {
    let request = grpc_request(SOCKET_AUTHORITY);
    let block = encode(&mut Encoder::new(), &request);
    let settings = frame(FRAME_SETTINGS, 0, 0, &[0, 4, 0, 0x40, 0, 0]);
    let data = frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 2, 0x0a, 0]);
    let window = frame(0x8, 0, 0, &[0, 1, 0, 0]);
    let input = connection(&[
        settings.clone(),
        window.clone(),
        frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block),
        data.clone(),
    ]);
    let out = rewrite(input, 4096, 4096).await.unwrap();
    let frames = parse_frames(&out);
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[0], parse_frames(&connection(&[settings]))[0]);
    assert_eq!(frames[1], parse_frames(&connection(&[window]))[0]);
    assert_eq!(frames[3], parse_frames(&connection(&[data]))[0]);
    assert_eq!(frames[2].flags, FLAG_END_HEADERS);
    let blocks = decode_blocks(&frames);
    assert_eq!(
        blocks,
        vec![(1, false, with_authority(&request, "localhost"))]
    );
}

#[tokio::test]
async fn a_block_without_authority_gets_none() {
    let request: Fields = grpc_request("x")
        .into_iter()
        .filter(|(n, _)| n != ":authority")
        .collect();
    let block = encode(&mut Encoder::new(), &request);
    let input = connection(&[frame(
        FRAME_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        3,
        &block,
    )]);
    let out = rewrite(input, 4096, 4096).await.unwrap();
    assert_eq!(decode_blocks(&parse_frames(&out)), vec![(3, true, request)]);
}

#[tokio::test]
async fn padding_is_dropped_and_priority_kept() {
    let request = grpc_request(SOCKET_AUTHORITY);
    let block = encode(&mut Encoder::new(), &request);
    let priority = [0x80, 0, 0, 1, 200]; // exclusive on stream 1, weight 201
    let mut payload = vec![7];
    payload.extend_from_slice(&priority);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0; 7]);
    let flags = FLAG_END_HEADERS | FLAG_END_STREAM | FLAG_PADDED | FLAG_PRIORITY;
    let input = connection(&[frame(FRAME_HEADERS, flags, 5, &payload)]);
    let out = rewrite(input, 4096, 4096).await.unwrap();
    let frames = parse_frames(&out);
    assert_eq!(
        frames[0].flags,
        FLAG_END_HEADERS | FLAG_END_STREAM | FLAG_PRIORITY
    );
    assert_eq!(frames[0].payload[..5], priority);
    assert_eq!(
        decode_blocks(&frames),
        vec![(5, true, with_authority(&request, "localhost"))]
    );
}

#[tokio::test]
async fn continuation_frames_are_reassembled() {
    let request = grpc_request(SOCKET_AUTHORITY);
    let block = encode(&mut Encoder::new(), &request);
    let (a, rest) = block.split_at(5);
    let (b, c) = rest.split_at(20);
    let input = connection(&[
        frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_END_STREAM,
            1,
            &[[2].as_slice(), a, &[0, 0]].concat(),
        ),
        frame(FRAME_CONTINUATION, 0, 1, b),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, c),
        frame(0x8, 0, 0, &[0, 1, 0, 0]),
    ]);
    let out = rewrite(input, 4096, 4096).await.unwrap();
    let frames = parse_frames(&out);
    assert_eq!(frames.len(), 2);
    assert_eq!(
        decode_blocks(&frames),
        vec![(1, true, with_authority(&request, "localhost"))]
    );
}

#[tokio::test]
async fn a_large_block_is_split_across_continuation_frames() {
    let mut request = grpc_request(SOCKET_AUTHORITY);
    request.push(("x-large".to_owned(), "v".repeat(40_000)));
    let block = encode(&mut Encoder::new(), &request);
    // The client's own frames are 16 KiB too; the shim's split need not match them.
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    let mut frames_in = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 {
            FRAME_HEADERS
        } else {
            FRAME_CONTINUATION
        };
        let mut flags = if i + 1 == chunks.len() {
            FLAG_END_HEADERS
        } else {
            0
        };
        if i == 0 {
            flags |= FLAG_PRIORITY | FLAG_END_STREAM;
        }
        let payload = if i == 0 {
            [[0, 0, 0, 0, 15].as_slice(), chunk].concat()
        } else {
            chunk.to_vec()
        };
        frames_in.push(frame(kind, flags, 7, &payload));
    }
    let out = rewrite(connection(&frames_in), 4096, 4096).await.unwrap();
    let frames = parse_frames(&out);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].kind, FRAME_HEADERS);
    assert_eq!(frames[0].flags, FLAG_PRIORITY | FLAG_END_STREAM);
    assert_eq!(frames[0].payload.len(), OUT_FRAME_SIZE);
    assert_eq!(frames[1].kind, FRAME_CONTINUATION);
    assert_eq!(frames[1].flags, 0);
    assert_eq!(frames[2].flags, FLAG_END_HEADERS);
    assert_eq!(
        decode_blocks(&frames),
        vec![(7, true, with_authority(&request, "localhost"))]
    );
}

/// RFC 7541 Appendix C.4: three requests from one Huffman-coding encoder, the later ones
/// referring to the dynamic table, `:authority` among the indexed entries.
fn rfc7541_c4() -> Vec<u8> {
    let c41 = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let c42 = [
        0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
    ];
    let c43 = [
        0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f, 0x89,
        0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
    ];
    connection(&[
        frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &c41),
        frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3, &c42),
        frame(FRAME_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 5, &c43),
    ])
}

#[tokio::test]
async fn huffman_and_dynamic_table_references_across_requests() {
    let out = rewrite(rfc7541_c4(), 4096, 4096).await.unwrap();
    let get = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
    let mut second = get.to_vec();
    second.extend([(":authority", "localhost"), ("cache-control", "no-cache")]);
    assert_eq!(
        decode_blocks(&parse_frames(&out)),
        vec![
            (
                1,
                true,
                fields(&[get[0], get[1], get[2], (":authority", "localhost")])
            ),
            (3, true, fields(&second)),
            (
                5,
                true,
                fields(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "localhost"),
                    ("custom-key", "custom-value"),
                ])
            ),
        ]
    );
}

/// Two gRPC calls from one HPACK encoder, the second referring to entries the first added.
fn two_calls() -> (Vec<u8>, Fields) {
    let mut request = grpc_request(SOCKET_AUTHORITY);
    request.push(("workload.spiffe.io".to_owned(), "true".to_owned()));
    let mut encoder = Encoder::new();
    let first = encode(&mut encoder, &request);
    let second = encode(&mut encoder, &request);
    // `te` and `workload.spiffe.io` (names outside the static table) were sent as literals
    // (a type byte, two lengths, name, value) and then as one-byte indexes.
    let saved = |name: &str, value: &str| 3 + name.len() + value.len() - 1;
    assert_eq!(
        first.len() - second.len(),
        saved("te", "trailers") + saved("workload.spiffe.io", "true")
    );
    let input = connection(&[
        frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &first),
        frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]),
        frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &second),
        frame(0x0, FLAG_END_STREAM, 3, &[0, 0, 0, 0, 0]),
    ]);
    (input, with_authority(&request, "localhost"))
}

#[tokio::test]
async fn dynamic_table_across_two_calls() {
    let (input, expected) = two_calls();
    let out = rewrite(input, 4096, 4096).await.unwrap();
    assert_eq!(
        decode_blocks(&parse_frames(&out)),
        vec![(1, false, expected.clone()), (3, false, expected)]
    );
}

#[tokio::test]
async fn one_byte_reads_give_the_same_bytes() {
    for input in [two_calls().0, rfc7541_c4()] {
        let whole = rewrite(input.clone(), usize::MAX, 1 << 20).await.unwrap();
        assert_eq!(rewrite(input.clone(), 1, 1).await.unwrap(), whole);
        assert_eq!(rewrite(input.clone(), 1, 4096).await.unwrap(), whole);
        assert_eq!(rewrite(input, 4096, 1).await.unwrap(), whole);
    }
}

#[tokio::test]
async fn table_size_follows_the_server_settings() {
    // A dynamic table size update to 8192, then `:method: GET`.
    let block = [0x3f, 0xe1, 0x3f, 0x82];
    let input = connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block)]);
    assert!(matches!(
        expect_error(input.clone()).await,
        AuthorityError::Hpack {
            stream: 1,
            reason: HpackError::TableSizeOverLimit {
                size: 8192,
                limit: 4096
            }
        }
    ));

    let mut conn = trickle(input, 4096);
    // The server's SETTINGS (after a PING), written through the shim a byte at a time.
    let ping = frame(0x6, 0, 0, &[1; 8]);
    let settings = frame(
        FRAME_SETTINGS,
        0,
        0,
        &[0, 5, 0, 0, 0x40, 0, 0, 1, 0, 0, 0x20, 0],
    );
    conn.write_all(&[ping, settings].concat()).await.unwrap();
    let out = read_all(&mut conn, 4096).await.unwrap();
    assert_eq!(
        decode_blocks(&parse_frames(&out)),
        vec![(1, false, fields(&[(":method", "GET")]))]
    );
}

#[tokio::test]
async fn malformed_input_is_an_error() {
    let block = encode(&mut Encoder::new(), &grpc_request(SOCKET_AUTHORITY));
    let headers = |flags, stream, payload: &[u8]| frame(FRAME_HEADERS, flags, stream, payload);

    let mut http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    http1.resize(100, b' ');
    assert_eq!(expect_error(http1).await, AuthorityError::NotHttp2);

    let bad_index = [0xff, 0xff, 0x7f];
    let input = connection(&[headers(FLAG_END_HEADERS, 1, &bad_index)]);
    assert!(matches!(
        expect_error(input).await,
        AuthorityError::Hpack { stream: 1, .. }
    ));

    let too_much_padding = [[200].as_slice(), &block].concat();
    let input = connection(&[headers(
        FLAG_END_HEADERS | FLAG_PADDED,
        1,
        &too_much_padding,
    )]);
    assert_eq!(
        expect_error(input).await,
        AuthorityError::MalformedHeaders { stream: 1 }
    );

    let input = connection(&[headers(FLAG_END_HEADERS | FLAG_PRIORITY, 1, &[0, 0])]);
    assert_eq!(
        expect_error(input).await,
        AuthorityError::MalformedHeaders { stream: 1 }
    );

    let input = connection(&[headers(FLAG_END_HEADERS, 0, &block)]);
    assert_eq!(
        expect_error(input).await,
        AuthorityError::MalformedHeaders { stream: 0 }
    );

    let input = connection(&[frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &block)]);
    assert_eq!(
        expect_error(input).await,
        AuthorityError::ContinuationOutOfSequence { stream: 1 }
    );

    let (a, b) = block.split_at(4);
    for interloper in [
        frame(0x8, 0, 0, &[0, 1, 0, 0]),
        frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, b),
        headers(FLAG_END_HEADERS, 3, &block),
    ] {
        let stream = u32::from_be_bytes(interloper[5..9].try_into().unwrap());
        let input = connection(&[headers(0, 1, a), interloper]);
        assert_eq!(
            expect_error(input).await,
            AuthorityError::ContinuationOutOfSequence { stream }
        );
    }

    // Over the limit in one frame, refused before it is buffered...
    let input = connection(&[headers(
        FLAG_END_HEADERS,
        1,
        &vec![0x82; MAX_HEADER_BLOCK + 300],
    )]);
    assert_eq!(
        expect_error(input).await,
        AuthorityError::HeaderBlockTooLarge { stream: 1 }
    );
    // ...and over it in CONTINUATION frames.
    let mut frames = vec![headers(0, 1, &[0x82; 16_384])];
    frames.extend((0..4).map(|_| frame(FRAME_CONTINUATION, 0, 1, &[0x82; 16_384])));
    assert_eq!(
        expect_error(connection(&frames)).await,
        AuthorityError::HeaderBlockTooLarge { stream: 1 }
    );
    // A small block that expands past the limit through one dynamic-table entry.
    let mut bomb = vec![0x40, 1, b'x'];
    encode_string(&mut bomb, &[b'v'; 4_000]);
    bomb.extend_from_slice(&[0xbe; 40]);
    let input = connection(&[headers(FLAG_END_HEADERS, 1, &bomb)]);
    assert_eq!(
        expect_error(input).await,
        AuthorityError::HeaderBlockTooLarge { stream: 1 }
    );
}

#[tokio::test]
async fn a_truncated_frame_is_an_error_and_a_clean_end_is_not() {
    let block = encode(&mut Encoder::new(), &grpc_request(SOCKET_AUTHORITY));
    let whole = connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block)]);
    for cut in [10, PREFACE.len() + 5, whole.len() - 1] {
        let error = rewrite(whole[..cut].to_vec(), 4096, 4096)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
    let data = connection(&[frame(0x0, 0, 1, &[1; 100])]);
    let error = rewrite(data[..data.len() - 1].to_vec(), 4096, 4096)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(rewrite(data.clone(), 4096, 4096).await.unwrap(), data);
    assert!(rewrite(Vec::new(), 4096, 4096).await.unwrap().is_empty());
}

#[tokio::test]
async fn random_header_blocks_never_panic() {
    // A fixed xorshift sequence: random bytes, and mutations of a real block.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let real = encode(&mut Encoder::new(), &grpc_request(SOCKET_AUTHORITY));
    for round in 0..2_000 {
        let mut block = if round % 2 == 0 {
            (0..next() % 64).map(|_| next() as u8).collect::<Vec<_>>()
        } else {
            real.clone()
        };
        for _ in 0..=next() % 4 {
            if !block.is_empty() {
                let i = (next() as usize) % block.len();
                block[i] = next() as u8;
            }
        }
        let flags =
            (next() as u8) & (FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM) | FLAG_END_HEADERS;
        let input = connection(&[frame(FRAME_HEADERS, flags, 1, &block)]);
        let _ = rewrite(input, 4096, 4096).await;
    }
}

#[test]
fn static_table_matches_the_decoders() {
    let mut block = Vec::new();
    for (name, value) in STATIC_TABLE {
        encode_field(&mut block, name, value, false);
        encode_field(&mut block, name, b"other", false);
    }
    let decoded = Decoder::new().decode(&block).unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = STATIC_TABLE
        .iter()
        .flat_map(|(n, v)| [(n.to_vec(), v.to_vec()), (n.to_vec(), b"other".to_vec())])
        .collect();
    assert_eq!(decoded, expected);
    // Fully indexed entries are one byte each.
    let mut one = Vec::new();
    encode_field(&mut one, b":method", b"POST", false);
    assert_eq!(one, [0x83]);
}

#[tokio::test]
async fn never_indexed_fields_stay_never_indexed() {
    // `authorization: secret` never indexed (name index 23), then `x-token: t` likewise.
    let mut block = vec![0x82, 0x1f, 23 - 15, 6];
    block.extend_from_slice(b"secret");
    block.extend_from_slice(&[0x10, 7]);
    block.extend_from_slice(b"x-token\x01t");
    let input = connection(&[frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block)]);
    let out = rewrite(input, 4096, 4096).await.unwrap();
    let frames = parse_frames(&out);
    assert_eq!(frames[0].payload, block);
}
