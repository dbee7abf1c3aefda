//! The watch stream's `gzip` content coding (RFC 1952), built so that what every watcher
//! receives is compressed once, not once per watcher.
//!
//! A gzip stream is a header, one deflate stream (RFC 1951) and a trailer (the CRC-32 and
//! length of what was compressed). A deflate stream is a sequence of blocks, and a block
//! refers back only to what came before it in the same stream. So each [`Piece`] is the
//! output of a fresh compressor, ended by a sync flush on a byte boundary: it refers to
//! nothing before it, and any sequence of pieces is a valid deflate stream. The chunk the
//! live watchers share becomes one piece, the same bytes for every gzip watcher; each watcher
//! keeps only its own running check ([`Check`], combined from the pieces' CRCs) for the
//! trailer its stream ends with.

use std::cell::RefCell;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// The first bytes of every gzip stream: deflate, no flags, no time, unknown OS.
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Whether an `Accept-Encoding` value accepts `gzip` (RFC 9110 §12.5.3): listed, or covered
/// by `*`, with a weight above zero.
pub fn accepted(accept_encoding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let weight = parts
            .map(str::trim)
            .find_map(|p| p.strip_prefix("q=").or(p.strip_prefix("Q=")))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return weight > 0.0;
        }
        if coding == "*" {
            star = weight > 0.0;
        }
    }
    star
}

/// Some text, compressed on its own: it may follow any other piece in a stream.
pub struct Piece {
    pub bytes: Vec<u8>,
    crc: Crc,
}

impl Piece {
    pub fn new(text: &[u8]) -> Piece {
        let mut crc = Crc::new();
        crc.update(text);
        Piece {
            bytes: deflate(text),
            crc,
        }
    }
}

/// What one stream has carried so far, for its trailer.
pub struct Check(Crc);

impl Default for Check {
    fn default() -> Self {
        Check(Crc::new())
    }
}

impl Check {
    /// Counts `piece` as sent.
    pub fn add(&mut self, piece: &Piece) {
        self.0.combine(&piece.crc);
    }

    /// The stream's last bytes: an empty final block, then the trailer.
    pub fn end(&self) -> Vec<u8> {
        // BFINAL = 1, fixed codes, and the end-of-block code: ten bits.
        let mut out = vec![0x03, 0x00];
        out.extend_from_slice(&self.0.sum().to_le_bytes());
        out.extend_from_slice(&self.0.amount().to_le_bytes());
        out
    }
}

thread_local! {
    /// One compressor, reset for every piece (its state is some 300 KB).
    static COMPRESSOR: RefCell<Compress> =
        // The fastest level: the frames repeat their field names and ids, and compress
        // about seventeen times at it.
        RefCell::new(Compress::new(Compression::fast(), false));
}

/// `text` as deflate blocks from a fresh compressor, ended by a sync flush (not final).
fn deflate(text: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|c| {
        c.reset();
        deflate_with(c, text)
    })
}

fn deflate_with(c: &mut Compress, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 8 + 64);
    loop {
        let done = c.total_in() as usize;
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        match c.compress_vec(&text[done..], &mut out, FlushCompress::Sync) {
            // The flush is complete once all the input is in and the output had room left.
            Ok(Status::Ok) if c.total_in() as usize == text.len() && out.len() < out.capacity() => {
                return out
            }
            Ok(_) => {}
            // Compressing into memory does not fail; should it, the piece is empty and the
            // stream still well formed.
            Err(_) => return vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> std::io::Result<String> {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes).read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn pieces_compressed_apart_make_one_stream_that_decodes_to_their_text() {
        let frames: Vec<String> = (0..300)
            .map(|i| format!("event: deployment\nid: {i}\ndata: {{\"name\":\"job-{i}\"}}\n\n"))
            .collect();
        let parts = [frames[..1].concat(), String::new(), frames[1..].concat()];
        let mut stream = HEADER.to_vec();
        let mut check = Check::default();
        for part in &parts {
            let piece = Piece::new(part.as_bytes());
            check.add(&piece);
            stream.extend_from_slice(&piece.bytes);
        }
        let whole = parts.concat();
        assert!(
            stream.len() * 5 < whole.len(),
            "{} of {}",
            stream.len(),
            whole.len()
        );
        // Cut before the end, what came decodes as far as it goes (a live stream).
        let mut partial = vec![];
        let cut = flate2::read::GzDecoder::new(&stream[..]).read_to_end(&mut partial);
        assert!(cut.is_err(), "no trailer yet");
        assert_eq!(String::from_utf8(partial).expect("text"), whole);
        stream.extend_from_slice(&check.end());
        assert_eq!(gunzip(&stream).expect("a whole gzip stream"), whole);
    }

    #[test]
    fn a_piece_refers_to_nothing_compressed_before_it() {
        // A watcher that joins late gets the later pieces only: they must decode alone,
        // though they repeat what the earlier ones held.
        let text =
            "event: deployment\nid: 7\ndata: {\"image\":\"ghcr.io/acme/job:1\"}\n\n".repeat(50);
        let _before = Piece::new(text.as_bytes());
        let piece = Piece::new(text.as_bytes());
        let mut check = Check::default();
        check.add(&piece);
        let mut stream = HEADER.to_vec();
        stream.extend_from_slice(&piece.bytes);
        stream.extend_from_slice(&check.end());
        assert_eq!(gunzip(&stream).expect("alone"), text);
    }

    #[test]
    fn a_wrong_check_is_refused_by_the_decoder() {
        let piece = Piece::new(b"event: end\ndata: {}\n\n");
        let mut stream = HEADER.to_vec();
        stream.extend_from_slice(&piece.bytes);
        stream.extend_from_slice(&Check::default().end());
        assert!(gunzip(&stream).is_err());
    }

    #[test]
    fn gzip_is_accepted_when_listed_or_starred_with_weight() {
        for yes in [
            "gzip",
            "gzip, deflate, br",
            "br;q=1.0, GZIP;q=0.5",
            "*",
            "x-gzip",
            "deflate, *;q=0.1",
        ] {
            assert!(accepted(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br",
            "gzip;q=0",
            "gzip; q=0.0, *",
            "*;q=0",
            "gzipx",
        ] {
            assert!(!accepted(no), "{no}");
        }
    }
}
