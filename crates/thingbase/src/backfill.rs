//! `thingbase backfill`: loads historical Observations from a CSV file (RFC 4180) into one
//! Datastream or MultiDatastream through the Data Array path, in batches: each batch is one
//! write job (a few in flight, so parsing and writing overlap), and derived times, counts and
//! rollups are updated once per write group, not per row.
//!
//! The header names the columns with the Data Array components (`phenomenonTime`, `result`,
//! `resultTime`, `resultQuality`, `validTime`, `parameters`, `FeatureOfInterest/id`). A
//! `result` cell that is JSON (a number, `true`, `false`, an array or object, a quoted string)
//! is taken as that; any other text as a string. Empty cells are absent values.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, bail};
use model::Id;
use serde_json::Value as Json;

/// Which series the rows are of.
#[derive(Clone, Copy, Debug)]
pub enum Series {
    Datastream(i64),
    MultiDatastream(i64),
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct Loaded {
    pub observations: u64,
    /// Line numbers and reasons of refused rows (the first 20).
    pub refused: Vec<(u64, String)>,
    pub refused_count: u64,
    pub seconds: f64,
}

/// Rows per write job.
pub const BATCH: usize = 10_000;

/// Write jobs in flight at once.
const IN_FLIGHT: usize = 3;

/// Reads CSV records one at a time: quoted fields may hold separators, quotes (doubled) and
/// line breaks.
pub struct Records<R> {
    input: R,
    line: u64,
}

impl<R: BufRead> Records<R> {
    pub fn new(input: R) -> Records<R> {
        Records { input, line: 0 }
    }

    /// The next record and the line it starts on; `None` at the end.
    pub fn next_record(&mut self) -> anyhow::Result<Option<(u64, Vec<String>)>> {
        let mut text = String::new();
        let start = self.line + 1;
        loop {
            let mut piece = String::new();
            if self.input.read_line(&mut piece)? == 0 {
                if text.is_empty() {
                    return Ok(None);
                }
                bail!("line {start}: a quoted field is not closed");
            }
            self.line += 1;
            text.push_str(&piece);
            // A record ends at a line break outside quotes: an even number of quotes so far.
            if text.matches('"').count().is_multiple_of(2) {
                break;
            }
        }
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return self.next_record();
        }
        Ok(Some((start, split(text).with_context(|| format!("line {start}"))?)))
    }
}

fn split(text: &str) -> anyhow::Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => bail!("a quoted field is not closed"),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(c) => bail!("`{c}` after a closing quote; a quote inside a field is written twice"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// A cell as the Data Array value of its component.
fn cell(component: &str, text: &str) -> Json {
    if text.is_empty() {
        return Json::Null;
    }
    match component {
        "result" | "parameters" | "resultQuality" => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_owned()))
        }
        "FeatureOfInterest/id" => text.parse::<i64>().map(Json::from).unwrap_or_else(|_| Json::String(text.to_owned())),
        _ => Json::String(text.to_owned()),
    }
}

const COMPONENTS: [&str; 7] =
    ["phenomenonTime", "result", "resultTime", "resultQuality", "validTime", "parameters", "FeatureOfInterest/id"];

/// Loads `file` (`-`: standard input) into `series` through `app`, as the server itself.
pub async fn load(app: &app::App, series: Series, file: &Path) -> anyhow::Result<Loaded> {
    let input: Box<dyn Read + Send> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?)
    };
    let mut records = Records::new(BufReader::with_capacity(1 << 20, input));
    let Some((_, header)) = records.next_record()? else { bail!("the file is empty: it needs a header line") };
    let header: Vec<String> = header.into_iter().map(|h| h.trim().to_owned()).collect();
    for name in &header {
        if !COMPONENTS.contains(&name.as_str()) {
            bail!("the header names `{name}`; columns are {}", COMPONENTS.join(", "));
        }
    }
    if !header.iter().any(|h| h == "result") {
        bail!("the header has no `result` column");
    }
    let (datastream, multi_datastream) = match series {
        Series::Datastream(id) => (Some(Id(id)), None),
        Series::MultiDatastream(id) => (None, Some(Id(id))),
    };
    let started = std::time::Instant::now();
    let mut loaded = Loaded::default();
    let caller = app::Caller::server();
    let mut in_flight: VecDeque<(Vec<u64>, tokio::task::JoinHandle<_>)> = VecDeque::new();
    let mut done = false;
    while !done || !in_flight.is_empty() {
        if !done && in_flight.len() < IN_FLIGHT {
            let mut rows = Vec::with_capacity(BATCH);
            let mut lines = Vec::with_capacity(BATCH);
            while rows.len() < BATCH {
                match records.next_record()? {
                    None => {
                        done = true;
                        break;
                    }
                    Some((line, fields)) => {
                        if fields.len() != header.len() {
                            loaded.refused_count += 1;
                            if loaded.refused.len() < 20 {
                                let reason = format!("{} cells where the header has {}", fields.len(), header.len());
                                loaded.refused.push((line, reason));
                            }
                            continue;
                        }
                        rows.push(header.iter().zip(&fields).map(|(h, f)| cell(h, f)).collect::<Vec<Json>>());
                        lines.push(line);
                    }
                }
            }
            if !rows.is_empty() {
                let item = app::DataArrayItem { datastream, multi_datastream, components: header.clone(), rows };
                let (app, caller) = (app.clone(), caller.clone());
                let job = tokio::spawn(async move { app.create_observations(&caller, vec![item]).await });
                in_flight.push_back((lines, job));
            }
            continue;
        }
        let Some((lines, job)) = in_flight.pop_front() else { break };
        let outcomes = job.await.context("a write task failed")?.map_err(|e| anyhow::anyhow!("{e}"))?;
        for (line, outcome) in lines.iter().zip(outcomes) {
            match outcome {
                Ok(_) => loaded.observations += 1,
                Err(e) => {
                    loaded.refused_count += 1;
                    if loaded.refused.len() < 20 {
                        loaded.refused.push((*line, e.to_string()));
                    }
                }
            }
        }
    }
    loaded.seconds = started.elapsed().as_secs_f64();
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<(u64, Vec<String>)> {
        let mut records = Records::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(record) = records.next_record().expect("valid CSV") {
            out.push(record);
        }
        out
    }

    #[test]
    fn csv_records_follow_rfc_4180() {
        let parsed = all("a,b\r\n1,\"x, \"\"y\"\"\"\n\n\"multi\nline\",\n");
        assert_eq!(
            parsed,
            [
                (1, vec!["a".to_owned(), "b".to_owned()]),
                (2, vec!["1".to_owned(), "x, \"y\"".to_owned()]),
                (4, vec!["multi\nline".to_owned(), String::new()]),
            ]
        );
        let mut open = Records::new("\"never closed\n".as_bytes());
        assert!(open.next_record().is_err());
        let mut junk = Records::new("\"a\"b\n".as_bytes());
        assert!(junk.next_record().is_err());
    }

    #[test]
    fn cells_become_data_array_values() {
        assert_eq!(cell("result", "21.5"), serde_json::json!(21.5));
        assert_eq!(cell("result", "on"), serde_json::json!("on"));
        assert_eq!(cell("result", "[1,2]"), serde_json::json!([1, 2]));
        assert_eq!(cell("phenomenonTime", "2026-01-01T00:00:00Z"), serde_json::json!("2026-01-01T00:00:00Z"));
        assert_eq!(cell("FeatureOfInterest/id", "7"), serde_json::json!(7));
        assert_eq!(cell("resultTime", ""), Json::Null);
    }
}
