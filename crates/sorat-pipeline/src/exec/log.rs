//! Step logs: every line masked, timestamped, stored whole (zstd) and kept as a tail.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc::UnboundedSender;

use crate::events::{JobKey, RunEvent};
use crate::mask::Masker;
use crate::record::{LogLine, LogRecord};

/// Lines kept in memory (and in the record) from the end of each log.
pub const TAIL_LINES: usize = 100;
/// Longer lines are split: a single line of megabytes (minified JSON) must not grow the
/// memory of the reader without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The masker of a job: its secrets, and values steps added with `::add-mask::`.
pub type SharedMasker = Arc<RwLock<Masker>>;

/// Where one step's (or service's) output goes.
pub struct LogWriter {
    path: PathBuf,
    encoder: Option<zstd::Encoder<'static, BufWriter<File>>>,
    write_error: Option<io::Error>,
    tail: VecDeque<LogLine>,
    lines: u64,
    bytes: u64,
    masker: SharedMasker,
    events: UnboundedSender<RunEvent>,
    key: JobKey,
    closed: bool,
}

impl LogWriter {
    /// Creates the log file at `path`.
    pub fn create(
        path: &Path,
        masker: SharedMasker,
        events: UnboundedSender<RunEvent>,
        key: JobKey,
    ) -> io::Result<LogWriter> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = BufWriter::with_capacity(128 * 1024, File::create(path)?);
        let encoder = zstd::Encoder::new(file, 3)?;
        Ok(LogWriter {
            path: path.to_path_buf(),
            encoder: Some(encoder),
            write_error: None,
            tail: VecDeque::with_capacity(TAIL_LINES),
            lines: 0,
            bytes: 0,
            masker,
            events,
            key,
            closed: false,
        })
    }

    /// Takes one line of raw output (without its newline).
    pub fn line(&mut self, raw: &str) {
        if self.closed {
            return;
        }
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        // `::add-mask::VALUE` registers VALUE before the line itself is masked, so the
        // command never shows what it hides.
        if let Some(value) = raw.trim_start().strip_prefix("::add-mask::")
            && let Ok(mut masker) = self.masker.write()
        {
            masker.add_value(value);
        }
        let masked = match self.masker.read() {
            Ok(masker) => masker.mask(raw),
            Err(_) => String::from("*** (masking failed; line withheld) ***"),
        };
        self.push_masked(masked);
    }

    /// Writes a line Sorat itself produced (already free of secrets, but masked anyway).
    pub fn note(&mut self, text: &str) {
        for line in text.lines() {
            self.line(line);
        }
    }

    fn push_masked(&mut self, line: String) {
        let now = jiff::Timestamp::now();
        let t = format!("{now:.3}");
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        if let Some(encoder) = &mut self.encoder
            && self.write_error.is_none()
            && let Err(error) = writeln!(encoder, "{t} {line}")
        {
            self.write_error = Some(error);
        }
        let log_line = LogLine { t, line };
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(log_line.clone());
        let _ = self.events.send(RunEvent::Log {
            key: self.key.clone(),
            line: log_line,
        });
    }

    /// The length of the longest value the log masks.
    pub fn longest_masked(&self) -> usize {
        self.masker.read().map_or(0, |masker| masker.longest())
    }

    /// See [`Masker::safe_split`].
    pub fn safe_split(&self, text: &str, preferred: usize) -> usize {
        self.masker
            .read()
            .map_or(preferred, |masker| masker.safe_split(text, preferred))
    }

    /// The last lines so far.
    pub fn tail(&self) -> Vec<LogLine> {
        self.tail.iter().cloned().collect()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Closes the log (flushing and syncing it) and describes it for the record.
    ///
    /// Lines arriving later (from a process that escaped its step's group and still holds
    /// the pipe) are no longer stored; the log on disk is complete as of now.
    pub fn close(&mut self) -> LogRecord {
        self.closed = true;
        if let Some(encoder) = self.encoder.take() {
            let result = encoder.finish().and_then(|mut file| {
                file.flush()?;
                file.get_ref().sync_data()
            });
            if let Err(error) = result {
                self.write_error.get_or_insert(error);
            }
        }
        let mut tail: Vec<LogLine> = self.tail.iter().cloned().collect();
        if let Some(error) = &self.write_error {
            tail.push(LogLine {
                t: format!("{:.3}", jiff::Timestamp::now()),
                line: format!("sorat: the log file could not be written whole: {error}"),
            });
        }
        LogRecord {
            path: self.path.clone(),
            lines: self.lines,
            bytes: self.bytes,
            tail,
        }
    }
}

/// Closes a shared log, whoever else still holds it.
pub fn close_shared(log: &std::sync::Mutex<LogWriter>) -> Option<LogRecord> {
    log.lock().ok().map(|mut log| log.close())
}

/// Reads lines from `reader` into `log` until end of file; long lines are split.
pub fn pump_lines(reader: impl io::Read, log: &std::sync::Mutex<LogWriter>) {
    let mut reader = io::BufReader::with_capacity(64 * 1024, reader);
    let mut buffer = Vec::with_capacity(1024);
    loop {
        // `buffer` may start with the end of the previous piece of a long line.
        let piece = match read_piece(&mut reader, &mut buffer) {
            Ok(piece) => piece,
            Err(_) => Piece::End,
        };
        if piece == Piece::End && buffer.is_empty() {
            break;
        }
        if buffer.last() == Some(&b'\n') {
            buffer.pop();
        }
        let text = String::from_utf8_lossy(&buffer).into_owned();
        let Ok(mut log) = log.lock() else { break };
        match piece {
            Piece::Line | Piece::End => {
                log.line(&text);
                buffer.clear();
                if piece == Piece::End {
                    break;
                }
            }
            Piece::Partial => {
                // A line longer than the cap goes out in pieces; the split keeps back enough
                // for a secret that has only begun, and never cuts a secret in two.
                let keep = log
                    .longest_masked()
                    .saturating_sub(1)
                    .min(MAX_LINE_BYTES / 2);
                let split = log.safe_split(&text, text.len().saturating_sub(keep));
                log.line(&text[..split]);
                buffer = text.as_bytes()[split..].to_vec();
            }
        }
    }
}

/// How a read of [`read_piece`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    /// At a newline.
    Line,
    /// At the cap, in the middle of a line.
    Partial,
    /// At the end of the output.
    End,
}

/// Appends to `buffer` up to a newline, or until it holds [`MAX_LINE_BYTES`], or to the end.
fn read_piece(reader: &mut impl io::BufRead, buffer: &mut Vec<u8>) -> io::Result<Piece> {
    loop {
        let room = MAX_LINE_BYTES.saturating_sub(buffer.len());
        if room == 0 {
            return Ok(Piece::Partial);
        }
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(Piece::End);
        }
        let window = &available[..available.len().min(room)];
        match window.iter().position(|&b| b == b'\n') {
            Some(index) => {
                buffer.extend_from_slice(&window[..=index]);
                reader.consume(index + 1);
                return Ok(Piece::Line);
            }
            None => {
                let used = window.len();
                buffer.extend_from_slice(window);
                reader.consume(used);
            }
        }
    }
}

/// Reads a stored log back (for tests and `sorat` commands that show a whole log).
pub fn read_log(path: &Path) -> io::Result<String> {
    let file = File::open(path)?;
    let mut decoder = zstd::Decoder::new(file)?;
    let mut text = String::new();
    io::Read::read_to_string(&mut decoder, &mut text)?;
    Ok(text)
}
