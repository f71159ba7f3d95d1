//! Pure helpers: kcat-style record format strings, offset specs, timestamps, Kafka's murmur2
//! partitioner.

use crate::error::CliError;

/// One record as the consumer renders it.
pub struct RecordView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Key,
    KeyLength,
    Value,
    ValueLength,
    Partition,
    Offset,
    Timestamp,
    Topic,
    Headers,
}

/// A parsed format string such as `%k=%v\n` (the tokens of kcat's `-f`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Tokens: `%k` key, `%v` (or `%s`) value, `%K`/`%S` their lengths (-1 for null), `%p`
    /// partition, `%o` offset, `%T` timestamp (ms), `%t` topic, `%h` headers as `k=v,k=v`, `%%`;
    /// escapes `\n`, `\t`, `\r`, `\\`. Anything else is copied as it is.
    pub fn parse(format: &str) -> Template {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = format.chars().peekable();
        let push = |pieces: &mut Vec<Piece>, literal: &mut Vec<u8>, piece: Piece| {
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(literal)));
            }
            pieces.push(piece);
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.peek() {
                        Some('k') => Piece::Key,
                        Some('K') => Piece::KeyLength,
                        Some('v') | Some('s') => Piece::Value,
                        Some('S') => Piece::ValueLength,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('T') => Piece::Timestamp,
                        Some('t') => Piece::Topic,
                        Some('h') => Piece::Headers,
                        Some('%') => {
                            chars.next();
                            literal.push(b'%');
                            continue;
                        }
                        _ => {
                            literal.push(b'%');
                            continue;
                        }
                    };
                    chars.next();
                    push(&mut pieces, &mut literal, piece);
                }
                '\\' => {
                    let escaped = match chars.peek() {
                        Some('n') => Some(b'\n'),
                        Some('t') => Some(b'\t'),
                        Some('r') => Some(b'\r'),
                        Some('\\') => Some(b'\\'),
                        _ => None,
                    };
                    match escaped {
                        Some(byte) => {
                            chars.next();
                            literal.push(byte);
                        }
                        None => literal.push(b'\\'),
                    }
                }
                other => {
                    let mut utf8 = [0u8; 4];
                    literal.extend_from_slice(other.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Template { pieces }
    }

    /// Appends the rendering of `record` to `out` (keys and values as raw bytes).
    pub fn render(&self, record: &RecordView<'_>, out: &mut Vec<u8>) {
        let length = |bytes: Option<&[u8]>| bytes.map_or(-1, |b| b.len() as i64).to_string();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(bytes) => out.extend_from_slice(bytes),
                Piece::Key => out.extend_from_slice(record.key.unwrap_or_default()),
                Piece::KeyLength => out.extend_from_slice(length(record.key).as_bytes()),
                Piece::Value => out.extend_from_slice(record.value.unwrap_or_default()),
                Piece::ValueLength => out.extend_from_slice(length(record.value).as_bytes()),
                Piece::Partition => out.extend_from_slice(record.partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
                Piece::Topic => out.extend_from_slice(record.topic.as_bytes()),
                Piece::Headers => {
                    for (i, (key, value)) in record.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(key.as_bytes());
                        out.push(b'=');
                        out.extend_from_slice(value.unwrap_or_default());
                    }
                }
            }
        }
    }
}

/// Where to start reading a partition (`--offset`), or where to move a group (`group seek --to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Start,
    /// The high watermark.
    End,
    /// N records before the end (never before the start).
    FromEnd(i64),
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
    /// This offset.
    Offset(i64),
}

impl std::str::FromStr for OffsetSpec {
    type Err = CliError;

    fn from_str(spec: &str) -> Result<OffsetSpec, CliError> {
        let bad = || {
            CliError::Usage(format!(
                "invalid offset {spec:?}: use start, end, -N (N before the end), @TIMESTAMP (ms since the epoch \
                 or RFC 3339, e.g. @2024-05-01T12:00:00Z) or an offset"
            ))
        };
        match spec {
            "start" | "beginning" | "earliest" => Ok(OffsetSpec::Start),
            "end" | "latest" => Ok(OffsetSpec::End),
            _ => {
                if let Some(time) = spec.strip_prefix('@') {
                    parse_timestamp(time).map(OffsetSpec::Timestamp).ok_or_else(bad)
                } else if let Some(count) = spec.strip_prefix('-') {
                    count.parse::<i64>().ok().filter(|n| *n >= 0).map(OffsetSpec::FromEnd).ok_or_else(bad)
                } else {
                    spec.parse::<i64>().ok().filter(|n| *n >= 0).map(OffsetSpec::Offset).ok_or_else(bad)
                }
            }
        }
    }
}

