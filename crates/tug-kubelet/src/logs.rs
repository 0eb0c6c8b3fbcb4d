//! Containers' logs as kubelet serves them: CRI's log files (one line per
//! record: `<RFC 3339 nano time> <stream> <P|F> <text>`, P for a partial
//! line continued by the next record) read with kubectl's options, and
//! followed until the container stops.

use k8s_openapi::jiff::Timestamp;

/// What `kubectl logs` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub follow: bool,
    pub previous: bool,
    /// The last lines only.
    pub tail_lines: Option<usize>,
    /// Records at or after this time (nanoseconds since the epoch).
    pub since: Option<i128>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
}

impl Options {
    /// From the query string kubelet's /containerLogs takes.
    pub fn parse(query: &std::collections::HashMap<String, String>) -> Result<Options, String> {
        let flag = |name: &str| query.get(name).is_some_and(|v| v == "true" || v == "1");
        let number = |name: &str| -> Result<Option<i64>, String> {
            query
                .get(name)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("{name} must be a number, not {v:?}"))
                })
                .transpose()
        };
        let now = Timestamp::now().as_nanosecond();
        let since = match (number("sinceSeconds")?, query.get("sinceTime")) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
            }
            (Some(seconds), None) if seconds < 1 => {
                return Err("sinceSeconds must be greater than 0".into());
            }
            (Some(seconds), None) => Some(now - i128::from(seconds) * 1_000_000_000),
            (None, Some(time)) => Some(
                time.parse::<Timestamp>()
                    .map_err(|_| format!("sinceTime must be an RFC 3339 time, not {time:?}"))?
                    .as_nanosecond(),
            ),
            (None, None) => None,
        };
        let tail_lines = match number("tailLines")? {
            Some(n) if n < 0 => return Err("tailLines must be 0 or greater".into()),
            other => other.map(|n| n as usize),
        };
        let limit_bytes = match number("limitBytes")? {
            Some(n) if n < 1 => return Err("limitBytes must be greater than 0".into()),
            other => other.map(|n| n as usize),
        };
        Ok(Options {
            follow: flag("follow"),
            previous: flag("previous"),
            tail_lines,
            since,
            timestamps: flag("timestamps"),
            limit_bytes,
        })
    }
}

/// One record of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub partial: bool,
    pub text: &'a [u8],
}

/// A record from one line (without its newline).
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(b"");
    Some(Record {
        time,
        partial: tag.split(|b| *b == b':').next() == Some(b"P"),
        text,
    })
}

fn nanos(time: &str) -> Option<i128> {
    time.parse::<Timestamp>().ok().map(|t| t.as_nanosecond())
}

/// The complete lines of `data` (records whose last is not partial), as
/// kubectl shows them with `options`; partial records join the next.
/// Returns the output and how many bytes of `data` were used (a trailing
/// unterminated line or partial record waits for more).
pub fn render(data: &[u8], options: &Options) -> (Vec<u8>, usize) {
    let mut lines: Vec<(Vec<u8>, &str)> = Vec::new();
    let mut used = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_time: Option<&str> = None;
    let mut offset = 0;
    for raw in data.split_inclusive(|b| *b == b'\n') {
        offset += raw.len();
        let Some(line) = raw.strip_suffix(b"\n") else {
            break;
        };
        let Some(record) = parse(line) else {
            used = offset;
            continue;
        };
        pending.extend_from_slice(record.text);
        let time = *pending_time.get_or_insert(record.time);
        if record.partial {
            continue;
        }
        pending.push(b'\n');
        lines.push((std::mem::take(&mut pending), time));
        pending_time = None;
        used = offset;
    }
    if let Some(since) = options.since {
        lines.retain(|(_, time)| nanos(time).is_none_or(|t| t >= since));
    }
    if let Some(tail) = options.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for (line, time) in lines {
        if options.timestamps {
            out.extend_from_slice(time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&line);
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-30T10:00:00.000000001Z stdout F one\n\
        2026-11-30T10:00:01.000000000Z stderr P tw\n\
        2026-11-30T10:00:01.500000000Z stderr F o\n\
        2026-11-30T10:00:02.000000000Z stdout F three\n\
        2026-11-30T10:00:03.000000000Z stdout F fo";

    #[test]
    fn records_join_partial_lines_and_wait_for_the_end_of_a_line() {
        let (out, used) = render(LOG.as_bytes(), &Options::default());
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(&LOG[used..], "2026-11-30T10:00:03.000000000Z stdout F fo");
    }

    #[test]
    fn tail_since_and_timestamps_select_and_decorate_lines() {
        let options = Options {
            tail_lines: Some(2),
            timestamps: true,
            ..Default::default()
        };
        let (out, _) = render(LOG.as_bytes(), &options);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-30T10:00:01.000000000Z two\n2026-11-30T10:00:02.000000000Z three\n"
        );
        let since = "2026-11-30T10:00:01Z".parse::<Timestamp>().unwrap();
        let options = Options {
            since: Some(since.as_nanosecond()),
            ..Default::default()
        };
        let (out, _) = render(LOG.as_bytes(), &options);
        assert_eq!(String::from_utf8(out).unwrap(), "two\nthree\n");
        let zero = Options {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert!(render(LOG.as_bytes(), &zero).0.is_empty());
    }

    #[test]
    fn options_are_checked_as_upstream_checks_them() {
        let query = |pairs: &[(&str, &str)]| {
            Options::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(
            query(&[("follow", "true"), ("tailLines", "5")]).unwrap(),
            Options {
                follow: true,
                tail_lines: Some(5),
                ..Default::default()
            }
        );
        assert!(query(&[("sinceSeconds", "5"), ("sinceTime", "2026-11-30T10:00:00Z")]).is_err());
        assert!(query(&[("sinceSeconds", "0")]).is_err());
        assert!(query(&[("tailLines", "-1")]).is_err());
        assert!(query(&[("limitBytes", "x")]).is_err());
    }
}
