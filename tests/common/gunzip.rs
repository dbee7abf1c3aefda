//! A gzip-coded HTTP body decoded as it arrives (the watch stream's), for the end-to-end
//! tests and the watch benchmark, which check the coding themselves rather than leave it to
//! reqwest (whose decoding would also make every other answer come compressed through
//! `wrangler dev`).

use futures::{Stream, StreamExt};

/// A gzip-coded body, decoded as it arrives; an error if it ends without its whole trailer
/// (a wrong check included).
pub fn gunzip<B: AsRef<[u8]>>(
    body: impl Stream<Item = Result<B, String>> + Send + 'static,
) -> impl Stream<Item = Result<Vec<u8>, String>> + Send {
    use std::io::Write;
    let decoder = flate2::write::GzDecoder::new(Vec::new());
    futures::stream::unfold(Some((Box::pin(body), decoder)), |state| async move {
        let (mut body, mut decoder) = state?;
        let decoded = match body.next().await {
            Some(Ok(chunk)) => decoder
                .write_all(chunk.as_ref())
                .and_then(|()| decoder.flush())
                .map(|()| std::mem::take(decoder.get_mut()))
                .map_err(|e| format!("gzip: {e}")),
            Some(Err(e)) => Err(e),
            None => {
                return match decoder.try_finish() {
                    Ok(()) => None,
                    Err(e) => Some((Err(format!("gzip ended badly: {e}")), None)),
                }
            }
        };
        let go_on = decoded.is_ok();
        Some((decoded, go_on.then_some((body, decoder))))
    })
}