/// Milliseconds since the epoch, given as a number or as RFC 3339 (`2024-05-01T12:00:00Z`,
/// `2024-05-01T12:00:00.250+02:00`, or a date alone, which means its midnight UTC).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let Some(time) = time else {
        return Some(days * 86_400_000);
    };
    // Split off the zone: Z, +hh:mm or -hh:mm.
    let (clock, zone_seconds) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (clock, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = zone[1..].split_once(':')?;
        let hours: i64 = hours.parse().ok()?;
        let minutes: i64 = minutes.parse().ok()?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        (clock, sign * (hours * 3600 + minutes * 60))
    } else {
        return None;
    };
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (clock, None),
    };
    let mut fields = hms.splitn(3, ':');
    let hour: i64 = fields.next()?.parse().ok()?;
    let minute: i64 = fields.next()?.parse().ok()?;
    let second: i64 = fields.next()?.parse().ok()?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let millis = match fraction {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            let padded: String = digits.chars().chain("000".chars()).take(3).collect();
            padded.parse::<i64>().ok()?
        }
        Some(_) => return None,
        None => 0,
    };
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - zone_seconds;
    let ms = seconds * 1000 + millis;
    (ms >= 0).then_some(ms)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = month as i64;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Java's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> RecordView<'a> {
        RecordView {
            topic: "orders",
            partition: 2,
            offset: 41,
            timestamp: 1_700_000_000_123,
            key,
            value,
            headers: vec![("source", Some(b"web".as_slice())), ("trace", None)],
        }
    }

    fn render(format: &str, record: &RecordView<'_>) -> String {
        let mut out = Vec::new();
        Template::parse(format).render(record, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn templates_render_every_token() {
        let r = record(Some(b"alice"), Some(b"hello"));
        assert_eq!(render("%t/%p/%o %T %k=%v\n", &r), "orders/2/41 1700000000123 alice=hello\n");
        assert_eq!(render("%s|%K|%S|%h", &r), "hello|5|5|source=web,trace=");
        assert_eq!(render("100%% %x\\t\\\\\\q", &r), "100% %x\t\\\\q");
    }

    #[test]
    fn null_keys_and_values_render_empty_with_length_minus_one() {
        let r = record(None, None);
        assert_eq!(render("[%k][%v] %K %S", &r), "[][] -1 -1");
    }

    #[test]
    fn offset_specs() {
        assert_eq!("start".parse::<OffsetSpec>().unwrap(), OffsetSpec::Start);
        assert_eq!("beginning".parse::<OffsetSpec>().unwrap(), OffsetSpec::Start);
        assert_eq!("end".parse::<OffsetSpec>().unwrap(), OffsetSpec::End);
        assert_eq!("-10".parse::<OffsetSpec>().unwrap(), OffsetSpec::FromEnd(10));
        assert_eq!("42".parse::<OffsetSpec>().unwrap(), OffsetSpec::Offset(42));
        assert_eq!("@1700000000000".parse::<OffsetSpec>().unwrap(), OffsetSpec::Timestamp(1_700_000_000_000));
        assert_eq!("@2023-11-14T22:13:20Z".parse::<OffsetSpec>().unwrap(), OffsetSpec::Timestamp(1_700_000_000_000));
        for bad in ["", "-", "--1", "x", "@", "@yesterday", "1.5", "@2023-13-01"] {
            let error = bad.parse::<OffsetSpec>().unwrap_err();
            assert!(error.to_string().starts_with("invalid offset"), "{bad}: {error}");
        }
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2023-11-14T22:13:20.5Z"), Some(1_700_000_000_500));
        assert_eq!(parse_timestamp("2023-11-15T00:13:20+02:00"), Some(1_700_000_000_000));
        assert_eq!(parse_timestamp("2023-11-14T17:13:20.123-05:00"), Some(1_700_000_000_123));
        assert_eq!(parse_timestamp("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_timestamp("2023-02-29"), None);
        assert_eq!(parse_timestamp("2023-11-14T22:13:20"), None, "a time needs a zone");
        assert_eq!(parse_timestamp("2023-11-14T25:00:00Z"), None);
    }

    #[test]
    fn murmur2_matches_kafkas_utils_test() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keyed_records_land_where_the_java_partitioner_puts_them() {
        // toPositive(-790332482) = 1357151166; 1357151166 % 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50), 16);
        assert!((0..1000).all(|i| (0..7).contains(&partition_for_key(format!("k{i}").as_bytes(), 7))));
    }
}
